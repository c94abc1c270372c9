package hostprep

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/hostprep/fakehost"
	"github.com/wgmesh/wgmesh/internal/hostprep/iqn"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestNixOSCheckOnlyLooks(t *testing.T) {
	tr := fakehost.NixOS(t)
	before := tr.Listing()
	rep := runChecks(t, Options{Root: tr.Root(), Log: quiet()})
	c := byID(t, rep)

	if rep.Distro.Family != FamilyNixOS || rep.Distro.PrettyName != "NixOS 24.11 (Vicuna)" {
		t.Errorf("distro = %+v", rep.Distro)
	}
	wantStatus(t, c, "os.release", StatusOK)
	iscsiadm := wantStatus(t, c, "program.iscsiadm", StatusMissing)
	if !strings.Contains(iscsiadm.Summary, "/run/current-system/sw/bin/iscsiadm") ||
		!strings.Contains(iscsiadm.Fix, "ln -s /run/current-system/sw/bin/iscsiadm /usr/local/sbin/iscsiadm") ||
		!strings.Contains(iscsiadm.Fix, "systemd.tmpfiles.rules") {
		t.Errorf("program.iscsiadm = %+v", iscsiadm)
	}
	// /run/wrappers/bin comes first, as on a NixOS PATH.
	if m := wantStatus(t, c, "program.mount", StatusMissing); !strings.Contains(m.Summary, "/run/wrappers/bin/mount") {
		t.Errorf("program.mount = %+v", m)
	}
	wantStatus(t, c, "program.sh", StatusOK) // /bin/sh exists on NixOS
	if nfs := wantStatus(t, c, "program.mount.nfs", StatusMissing); !nfs.Required || !strings.Contains(nfs.Fix, "ln -s /run/current-system/sw/bin/mount.nfs /usr/local/sbin/mount.nfs") {
		t.Errorf("program.mount.nfs = %+v", nfs)
	}
	if nfs := wantStatus(t, c, "program.mount.nfs4", StatusMissing); nfs.Required || !strings.Contains(nfs.Fix, `boot.supportedFilesystems = [ "nfs" ]`) {
		t.Errorf("program.mount.nfs4 = %+v", nfs)
	}
	if in := wantStatus(t, c, "iscsi.initiator-name", StatusMissing); !strings.Contains(in.Fix, "services.openiscsi") {
		t.Errorf("initiator name fix = %q", in.Fix)
	}
	wantStatus(t, c, "iscsi.iscsid", StatusOK)
	wantStatus(t, c, "lvm.sbin", StatusMissing)
	if m := wantStatus(t, c, "module.iscsi_tcp", StatusMissing); !strings.Contains(m.Fix, `boot.kernelModules = [ "iscsi_tcp" ]`) {
		t.Errorf("module.iscsi_tcp fix = %q", m.Fix)
	}
	wantStatus(t, c, "module.dm_crypt", StatusOK)
	wantStatus(t, c, "nfs.v4-client", StatusMissing)
	wantStatus(t, c, "nfs.default-version", StatusOK)
	wantStatus(t, c, "longhorn.os-image", StatusWarning)
	wantStatus(t, c, "multipath.blacklist", StatusOK)
	wantStatus(t, c, "mount.propagation-root", StatusOK)
	wantStatus(t, c, "mount.propagation-kubelet", StatusOK)
	if rep.Ready() {
		t.Error("Ready() = true on a NixOS host without links or initiator name")
	}
	if after := tr.Listing(); after != before {
		t.Errorf("check without --fix changed the tree:\n%s", diffLines(before, after))
	}
}

func TestNixOSFixIdempotentAndUndo(t *testing.T) {
	tr := fakehost.NixOS(t)
	before := tr.Listing()
	rec := &fakehost.Recorder{Tree: tr}
	opts := Options{Root: tr.Root(), Fix: true, LoadModules: true, Runner: rec, Log: quiet()}

	rep := runChecks(t, opts)
	c := byID(t, rep)
	for _, id := range []string{"program.iscsiadm", "program.mount", "program.umount", "program.findmnt", "program.blkid", "program.mount.nfs",
		"program.lsblk", "program.cryptsetup", "program.dmsetup", "program.fstrim", "iscsi.initiator-name", "lvm.sbin",
		"module.iscsi_tcp", "nfs.v4-client"} {
		if ch := wantStatus(t, c, id, StatusFixed); len(ch.Changed) == 0 {
			t.Errorf("%s fixed without saying what changed", id)
		}
	}
	if !rep.Ready() {
		t.Fatalf("not ready after --fix: %+v", rep.Blocking())
	}
	for link, target := range map[string]string{
		"usr/local/sbin/iscsiadm": "/run/current-system/sw/bin/iscsiadm",
		"usr/local/sbin/mount":    "/run/wrappers/bin/mount",
		"usr/local/sbin/blkid":    "/run/current-system/sw/bin/blkid",
		"sbin/lvm":                "/run/current-system/sw/bin/lvm",
	} {
		if got := tr.Readlink(link); got != target {
			t.Errorf("%s -> %s, want %s", link, got, target)
		}
	}
	fi, err := os.Lstat(filepath.Join(tr.Dir, "etc/iscsi/initiatorname.iscsi"))
	if err != nil || fi.Mode() != 0o600 {
		t.Fatalf("initiator name file: %v, mode %v; want a regular file with mode 0600", err, fi.Mode())
	}
	name, err := iqn.ParseFile(strings.NewReader(tr.Read("etc/iscsi/initiatorname.iscsi")))
	if err != nil || iqn.Validate(name) != nil || !strings.HasPrefix(name, iqn.OpenISCSIPrefix+":") {
		t.Fatalf("written initiator name %q: %v", name, err)
	}
	wantCalls := []string{
		"/run/current-system/sw/bin/modprobe iscsi_tcp [PATH=" + LonghornPATH + ":" + ExtraHostPATH + " MODULE_DIR=/run/booted-system/kernel-modules/lib/modules]",
		"/run/current-system/sw/bin/modprobe nfsv4 [PATH=" + LonghornPATH + ":" + ExtraHostPATH + " MODULE_DIR=/run/booted-system/kernel-modules/lib/modules]",
	}
	if strings.Join(rec.Calls, "\n") != strings.Join(wantCalls, "\n") {
		t.Errorf("host commands:\n%s\nwant:\n%s", strings.Join(rec.Calls, "\n"), strings.Join(wantCalls, "\n"))
	}

	// A second --fix run changes nothing.
	afterFirst := tr.Listing()
	rep2 := runChecks(t, opts)
	for _, ch := range rep2.Checks {
		if ch.Status == StatusFixed || len(ch.Changed) > 0 {
			t.Errorf("second run changed %s: %+v", ch.ID, ch)
		}
	}
	if !rep2.Ready() {
		t.Errorf("second run not ready: %+v", rep2.Blocking())
	}
	if len(rec.Calls) != 2 {
		t.Errorf("second run ran host commands: %q", rec.Calls[2:])
	}
	if after := tr.Listing(); after != afterFirst {
		t.Errorf("second --fix run changed the tree:\n%s", diffLines(afterFirst, after))
	}
	if s := byID(t, rep2)["program.iscsiadm"].Summary; !strings.Contains(s, "link made by wgmesh-hostprep") {
		t.Errorf("second run program.iscsiadm summary %q does not say whose link it is", s)
	}

	// Undo restores the tree exactly; loaded modules stay loaded (the fake
	// /proc/modules is where the recorder "loaded" them).
	res, err := Undo(tr.Root(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Kept) != 0 {
		t.Errorf("undo kept %q", res.Kept)
	}
	if after := tr.Listing("proc/modules"); after != listingWithout(before, "proc/modules") {
		t.Errorf("undo did not restore the tree:\n%s", diffLines(listingWithout(before, "proc/modules"), after))
	}
	// Undo twice is harmless.
	if _, err := Undo(tr.Root(), quiet()); err != nil {
		t.Fatal(err)
	}
}

func TestNixOSStoreOwnedInitiatorNameNeverRewritten(t *testing.T) {
	for _, tt := range []struct {
		name, content string
		want          Status
	}{
		{"valid", "InitiatorName=iqn.2020-01.org.nixos:node1\n", StatusOK},
		{"malformed", "InitiatorName=iqn.2020\u201301.org.nixos:node1\n", StatusMissing},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := fakehost.NixOS(t)
			tr.File("nix/store/0a1b2c-etc/etc/iscsi/initiatorname.iscsi", tt.content, 0o444)
			tr.Link("etc/iscsi/initiatorname.iscsi", "/etc/static/iscsi/initiatorname.iscsi")
			before := tr.Listing()
			rep := runChecks(t, Options{Root: tr.Root(), Fix: true, Log: quiet()})
			c := wantStatus(t, byID(t, rep), "iscsi.initiator-name", tt.want)
			if !strings.Contains(c.Summary, "owned by the NixOS configuration") {
				t.Errorf("summary %q does not name the owner", c.Summary)
			}
			if tt.want == StatusMissing {
				if !strings.Contains(c.Fix, `services.openiscsi.name = "iqn.2016-04.com.open-iscsi:`) {
					t.Errorf("fix %q lacks the configuration line", c.Fix)
				}
				if !strings.Contains(strings.Join(c.Evidence, " "), "look-alike character U+2013") {
					t.Errorf("evidence %q does not flag the en dash", c.Evidence)
				}
			}
			if tr.Readlink("etc/iscsi/initiatorname.iscsi") != "/etc/static/iscsi/initiatorname.iscsi" ||
				tr.Read("nix/store/0a1b2c-etc/etc/iscsi/initiatorname.iscsi") != tt.content {
				t.Fatal("store-owned initiator name was touched")
			}
			// Other fixes happened; undo leaves exactly the starting tree.
			if _, err := Undo(tr.Root(), quiet()); err != nil {
				t.Fatal(err)
			}
			if after := tr.Listing(); after != before {
				t.Errorf("undo:\n%s", diffLines(before, after))
			}
		})
	}
}

func TestDebianHostIsReadyAndUntouched(t *testing.T) {
	tr := fakehost.Debian(t)
	before := tr.Listing()
	rec := &fakehost.Recorder{Tree: tr}
	rep := runChecks(t, Options{Root: tr.Root(), Fix: true, LoadModules: true, Runner: rec, V2Engine: true, Log: quiet()})
	c := byID(t, rep)
	for _, ch := range rep.Checks {
		want := StatusOK
		switch ch.ID {
		case "module.nvme_tcp", "module.vfio_pci", "module.uio_pci_generic":
			continue
		}
		if ch.Status != want {
			t.Errorf("%s: %s (%s) %q", ch.ID, ch.Status, ch.Summary, ch.Evidence)
		}
	}
	if s := c["program.iscsiadm"].Summary; !strings.Contains(s, "/usr/local/sbin") && !strings.Contains(s, "/usr/sbin/iscsiadm") {
		t.Errorf("program.iscsiadm summary %q", s)
	}
	if s := c["lvm.sbin"].Summary; s != "lvm at /sbin/lvm -> /usr/sbin/lvm" {
		t.Errorf("lvm.sbin summary %q", s)
	}
	if s := c["iscsi.initiator-name"].Summary; s != "InitiatorName=iqn.1993-08.org.debian:01:5a7d9e2b4c1f" {
		t.Errorf("initiator name summary %q", s)
	}
	// nvme_tcp is =m: loaded with the host's modprobe; no PCI driver module.
	wantStatus(t, c, "module.nvme_tcp", StatusFixed)
	for _, id := range []string{"module.vfio_pci", "module.uio_pci_generic"} {
		if m := wantStatus(t, c, id, StatusMissing); !strings.Contains(m.Fix, "linux-modules-extra") {
			t.Errorf("%s fix %q", id, m.Fix)
		}
	}
	if len(rec.Calls) != 1 || !strings.HasPrefix(rec.Calls[0], "/usr/local/sbin/modprobe nvme_tcp") && !strings.HasPrefix(rec.Calls[0], "/usr/sbin/modprobe nvme_tcp") {
		t.Errorf("host commands %q", rec.Calls)
	}
	if after := tr.Listing("proc/modules"); after != listingWithout(before, "proc/modules") {
		t.Errorf("--fix on a healthy host changed files:\n%s", diffLines(before, after))
	}
}

func TestBrokenHost(t *testing.T) {
	tr := fakehost.New(t)
	tr.File("etc/os-release", "ID=ubuntu\nID_LIKE=debian\nPRETTY_NAME=\"Ubuntu 24.04 LTS\"\n", 0o644)
	tr.Exe("usr/bin/mount").Exe("usr/bin/umount").Exe("usr/bin/findmnt").Exe("usr/bin/lsblk").Exe("usr/sbin/blkid").Exe("bin/sh")
	tr.Link("usr/local/sbin/iscsiadm", "/opt/iscsi/iscsiadm") // dangling: someone else's
	tr.Exe("run/current-system/sw/bin/iscsiadm")              // a stray copy outside the PATH
	tr.Mkdir("sbin/lvm")                                      // a directory where lvm should be
	tr.Exe("usr/sbin/lvm")
	badName := "## my name\nInitiatorName=iqn.2016\u201304.com.open-iscsi:abc\n"
	tr.File("etc/iscsi/initiatorname.iscsi", badName, 0o640)
	tr.Proc(fakehost.PrivateMountinfo, map[int]string{1: "systemd", 99: "multipathd"})
	tr.File("etc/multipath.conf", "defaults {\n    user_friendly_names yes\n}\nblacklist_exceptions {\n    devnode \"^sd[a-z0-9]+\"\n}\n", 0o644)
	tr.File("proc/modules", "", 0o444)
	tr.File("boot/config-"+fakehost.Kernel, "# CONFIG_ISCSI_TCP is not set\nCONFIG_DM_CRYPT=m\n", 0o644)
	before := tr.Listing()

	rep := runChecks(t, Options{Root: tr.Root(), Log: quiet()})
	c := byID(t, rep)
	if rep.Distro.Family != FamilyDebian {
		t.Errorf("family %s", rep.Distro.Family)
	}
	if m := wantStatus(t, c, "program.iscsiadm", StatusMissing); !strings.Contains(m.Fix, "ln -s /run/current-system/sw/bin/iscsiadm") {
		t.Errorf("iscsiadm: %+v", m)
	}
	if m := wantStatus(t, c, "program.mount.nfs", StatusMissing); m.Fix != "apt-get install -y nfs-common" {
		t.Errorf("mount.nfs fix %q", m.Fix)
	}
	if m := wantStatus(t, c, "iscsi.initiator-name", StatusMissing); !strings.Contains(strings.Join(m.Evidence, " "), "U+2013") {
		t.Errorf("initiator name evidence %q", m.Evidence)
	}
	if m := wantStatus(t, c, "iscsi.iscsid", StatusMissing); m.Fix != "apt-get install -y open-iscsi && systemctl enable --now iscsid" {
		t.Errorf("iscsid fix %q", m.Fix)
	}
	if m := wantStatus(t, c, "lvm.sbin", StatusMissing); !strings.Contains(m.Summary, "not replaced") {
		t.Errorf("lvm.sbin %+v", m)
	}
	if m := wantStatus(t, c, "module.iscsi_tcp", StatusMissing); !strings.Contains(m.Summary, "not in this kernel") {
		t.Errorf("iscsi_tcp %+v", m)
	}
	wantStatus(t, c, "module.dm_crypt", StatusMissing)
	wantStatus(t, c, "nfs.v4-client", StatusMissing)
	if m := wantStatus(t, c, "multipath.blacklist", StatusWarning); !strings.Contains(m.Fix, `devnode "^sd[a-z0-9]+"`) {
		t.Errorf("multipath fix %q", m.Fix)
	}
	wantStatus(t, c, "mount.propagation-root", StatusMissing)
	if m := wantStatus(t, c, "mount.propagation-kubelet", StatusMissing); !strings.Contains(m.Fix, "mount --make-rshared /var/lib/kubelet") {
		t.Errorf("kubelet propagation fix %q", m.Fix)
	}

	// --fix: rewrites the malformed initiator name (keeping a copy), never
	// replaces the dangling link or the directory, and loads nothing
	// without a runner.
	rep = runChecks(t, Options{Root: tr.Root(), Fix: true, LoadModules: true, Log: quiet()})
	c = byID(t, rep)
	wantStatus(t, c, "iscsi.initiator-name", StatusFixed)
	if m := wantStatus(t, c, "program.iscsiadm", StatusMissing); !strings.Contains(strings.Join(m.Evidence, " "), "not replaced") {
		t.Errorf("iscsiadm evidence %q", m.Evidence)
	}
	if tr.Readlink("usr/local/sbin/iscsiadm") != "/opt/iscsi/iscsiadm" {
		t.Error("someone else's symlink was replaced")
	}
	wantStatus(t, c, "lvm.sbin", StatusMissing)
	if fi, err := os.Lstat(filepath.Join(tr.Dir, "sbin/lvm")); err != nil || !fi.IsDir() {
		t.Error("directory /sbin/lvm was replaced")
	}
	if _, err := Undo(tr.Root(), quiet()); err != nil {
		t.Fatal(err)
	}
	if after := tr.Listing(); after != before {
		t.Errorf("undo did not restore the malformed file:\n%s", diffLines(before, after))
	}
	if got := tr.Read("etc/iscsi/initiatorname.iscsi"); got != badName {
		t.Errorf("restored %q", got)
	}
}

func TestUndoKeepsWhatChangedSince(t *testing.T) {
	tr := fakehost.NixOS(t)
	runChecks(t, Options{Root: tr.Root(), Fix: true, Log: quiet()})
	// A person repoints one link and edits the name file afterwards.
	link := filepath.Join(tr.Dir, "usr/local/sbin/iscsiadm")
	os.Remove(link)
	os.Symlink("/opt/bin/iscsiadm", link)
	tr.File("etc/iscsi/initiatorname.iscsi", "InitiatorName=iqn.2020-01.org.example:mine\n", 0o600)

	res, err := Undo(tr.Root(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Kept) < 2 {
		t.Errorf("kept %q, want the changed link and file", res.Kept)
	}
	if tr.Readlink("usr/local/sbin/iscsiadm") != "/opt/bin/iscsiadm" || !strings.Contains(tr.Read("etc/iscsi/initiatorname.iscsi"), "mine") {
		t.Error("undo removed something changed since")
	}
	if _, err := os.Lstat(filepath.Join(tr.Dir, "usr/local/sbin/blkid")); err == nil {
		t.Error("undo left an unchanged link")
	}
	var rec Record
	if err := json.Unmarshal([]byte(tr.Read(strings.TrimPrefix(RecordPath, "/"))), &rec); err != nil || len(rec.Entries) == 0 {
		t.Errorf("record after partial undo: %v %+v", err, rec)
	}
}

func TestModuleDetection(t *testing.T) {
	tests := []struct {
		name  string
		build func(tr *fakehost.Tree)
		want  Status
	}{
		{"proc modules", func(tr *fakehost.Tree) { tr.File("proc/modules", "iscsi_tcp 1 0 - Live 0x0\n", 0o444) }, StatusOK},
		{"sys module live", func(tr *fakehost.Tree) { tr.File("sys/module/iscsi_tcp/initstate", "live\n", 0o444) }, StatusOK},
		{"sys module builtin", func(tr *fakehost.Tree) { tr.Mkdir("sys/module/iscsi_tcp/parameters") }, StatusOK},
		{"modules.builtin", func(tr *fakehost.Tree) {
			tr.File("lib/modules/"+fakehost.Kernel+"/modules.builtin", "kernel/drivers/scsi/iscsi_tcp.ko\n", 0o444)
		}, StatusOK},
		{"nixos modules.builtin", func(tr *fakehost.Tree) {
			tr.File("run/booted-system/kernel-modules/lib/modules/"+fakehost.Kernel+"/modules.builtin", "kernel/drivers/scsi/iscsi_tcp.ko\n", 0o444)
		}, StatusOK},
		{"proc config.gz y", func(tr *fakehost.Tree) { tr.Gz("proc/config.gz", "CONFIG_ISCSI_TCP=y\n") }, StatusOK},
		{"boot config y", func(tr *fakehost.Tree) { tr.File("boot/config-"+fakehost.Kernel, "CONFIG_ISCSI_TCP=y\n", 0o444) }, StatusOK},
		{"config m", func(tr *fakehost.Tree) { tr.File("boot/config-"+fakehost.Kernel, "CONFIG_ISCSI_TCP=m\n", 0o444) }, StatusMissing},
		{"nothing", func(tr *fakehost.Tree) {}, StatusMissing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := fakehost.New(t)
			tr.File("proc/sys/kernel/osrelease", fakehost.Kernel+"\n", 0o444)
			tt.build(tr)
			rep := runChecks(t, Options{Root: tr.Root(), Log: quiet()})
			wantStatus(t, byID(t, rep), "module.iscsi_tcp", tt.want)
		})
	}
}

func TestModprobeFailureIsReported(t *testing.T) {
	tr := fakehost.NixOS(t)
	rec := &fakehost.Recorder{Tree: tr, Fail: true}
	rep := runChecks(t, Options{Root: tr.Root(), Fix: true, LoadModules: true, Runner: rec, Log: quiet()})
	m := wantStatus(t, byID(t, rep), "module.iscsi_tcp", StatusMissing)
	if !strings.Contains(strings.Join(m.Evidence, " "), "Module not found") {
		t.Errorf("evidence %q lacks modprobe's output", m.Evidence)
	}
}

func TestIscsidSocketActivated(t *testing.T) {
	tr := fakehost.Debian(t)
	os.RemoveAll(filepath.Join(tr.Dir, "proc/640"))
	os.RemoveAll(filepath.Join(tr.Dir, "proc/641"))
	rep := runChecks(t, Options{Root: tr.Root(), Log: quiet()})
	wantStatus(t, byID(t, rep), "iscsi.iscsid", StatusMissing)
	tr.File("proc/1/net/unix", "Num       RefCount Protocol Flags    Type St Inode Path\n"+
		"0000000000000000: 00000002 00000000 00010000 0001 01 20841 @ISCSIADM_ABSTRACT_NAMESPACE\n", 0o444)
	rep = runChecks(t, Options{Root: tr.Root(), Log: quiet()})
	wantStatus(t, byID(t, rep), "iscsi.iscsid", StatusOK)
}

func TestBlacklistsLonghorn(t *testing.T) {
	tests := []struct {
		conf string
		want bool
	}{
		{"blacklist {\n  devnode \"^sd[a-z0-9]+\"\n}\n", true},
		{"blacklist\n{\n  devnode \"^sd[a-z0-9]+\"  # Longhorn\n}\n", true},
		{"blacklist {\n  devnode \"^(ram|raw|loop|fd|md|dm-|sr|scd|st|sd)[0-9a-z]*\"\n}\n", true},
		{"blacklist_exceptions {\n  devnode \"^sd[a-z0-9]+\"\n}\n", false},
		{"blacklist {\n  device {\n    devnode \"^sd[a-z0-9]+\"\n  }\n}\n", false},
		{"blacklist {\n  devnode \"^nvme\"\n}\n", false},
		{"# blacklist { devnode \"^sd[a-z0-9]+\" }\n", false},
		{"defaults { user_friendly_names yes }\nblacklist { devnode \"^sd[a-z0-9]+\" }\n", true},
	}
	for _, tt := range tests {
		if _, got := blacklistsLonghorn(tt.conf); got != tt.want {
			t.Errorf("blacklistsLonghorn(%q) = %v, want %v", tt.conf, got, tt.want)
		}
	}
}

func TestJSONHasLonghornctlShape(t *testing.T) {
	tr := fakehost.NixOS(t)
	rep := runChecks(t, Options{Root: tr.Root(), Log: quiet()})
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Ready bool `json:"ready"`
		Log   struct {
			Error, Warn, Info []string
		} `json:"log"`
		Checks []Check `json:"checks"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ready || len(got.Checks) != len(rep.Checks) {
		t.Errorf("ready %v, %d checks", got.Ready, len(got.Checks))
	}
	joined := strings.Join(got.Log.Error, "\n")
	if !strings.Contains(joined, "[Programs] iscsiadm is at /run/current-system/sw/bin/iscsiadm") || !strings.Contains(joined, "[InitiatorName] ") {
		t.Errorf("log.error = %q", got.Log.Error)
	}
	if !strings.Contains(strings.Join(got.Log.Info, "\n"), "[IscsidService] iscsid is running") {
		t.Errorf("log.info = %q", got.Log.Info)
	}
	if !strings.Contains(strings.Join(got.Log.Warn, "\n"), "[Programs] mount.nfs4 is not installed") {
		t.Errorf("log.warn = %q", got.Log.Warn)
	}
}

func listingWithout(listing, rel string) string {
	var out []string
	for _, l := range strings.Split(listing, "\n") {
		if !strings.HasPrefix(l, rel+" ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func diffLines(a, b string) string {
	as, bs := map[string]bool{}, map[string]bool{}
	for _, l := range strings.Split(a, "\n") {
		as[l] = true
	}
	for _, l := range strings.Split(b, "\n") {
		bs[l] = true
	}
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if !bs[l] {
			out = append(out, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !as[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// A cluster that extended Longhorn's PATH instead of linking programs says
// so with LonghornPATH; the program checks then pass without any link.
func TestLonghornPATHExtended(t *testing.T) {
	tr := fakehost.NixOS(t)
	rep := runChecks(t, Options{Root: tr.Root(), LonghornPATH: LonghornPATH + ":/run/wrappers/bin:/run/current-system/sw/bin", Log: quiet()})
	c := byID(t, rep)
	if m := wantStatus(t, c, "program.mount", StatusOK); !strings.Contains(m.Summary, "/run/wrappers/bin/mount") {
		t.Errorf("program.mount = %+v", m)
	}
	wantStatus(t, c, "program.iscsiadm", StatusOK)
}
