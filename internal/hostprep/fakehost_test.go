package hostprep

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/wgmesh/wgmesh/internal/hostprep/hostfs"
)

// Fake host roots are real trees of real files and symlinks in a temporary
// directory: the code under test reads them exactly as it reads /host.

const testKernel = "6.6.63"

type tree struct {
	t    *testing.T
	root string
}

func newTree(t *testing.T) *tree {
	t.Helper()
	return &tree{t: t, root: t.TempDir()}
}

func (tr *tree) Root() hostfs.Root { return hostfs.Root{Dir: tr.root} }

func (tr *tree) file(p, content string, mode os.FileMode) *tree {
	tr.t.Helper()
	full := filepath.Join(tr.root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), mode); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Chmod(full, mode); err != nil {
		tr.t.Fatal(err)
	}
	return tr
}

func (tr *tree) exe(p string) *tree { return tr.file(p, "#!/bin/sh\nexit 0\n", 0o755) }

func (tr *tree) dir(p string) *tree {
	tr.t.Helper()
	if err := os.MkdirAll(filepath.Join(tr.root, p), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	return tr
}

func (tr *tree) link(p, target string) *tree {
	tr.t.Helper()
	full := filepath.Join(tr.root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		tr.t.Fatal(err)
	}
	return tr
}

func (tr *tree) gz(p, content string) *tree {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(content))
	zw.Close()
	return tr.file(p, b.String(), 0o444)
}

// listing renders the whole tree: path, mode, link target or content hash.
func (tr *tree) listing(exclude ...string) string {
	tr.t.Helper()
	var lines []string
	err := filepath.WalkDir(tr.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tr.root, p)
		if slices.Contains(exclude, rel) {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %s", rel, fi.Mode())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += fmt.Sprintf(" sha256:%x", sha256.Sum256(b))
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		tr.t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

func (tr *tree) read(p string) string {
	tr.t.Helper()
	b, err := os.ReadFile(filepath.Join(tr.root, p))
	if err != nil {
		tr.t.Fatal(err)
	}
	return string(b)
}

func (tr *tree) readlink(p string) string {
	tr.t.Helper()
	s, err := os.Readlink(filepath.Join(tr.root, p))
	if err != nil {
		tr.t.Fatal(err)
	}
	return s
}

// proc writes the /proc files every host has.
func (tr *tree) proc(mountinfo string, procs map[int]string) *tree {
	tr.file("proc/sys/kernel/osrelease", testKernel+"\n", 0o444)
	tr.file("proc/1/mountinfo", mountinfo, 0o444)
	for pid, comm := range procs {
		tr.file(fmt.Sprintf("proc/%d/comm", pid), comm+"\n", 0o444)
	}
	return tr
}

const sharedMountinfo = "" +
	"22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n" +
	"23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n" +
	"24 22 0:22 / /run rw,nosuid shared:13 - tmpfs tmpfs rw\n"

const privateMountinfo = "" +
	"22 1 259:2 / / rw,relatime - ext4 /dev/sda2 rw\n" +
	"40 22 259:3 / /var/lib/kubelet rw,relatime - ext4 /dev/sda3 rw\n"

// nixosTree is a NixOS host: programs only under /run/current-system/sw/bin
// (links into the Nix store) and /run/wrappers/bin; /etc files are links
// through /etc/static into the store; no initiator name file; iscsid runs;
// iscsi_tcp is a module that is not loaded.
func nixosTree(t *testing.T) *tree {
	tr := newTree(t)
	store := "/nix/store/0a1b2c-"
	tr.file("nix/store/0a1b2c-etc/etc/os-release", "ID=nixos\nNAME=NixOS\nPRETTY_NAME=\"NixOS 24.11 (Vicuna)\"\nVERSION_ID=\"24.11\"\n", 0o444)
	tr.link("etc/static", store+"etc/etc")
	tr.link("etc/os-release", "/etc/static/os-release")
	tr.link("run/current-system", store+"nixos-system-node1-24.11")
	tr.link("run/booted-system", store+"nixos-system-node1-24.11")
	tr.link("nix/store/0a1b2c-nixos-system-node1-24.11/sw", store+"system-path")
	tr.link("nix/store/0a1b2c-nixos-system-node1-24.11/kernel-modules", store+"linux-"+testKernel+"-modules")
	for prog, pkg := range map[string]string{
		"iscsiadm": "open-iscsi", "iscsi-iname": "open-iscsi", "findmnt": "util-linux", "blkid": "util-linux",
		"lsblk": "util-linux", "fstrim": "util-linux", "mount": "util-linux", "umount": "util-linux",
		"cryptsetup": "cryptsetup", "dmsetup": "lvm2", "lvm": "lvm2", "modprobe": "kmod", "sh": "bash",
	} {
		tr.exe("nix/store/0a1b2c-" + pkg + "/bin/" + prog)
		tr.link("nix/store/0a1b2c-system-path/bin/"+prog, store+pkg+"/bin/"+prog)
	}
	tr.exe("run/wrappers/bin/mount")
	tr.exe("run/wrappers/bin/umount")
	tr.link("bin/sh", store+"bash/bin/sh")
	tr.link("usr/bin/env", store+"coreutils/bin/env")
	tr.dir("etc/iscsi")
	tr.proc(sharedMountinfo, map[int]string{1: "systemd", 812: "iscsid"})
	tr.file("proc/modules", "dm_crypt 65536 0 - Live 0x0000000000000000\ndm_mod 184320 1 dm_crypt, Live 0x0000000000000000\n", 0o444)
	tr.file("sys/module/dm_crypt/initstate", "live\n", 0o444)
	tr.gz("proc/config.gz", "CONFIG_ISCSI_TCP=m\nCONFIG_DM_CRYPT=m\nCONFIG_NFS_FS=m\nCONFIG_NFS_V4=m\n")
	mods := "nix/store/0a1b2c-linux-" + testKernel + "-modules/lib/modules/" + testKernel + "/"
	tr.file(mods+"modules.dep", "kernel/drivers/scsi/iscsi_tcp.ko.xz: kernel/drivers/scsi/libiscsi_tcp.ko.xz\nkernel/drivers/md/dm-crypt.ko.xz:\nkernel/fs/nfs/nfsv4.ko.xz:\n", 0o444)
	tr.file(mods+"modules.builtin", "kernel/drivers/block/loop.ko\n", 0o444)
	return tr
}

// debianTree is a merged-/usr Debian host with everything installed and a
// valid initiator name.
func debianTree(t *testing.T) *tree {
	tr := newTree(t)
	tr.file("usr/lib/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n", 0o644)
	tr.link("etc/os-release", "../usr/lib/os-release")
	tr.link("bin", "usr/bin").link("sbin", "usr/sbin").link("lib", "usr/lib")
	for _, p := range []string{"iscsiadm", "blkid", "mount.nfs", "cryptsetup", "dmsetup", "fstrim", "lvm", "modprobe"} {
		tr.exe("usr/sbin/" + p)
	}
	tr.link("usr/sbin/mount.nfs4", "mount.nfs")
	for _, p := range []string{"mount", "umount", "findmnt", "lsblk", "dash", "nvme"} {
		tr.exe("usr/bin/" + p)
	}
	tr.link("usr/bin/sh", "dash")
	tr.dir("usr/local/sbin").dir("usr/local/bin")
	tr.file("etc/iscsi/initiatorname.iscsi", "## DO NOT EDIT OR REMOVE THIS FILE!\nInitiatorName=iqn.1993-08.org.debian:01:5a7d9e2b4c1f\n", 0o600)
	tr.proc(sharedMountinfo, map[int]string{1: "systemd", 640: "iscsid", 641: "iscsid"})
	tr.file("proc/modules", "iscsi_tcp 24576 0 - Live 0x0\nlibiscsi_tcp 32768 1 iscsi_tcp, Live 0x0\ndm_crypt 65536 0 - Live 0x0\n", 0o444)
	tr.file("boot/config-"+testKernel, "CONFIG_ISCSI_TCP=m\nCONFIG_DM_CRYPT=m\nCONFIG_NFS_V4=m\nCONFIG_NFS_V4_1=y\nCONFIG_NVME_TCP=m\n", 0o644)
	tr.file("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "1024\n", 0o644)
	tr.file("proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu sse4_1 sse4_2 avx\n", 0o444)
	return tr
}

// recorder is the HostRunner of the tests: it never runs anything. For
// modprobe it records the call and, like the real modprobe would, makes
// the module appear in the fake /proc/modules.
type recorder struct {
	mu    sync.Mutex
	tr    *tree
	calls []string
	fail  bool
}

func (r *recorder) Run(_ context.Context, argv []string, env []string) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, strings.Join(argv, " ")+" ["+strings.Join(env, " ")+"]")
	if r.fail {
		return []byte("modprobe: FATAL: Module not found"), fmt.Errorf("exit status 1")
	}
	if filepath.Base(argv[0]) == "modprobe" && len(argv) == 2 {
		p := filepath.Join(r.tr.root, "proc/modules")
		f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		fmt.Fprintf(f, "%s 24576 0 - Live 0x0\n", argv[1])
	}
	return nil, nil
}

func byID(t *testing.T, rep Report) map[string]Check {
	t.Helper()
	m := map[string]Check{}
	for _, c := range rep.Checks {
		if _, dup := m[c.ID]; dup {
			t.Fatalf("duplicate check id %s", c.ID)
		}
		m[c.ID] = c
	}
	return m
}

func runChecks(t *testing.T, opts Options) Report {
	t.Helper()
	rep, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

func wantStatus(t *testing.T, checks map[string]Check, id string, want Status) Check {
	t.Helper()
	c, ok := checks[id]
	if !ok {
		t.Fatalf("no check %s", id)
	}
	if c.Status != want {
		t.Errorf("%s: status %s, want %s (summary %q, evidence %q)", id, c.Status, want, c.Summary, c.Evidence)
	}
	return c
}
