package hostprep

import (
	"errors"
	"fmt"
	"path"

	"github.com/wgmesh/wgmesh/internal/hostfs"
)

// program is a host program Longhorn runs by bare name.
type program struct {
	name     string
	required bool
	why      string
	pkg      pkg
	v2only   bool
}

// programs Longhorn's manager, instance manager and CSI plugin run on the
// host through nsenter.
var programs = []program{
	{name: "iscsiadm", required: true, why: "attaching v1 volumes over iSCSI", pkg: pkgOpenISCSI},
	{name: "mount", required: true, why: "mounting volumes", pkg: pkgMount},
	{name: "umount", required: true, why: "unmounting volumes", pkg: pkgMount},
	{name: "findmnt", required: true, why: "finding mount points", pkg: pkgUtilLinux},
	{name: "blkid", required: true, why: "detecting file systems", pkg: pkgUtilLinux},
	{name: "lsblk", required: true, why: "listing block devices", pkg: pkgUtilLinux},
	{name: "sh", required: true, why: "running host commands", pkg: pkgShell},
	// mount.nfs, cryptsetup and dmsetup are required because Longhorn's
	// RequiredPackages condition is False without the packages that bring
	// them (nfs-common/nfs-utils/nfs-client, cryptsetup, dmsetup/device-mapper).
	{name: "mount.nfs", required: true, why: "RWX volumes and NFS backups; Longhorn's RequiredPackages condition", pkg: pkgNFS},
	{name: "mount.nfs4", required: false, why: "RWX volumes and NFS backups", pkg: pkgNFS},
	{name: "cryptsetup", required: true, why: "encrypted volumes; Longhorn's RequiredPackages condition", pkg: pkgCryptsetup},
	{name: "dmsetup", required: true, why: "encrypted volumes and device-mapper devices; Longhorn's RequiredPackages condition", pkg: pkgDmsetup},
	{name: "fstrim", required: false, why: "trimming volumes", pkg: pkgUtilLinux},
	{name: "nvme", required: true, why: "attaching v2 volumes over NVMe/TCP", pkg: pkgNVMe, v2only: true},
}

func (r *run) checkPrograms() []Check {
	var out []Check
	for _, p := range programs {
		if p.v2only && !r.opts.V2Engine {
			continue
		}
		out = append(out, r.checkProgram(p))
	}
	return out
}

// checkProgram resolves one program as Longhorn would; if it exists only
// outside Longhorn's PATH, the fix links it into LinkDir.
func (r *run) checkProgram(p program) Check {
	c := Check{ID: "program." + p.name, Topic: "Programs", Required: p.required}
	longhorn := hostfs.SplitPath(r.opts.LonghornPATH)
	found, err := r.root.LookPath(p.name, longhorn)
	if err == nil {
		c.Status = StatusOK
		c.Summary = fmt.Sprintf("%s found on Longhorn's PATH: %s", p.name, found.Evidence())
		if r.fix.owns(found.Path) {
			c.Summary += " (link made by wgmesh-hostprep)"
		}
		return c
	}
	c.Evidence = append(c.Evidence, fmt.Sprintf("not found in Longhorn's PATH %s under the host root", r.opts.LonghornPATH))
	real, err := r.root.LookPath(p.name, hostfs.SplitPath(ExtraHostPATH))
	if err != nil {
		c.Status = StatusMissing
		c.Summary = fmt.Sprintf("%s is not installed (needed for %s)", p.name, p.why)
		c.Fix = r.distro.installFix(p.pkg)
		return c
	}
	c.Evidence = append(c.Evidence, "the host has it at "+real.Evidence())
	link := path.Join(LinkDir, p.name)
	if r.fixing(c.ID) {
		made, err := r.fix.symlink(link, real.Path)
		if err == nil {
			c.Status = StatusFixed
			c.Summary = fmt.Sprintf("%s was not on Longhorn's PATH; linked %s -> %s", p.name, made, real.Path)
			c.Changed = []string{fmt.Sprintf("created symlink %s -> %s", made, real.Path)}
			return c
		}
		c.Evidence = append(c.Evidence, err.Error())
	}
	c.Status = StatusMissing
	c.Summary = fmt.Sprintf("%s is at %s, which is not on Longhorn's PATH (needed for %s)", p.name, real.Path, p.why)
	c.Fix = r.linkFix(link, real.Path)
	return c
}

// linkFix tells a person how to make a host program reachable.
func (r *run) linkFix(link, target string) string {
	fix := fmt.Sprintf("ln -s %s %s   (what --fix does)", target, link)
	if r.distro.Family == FamilyNixOS {
		if path.Dir(link) == LinkDir {
			fix += "\nor, for every program at once, in configuration.nix: systemd.tmpfiles.rules = [ \"L+ /usr/local/bin - - - - /run/current-system/sw/bin\" ];" +
				"\nor add /run/wrappers/bin:/run/current-system/sw/bin to the PATH of Longhorn's manager and CSI plugin (see the NixOS guide)"
		} else {
			fix += fmt.Sprintf("\nor in configuration.nix: systemd.tmpfiles.rules = [ \"L+ %s - - - - %s\" ];", link, target)
		}
	}
	return fix
}

// checkLVM: some storage tooling runs lvm at the fixed path /sbin/lvm.
func (r *run) checkLVM() Check {
	const want = "/sbin/lvm"
	c := Check{ID: "lvm.sbin", Topic: "LVM", Required: false}
	res, fi, err := r.root.Stat(want)
	if err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		c.Status = StatusOK
		ev := want
		if res.Path != want {
			ev += " -> " + res.Path
		}
		c.Summary = "lvm at " + ev
		return c
	}
	blocked := err == nil || errors.Is(err, hostfs.ErrTooManyLinks)
	if err == nil {
		c.Evidence = append(c.Evidence, fmt.Sprintf("%s leads to %s, which is not an executable file", want, res.Path))
	} else if blocked {
		c.Evidence = append(c.Evidence, err.Error())
	}
	real, lerr := r.root.LookPath("lvm", hostPATH())
	if lerr != nil {
		c.Status = StatusMissing
		c.Summary = "lvm is not installed (tools that expect /sbin/lvm fail)"
		c.Fix = r.distro.installFix(pkgLVM)
		return c
	}
	c.Evidence = append(c.Evidence, "the host has lvm at "+real.Evidence())
	if blocked {
		// Something is at /sbin/lvm already; we never replace it.
		c.Status = StatusMissing
		c.Summary = "/sbin/lvm exists but is not lvm; not replaced"
		c.Fix = "remove or repair " + want + ", then: ln -s " + real.Path + " " + want
		return c
	}
	if r.fixing(c.ID) {
		made, err := r.fix.symlink(want, real.Path)
		if err == nil {
			c.Status = StatusFixed
			c.Summary = fmt.Sprintf("/sbin/lvm was missing; linked %s -> %s", made, real.Path)
			c.Changed = []string{fmt.Sprintf("created symlink %s -> %s", made, real.Path)}
			return c
		}
		c.Evidence = append(c.Evidence, err.Error())
	}
	c.Status = StatusMissing
	c.Summary = fmt.Sprintf("/sbin/lvm is missing; lvm is at %s", real.Path)
	c.Fix = r.linkFix(want, real.Path)
	return c
}
