package hostprep

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Family is how a distribution installs software: it picks the fix we print.
type Family string

const (
	FamilyDebian  Family = "debian"  // apt
	FamilyRHEL    Family = "rhel"    // dnf
	FamilySUSE    Family = "suse"    // zypper
	FamilyArch    Family = "arch"    // pacman
	FamilyNixOS   Family = "nixos"   // configuration.nix
	FamilyUnknown Family = "unknown" // package names only
)

// Distro is what /etc/os-release (and /run/current-system) say about the host.
type Distro struct {
	ID         string `json:"id"`
	IDLike     string `json:"idLike,omitempty"`
	PrettyName string `json:"prettyName,omitempty"`
	VersionID  string `json:"versionID,omitempty"`
	Family     Family `json:"family"`
}

// parseOSRelease reads os-release(5) key=value lines; values may be quoted.
func parseOSRelease(b []byte) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else {
			v = strings.Trim(v, `"'`)
		}
		kv[k] = v
	}
	return kv
}

// distroFrom classifies os-release values; nixosTree is true when the host
// has /run/current-system, which only NixOS has.
func distroFrom(kv map[string]string, nixosTree bool) Distro {
	d := Distro{ID: kv["ID"], IDLike: kv["ID_LIKE"], PrettyName: kv["PRETTY_NAME"], VersionID: kv["VERSION_ID"]}
	words := append([]string{d.ID}, strings.Fields(d.IDLike)...)
	d.Family = FamilyUnknown
	for _, w := range words {
		if f := familyOf(w); f != FamilyUnknown {
			d.Family = f
			break
		}
	}
	if nixosTree && d.Family == FamilyUnknown {
		d.Family = FamilyNixOS
		if d.ID == "" {
			d.ID = "nixos"
		}
	}
	return d
}

func familyOf(id string) Family {
	switch id {
	case "nixos":
		return FamilyNixOS
	case "debian", "ubuntu", "raspbian", "linuxmint", "pop":
		return FamilyDebian
	case "rhel", "fedora", "centos", "rocky", "almalinux", "ol", "amzn":
		return FamilyRHEL
	case "suse", "opensuse", "sles", "sle-micro", "opensuse-leap", "opensuse-tumbleweed", "opensuse-microos":
		return FamilySUSE
	case "arch", "manjaro", "endeavouros":
		return FamilyArch
	}
	return FamilyUnknown
}

// pkg names the package that provides something, per family, and the
// NixOS configuration line that does.
type pkg struct {
	debian, rhel, suse, arch string
	nixos                    string // configuration.nix line(s)
}

// installFix is the command (or configuration line) that installs p here.
func (d Distro) installFix(p pkg) string {
	switch d.Family {
	case FamilyDebian:
		return "apt-get install -y " + p.debian
	case FamilyRHEL:
		return "dnf install -y " + p.rhel
	case FamilySUSE:
		if strings.Contains(d.ID, "micro") {
			return "transactional-update pkg install " + p.suse + " && reboot"
		}
		return "zypper --non-interactive install " + p.suse
	case FamilyArch:
		return "pacman -S --needed --noconfirm " + p.arch
	case FamilyNixOS:
		return "in configuration.nix: " + p.nixos + " then nixos-rebuild switch"
	}
	return fmt.Sprintf("install the package that provides it (Debian: %s, Fedora/RHEL: %s, SUSE: %s, Arch: %s)", p.debian, p.rhel, p.suse, p.arch)
}

// Packages for what Longhorn needs on the host.
var (
	pkgOpenISCSI  = pkg{"open-iscsi", "iscsi-initiator-utils", "open-iscsi", "open-iscsi", `services.openiscsi = { enable = true; name = "<iqn>"; };`}
	pkgUtilLinux  = pkg{"util-linux", "util-linux", "util-linux", "util-linux", `environment.systemPackages = [ pkgs.util-linux ];`}
	pkgMount      = pkg{"mount", "util-linux", "util-linux", "util-linux", `environment.systemPackages = [ pkgs.util-linux ];`}
	pkgNFS        = pkg{"nfs-common", "nfs-utils", "nfs-client", "nfs-utils", `boot.supportedFilesystems = [ "nfs" ];`}
	pkgCryptsetup = pkg{"cryptsetup", "cryptsetup", "cryptsetup", "cryptsetup", `environment.systemPackages = [ pkgs.cryptsetup ];`}
	pkgDmsetup    = pkg{"dmsetup", "device-mapper", "device-mapper", "device-mapper", `services.lvm.enable = true; (provides dmsetup)`}
	pkgShell      = pkg{"dash", "bash", "bash", "bash", `(NixOS always has /bin/sh; check environment.binsh)`}
	pkgNVMe       = pkg{"nvme-cli", "nvme-cli", "nvme-cli", "nvme-cli", `environment.systemPackages = [ pkgs.nvme-cli ];`}
	pkgLVM        = pkg{"lvm2", "lvm2", "lvm2", "lvm2", `services.lvm.enable = true;`}
	pkgKmod       = pkg{"kmod", "kmod", "kmod", "kmod", `(kmod is part of every NixOS system)`}
)
