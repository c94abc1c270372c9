// Package fakehost builds fake host roots for tests: real trees of real
// files and symlinks in a temporary directory (NixOS-like, Debian-like),
// and a HostRunner that records commands instead of running them. The code
// under test reads these trees exactly as it reads /host. Test use only.
package fakehost

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

	"github.com/wgmesh/wgmesh/internal/hostfs"
)

// Kernel is the fake hosts' kernel release.
const Kernel = "6.6.63"

// Tree is a fake host root.
type Tree struct {
	t   testing.TB
	Dir string
}

// New makes an empty tree in a temporary directory.
func New(t testing.TB) *Tree {
	t.Helper()
	return &Tree{t: t, Dir: t.TempDir()}
}

// At makes an empty tree in dir.
func At(t testing.TB, dir string) *Tree { return &Tree{t: t, Dir: dir} }

func (tr *Tree) Root() hostfs.Root { return hostfs.Root{Dir: tr.Dir} }

// TB is the test the tree is for, to helpers that write files of their own.
func (tr *Tree) TB() testing.TB { return tr.t }

func (tr *Tree) File(p, content string, mode os.FileMode) *Tree {
	tr.t.Helper()
	full := filepath.Join(tr.Dir, p)
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

func (tr *Tree) Exe(p string) *Tree { return tr.File(p, "#!/bin/sh\nexit 0\n", 0o755) }

func (tr *Tree) Mkdir(p string) *Tree {
	tr.t.Helper()
	if err := os.MkdirAll(filepath.Join(tr.Dir, p), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	return tr
}

func (tr *Tree) Link(p, target string) *Tree {
	tr.t.Helper()
	full := filepath.Join(tr.Dir, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		tr.t.Fatal(err)
	}
	return tr
}

// Remove removes p (a file, a link or a whole directory).
func (tr *Tree) Remove(p string) *Tree {
	tr.t.Helper()
	if err := os.RemoveAll(filepath.Join(tr.Dir, p)); err != nil {
		tr.t.Fatal(err)
	}
	return tr
}

func (tr *Tree) Gz(p, content string) *Tree {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(content))
	zw.Close()
	return tr.File(p, b.String(), 0o444)
}

// listing renders the whole tree: path, mode, link target or content hash.
func (tr *Tree) Listing(exclude ...string) string {
	tr.t.Helper()
	var lines []string
	err := filepath.WalkDir(tr.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tr.Dir, p)
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

func (tr *Tree) Read(p string) string {
	tr.t.Helper()
	b, err := os.ReadFile(filepath.Join(tr.Dir, p))
	if err != nil {
		tr.t.Fatal(err)
	}
	return string(b)
}

func (tr *Tree) Readlink(p string) string {
	tr.t.Helper()
	s, err := os.Readlink(filepath.Join(tr.Dir, p))
	if err != nil {
		tr.t.Fatal(err)
	}
	return s
}

// proc writes the /proc files every host has.
func (tr *Tree) Proc(mountinfo string, procs map[int]string) *Tree {
	tr.File("proc/sys/kernel/osrelease", Kernel+"\n", 0o444)
	tr.File("proc/1/mountinfo", mountinfo, 0o444)
	for pid, comm := range procs {
		tr.File(fmt.Sprintf("proc/%d/comm", pid), comm+"\n", 0o444)
	}
	return tr
}

// SharedMountinfo has / shared, as systemd leaves it.
const SharedMountinfo = "" +
	"22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n" +
	"23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n" +
	"24 22 0:22 / /run rw,nosuid shared:13 - tmpfs tmpfs rw\n"

// PrivateMountinfo has / and the kubelet dir private.
const PrivateMountinfo = "" +
	"22 1 259:2 / / rw,relatime - ext4 /dev/sda2 rw\n" +
	"40 22 259:3 / /var/lib/kubelet rw,relatime - ext4 /dev/sda3 rw\n"

// NixOS is a NixOS host: programs only under /run/current-system/sw/bin
// (links into the Nix store) and /run/wrappers/bin; /etc files are links
// through /etc/static into the store; no initiator name file; iscsid runs;
// iscsi_tcp is a module that is not loaded.
func NixOS(t testing.TB) *Tree {
	tr := New(t)
	store := "/nix/store/0a1b2c-"
	tr.File("nix/store/0a1b2c-etc/etc/os-release", "ID=nixos\nNAME=NixOS\nPRETTY_NAME=\"NixOS 24.11 (Vicuna)\"\nVERSION_ID=\"24.11\"\n", 0o444)
	tr.Link("etc/static", store+"etc/etc")
	tr.Link("etc/os-release", "/etc/static/os-release")
	tr.Link("run/current-system", store+"nixos-system-node1-24.11")
	tr.Link("run/booted-system", store+"nixos-system-node1-24.11")
	tr.Link("nix/store/0a1b2c-nixos-system-node1-24.11/sw", store+"system-path")
	tr.Link("nix/store/0a1b2c-nixos-system-node1-24.11/kernel-modules", store+"linux-"+Kernel+"-modules")
	for prog, pkg := range map[string]string{
		"iscsiadm": "open-iscsi", "iscsi-iname": "open-iscsi", "findmnt": "util-linux", "blkid": "util-linux",
		"lsblk": "util-linux", "fstrim": "util-linux", "mount": "util-linux", "umount": "util-linux",
		"cryptsetup": "cryptsetup", "dmsetup": "lvm2", "lvm": "lvm2", "modprobe": "kmod", "sh": "bash",
		"mount.nfs": "nfs-utils",
	} {
		tr.Exe("nix/store/0a1b2c-" + pkg + "/bin/" + prog)
		tr.Link("nix/store/0a1b2c-system-path/bin/"+prog, store+pkg+"/bin/"+prog)
	}
	tr.Exe("run/wrappers/bin/mount")
	tr.Exe("run/wrappers/bin/umount")
	tr.Link("bin/sh", store+"bash/bin/sh")
	tr.Link("usr/bin/env", store+"coreutils/bin/env")
	tr.Mkdir("etc/iscsi")
	tr.Proc(SharedMountinfo, map[int]string{1: "systemd", 812: "iscsid"})
	tr.File("proc/modules", "dm_crypt 65536 0 - Live 0x0000000000000000\ndm_mod 184320 1 dm_crypt, Live 0x0000000000000000\n", 0o444)
	tr.File("sys/module/dm_crypt/initstate", "live\n", 0o444)
	tr.Gz("proc/config.gz", "CONFIG_ISCSI_TCP=m\nCONFIG_DM_CRYPT=m\nCONFIG_NFS_FS=m\nCONFIG_NFS_V4=m\n")
	mods := "nix/store/0a1b2c-linux-" + Kernel + "-modules/lib/modules/" + Kernel + "/"
	tr.File(mods+"modules.dep", "kernel/drivers/scsi/iscsi_tcp.ko.xz: kernel/drivers/scsi/libiscsi_tcp.ko.xz\nkernel/drivers/md/dm-crypt.ko.xz:\nkernel/fs/nfs/nfsv4.ko.xz:\n", 0o444)
	tr.File(mods+"modules.builtin", "kernel/drivers/block/loop.ko\n", 0o444)
	return tr
}

// Debian is a merged-/usr Debian host with everything installed (and in
// dpkg's database) and a valid initiator name.
func Debian(t testing.TB) *Tree {
	tr := New(t)
	tr.File("usr/lib/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n", 0o644)
	tr.Link("etc/os-release", "../usr/lib/os-release")
	tr.Link("bin", "usr/bin").Link("sbin", "usr/sbin").Link("lib", "usr/lib")
	for _, p := range []string{"iscsiadm", "blkid", "mount.nfs", "cryptsetup", "dmsetup", "fstrim", "lvm", "modprobe"} {
		tr.Exe("usr/sbin/" + p)
	}
	tr.Link("usr/sbin/mount.nfs4", "mount.nfs")
	for _, p := range []string{"mount", "umount", "findmnt", "lsblk", "dash", "nvme"} {
		tr.Exe("usr/bin/" + p)
	}
	tr.Link("usr/bin/sh", "dash")
	tr.Exe("usr/bin/dpkg")
	tr.File("var/lib/dpkg/status", DpkgStatus("libc6", "nfs-common", "open-iscsi", "cryptsetup", "dmsetup"), 0o644)
	tr.Mkdir("var/lib/dpkg/updates")
	tr.Mkdir("usr/local/sbin").Mkdir("usr/local/bin")
	tr.File("etc/iscsi/initiatorname.iscsi", "## DO NOT EDIT OR REMOVE THIS FILE!\nInitiatorName=iqn.1993-08.org.debian:01:5a7d9e2b4c1f\n", 0o600)
	tr.Proc(SharedMountinfo, map[int]string{1: "systemd", 640: "iscsid", 641: "iscsid"})
	tr.File("proc/modules", "iscsi_tcp 24576 0 - Live 0x0\nlibiscsi_tcp 32768 1 iscsi_tcp, Live 0x0\ndm_crypt 65536 0 - Live 0x0\n", 0o444)
	tr.File("boot/config-"+Kernel, "CONFIG_ISCSI_TCP=m\nCONFIG_DM_CRYPT=m\nCONFIG_NFS_V4=m\nCONFIG_NFS_V4_1=y\nCONFIG_NVME_TCP=m\n", 0o644)
	tr.File("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "1024\n", 0o644)
	tr.File("proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu sse4_1 sse4_2 avx\n", 0o444)
	return tr
}

// debPackages are Debian packages as their status stanzas show them:
// version, architecture, and the description's first line.
var debPackages = map[string][3]string{
	"libc6":          {"2.36-9+deb12u9", "amd64", "GNU C Library: Shared libraries"},
	"nfs-common":     {"1:2.6.2-4+deb12u1", "amd64", "NFS support files common to client and server"},
	"open-iscsi":     {"2.1.8-1", "amd64", "iSCSI initiator tools"},
	"cryptsetup":     {"2:2.6.1-4~deb12u2", "amd64", "disk encryption support - startup scripts"},
	"cryptsetup-bin": {"2:2.6.1-4~deb12u2", "amd64", "disk encryption support - command line tools"},
	"dmsetup":        {"2:1.02.185-2", "amd64", "Linux Kernel Device Mapper userspace library"},
}

// DpkgStatus is a /var/lib/dpkg/status in which the named packages (of
// debPackages) are installed.
func DpkgStatus(pkgs ...string) string {
	var b strings.Builder
	for _, p := range pkgs {
		d, ok := debPackages[p]
		if !ok {
			panic("fakehost: no Debian package " + p)
		}
		fmt.Fprintf(&b, "Package: %s\nStatus: install ok installed\nPriority: optional\nArchitecture: %s\n", p, d[1])
		if p == "libc6" {
			b.WriteString("Multi-Arch: same\n")
		}
		fmt.Fprintf(&b, "Version: %s\nDescription: %s\n The long description.\n .\n Its second paragraph.\n\n", d[0], d[2])
	}
	return b.String()
}

// Recorder is the HostRunner of the tests: it never runs anything. For
// modprobe it records the call and, like the real modprobe would, makes
// the module appear in the fake /proc/modules.
type Recorder struct {
	mu    sync.Mutex
	Tree  *Tree
	Calls []string
	Fail  bool
}

func (r *Recorder) Run(_ context.Context, argv []string, env []string) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Calls = append(r.Calls, strings.Join(argv, " ")+" ["+strings.Join(env, " ")+"]")
	if r.Fail {
		return []byte("modprobe: FATAL: Module not found"), fmt.Errorf("exit status 1")
	}
	if filepath.Base(argv[0]) == "modprobe" && len(argv) == 2 {
		p := filepath.Join(r.Tree.Dir, "proc/modules")
		f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		fmt.Fprintf(f, "%s 24576 0 - Live 0x0\n", argv[1])
	}
	return nil, nil
}
