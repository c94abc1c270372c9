package hostprep

import (
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/hostprep/fakehost"
)

// Each case changes one thing on a healthy Debian host that
// longhorn-manager's environment check looks at. Where Longhorn's condition
// would be False, the host must not be ready (wgmesh.io/longhorn-ready=false),
// with the check that says why; where Longhorn's would be True, it must be.
func TestLonghornConditionsDecideReadiness(t *testing.T) {
	noConfig := func(tr *fakehost.Tree) { tr.Remove("boot/config-" + fakehost.Kernel) }
	for _, tt := range []struct {
		name   string
		change func(tr *fakehost.Tree)
		id     string // the check that decides; "" none
		want   Status
		ready  bool
		text   string // in the summary or fix
	}{
		{name: "healthy", change: func(*fakehost.Tree) {}, ready: true},
		// RequiredPackages: nfs client, cryptsetup, dmsetup.
		{name: "no cryptsetup", change: func(tr *fakehost.Tree) { tr.Remove("usr/sbin/cryptsetup") },
			id: "program.cryptsetup", want: StatusMissing, text: "apt-get install -y cryptsetup"},
		{name: "no dmsetup", change: func(tr *fakehost.Tree) { tr.Remove("usr/sbin/dmsetup") },
			id: "program.dmsetup", want: StatusMissing, text: "apt-get install -y dmsetup"},
		{name: "no NFS client programs", change: func(tr *fakehost.Tree) { tr.Remove("usr/sbin/mount.nfs") },
			id: "program.mount.nfs", want: StatusMissing, text: "apt-get install -y nfs-common"},
		// KernelModulesLoaded: dm_crypt loaded, or =y where Longhorn reads the config.
		{name: "dm_crypt a module not loaded", change: func(tr *fakehost.Tree) { tr.File("proc/modules", "iscsi_tcp 1 0 - Live 0x0\n", 0o444) },
			id: "module.dm_crypt", want: StatusMissing, text: "modprobe dm_crypt"},
		{name: "dm_crypt =y in /proc/config.gz", change: func(tr *fakehost.Tree) {
			noConfig(tr)
			tr.File("proc/modules", "iscsi_tcp 1 0 - Live 0x0\n", 0o444)
			tr.Gz("proc/config.gz", "CONFIG_DM_CRYPT=y\nCONFIG_NFS_V4_1=y\n")
		}, id: "module.dm_crypt", want: StatusOK, ready: true, text: "CONFIG_DM_CRYPT=y in /proc/config.gz"},
		{name: "dm_crypt built in but no config Longhorn reads", change: func(tr *fakehost.Tree) {
			noConfig(tr)
			tr.File("proc/modules", "iscsi_tcp 1 0 - Live 0x0\n", 0o444)
			tr.File("lib/modules/"+fakehost.Kernel+"/config", "CONFIG_DM_CRYPT=y\nCONFIG_NFS_V4_1=y\n", 0o644)
		}, id: "module.dm_crypt", want: StatusMissing, text: "Longhorn does not see it"},
		// NFSClientInstalled: the kernel's NFSv4 client.
		{name: "NFSv4 client a module not loaded", change: func(tr *fakehost.Tree) {
			tr.File("boot/config-"+fakehost.Kernel, "CONFIG_ISCSI_TCP=m\nCONFIG_DM_CRYPT=m\nCONFIG_NFS_V4=m\n", 0o644)
		}, id: "nfs.v4-client", want: StatusMissing, text: "modprobe nfsv4"},
		{name: "NFSv4 client a module, loaded", change: func(tr *fakehost.Tree) {
			tr.File("boot/config-"+fakehost.Kernel, "CONFIG_ISCSI_TCP=m\nCONFIG_DM_CRYPT=m\nCONFIG_NFS_V4=m\n", 0o644)
			tr.File("proc/modules", tr.Read("proc/modules")+"nfsv4 1 0 - Live 0x0\n", 0o444)
		}, id: "nfs.v4-client", want: StatusOK, ready: true},
		{name: "no NFSv4 client", change: func(tr *fakehost.Tree) {
			tr.File("boot/config-"+fakehost.Kernel, "CONFIG_ISCSI_TCP=m\nCONFIG_DM_CRYPT=m\n# CONFIG_NFS_V4 is not set\n", 0o644)
		}, id: "nfs.v4-client", want: StatusMissing, text: "no NFSv4 client"},
		{name: "no kernel config Longhorn reads", change: noConfig,
			id: "nfs.v4-client", want: StatusMissing, text: "/boot/config-" + fakehost.Kernel + " or /proc/config.gz"},
		// NFSClientInstalled: /etc/nfsmount.conf's Defaultvers.
		{name: "Defaultvers=3", change: func(tr *fakehost.Tree) {
			tr.File("etc/nfsmount.conf", "[ NFSMount_Global_Options ]\n# a comment\nDefaultvers=3\n", 0o644)
		}, id: "nfs.default-version", want: StatusMissing, text: "Defaultvers to 3.0"},
		{name: "Defaultvers=4", change: func(tr *fakehost.Tree) {
			tr.File("etc/nfsmount.conf", "[ NFSMount_Global_Options ]\nDefaultvers = 4\n", 0o644)
		}, id: "nfs.default-version", want: StatusOK, ready: true, text: "4.0"},
		{name: "Defaultvers=4.2", change: func(tr *fakehost.Tree) {
			tr.File("etc/nfsmount.conf", "[NFSMount_Global_Options]\nDefaultvers=4.2\n", 0o644)
		}, id: "nfs.default-version", want: StatusOK, ready: true, text: "4.2"},
		{name: "Defaultvers of a server section only", change: func(tr *fakehost.Tree) {
			tr.File("etc/nfsmount.conf", "[ Server \"nfs.example\" ]\nDefaultvers=3\n", 0o644)
		}, id: "nfs.default-version", want: StatusOK, ready: true},
		{name: "Defaultvers not a number", change: func(tr *fakehost.Tree) {
			tr.File("etc/nfsmount.conf", "[ NFSMount_Global_Options ]\nDefaultvers=4.x\n", 0o644)
		}, id: "nfs.default-version", want: StatusMissing, text: "invalid NFS minor version"},
		{name: "nfsmount.conf line Longhorn cannot parse", change: func(tr *fakehost.Tree) {
			tr.File("etc/nfsmount.conf", "[ NFSMount_Global_Options ]\nSoft\n", 0o644)
		}, id: "nfs.default-version", want: StatusMissing, text: "is not key=value"},
		// RequiredPackages on an OS image Longhorn does not know: a warning
		// that cannot be fixed on the host, not a block.
		{name: "OS image unknown to Longhorn", change: func(tr *fakehost.Tree) {
			tr.Remove("etc/os-release").File("etc/os-release", "ID=alpine\nPRETTY_NAME=\"Alpine Linux v3.20\"\n", 0o644)
		}, id: "longhorn.os-image", want: StatusWarning, ready: true, text: "UnknownOS"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := fakehost.Debian(t)
			tt.change(tr)
			rep := runChecks(t, Options{Root: tr.Root(), Log: quiet()})
			if rep.Ready() != tt.ready {
				t.Errorf("Ready() = %v, want %v; blocking: %+v", rep.Ready(), tt.ready, rep.Blocking())
			}
			if tt.id == "" {
				return
			}
			c := wantStatus(t, byID(t, rep), tt.id, tt.want)
			if !strings.Contains(c.Summary+"\n"+c.Fix, tt.text) {
				t.Errorf("%s: %q / fix %q, want %q in it", tt.id, c.Summary, c.Fix, tt.text)
			}
		})
	}
}

// longhornOSFamily follows longhorn-manager's substring tests, in its
// order, on the lower-cased PRETTY_NAME.
func TestLonghornOSFamily(t *testing.T) {
	for img, want := range map[string]string{
		"Ubuntu 24.04.1 LTS":             "dpkg",
		"Debian GNU/Linux 12 (bookworm)": "dpkg",
		"Rocky Linux 9.4 (Blue Onyx)":    "rpm",
		"openSUSE Leap 15.6":             "rpm",
		"Arch Linux":                     "pacman",
		"Gentoo Linux":                   "qlist",
		"Talos (v1.8.0)":                 "talos",
		"NixOS 24.11 (Vicuna)":           "",
		"Alpine Linux v3.20":             "",
		"":                               "",
	} {
		if got := longhornOSFamily(img); got != want {
			t.Errorf("longhornOSFamily(%q) = %q, want %q", img, got, want)
		}
	}
}
