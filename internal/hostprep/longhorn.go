package hostprep

// This file holds the rules of longhorn-manager's own environment check
// (controller/monitor/environment_check_monitor.go, read at commit
// 0ddcdb4e83379ee07800c84cdc7267c44970db62 of longhorn/longhorn-manager),
// which sets the Longhorn node conditions KernelModulesLoaded,
// NFSClientInstalled, RequiredPackages and Multipathd. A check that mirrors
// one of them is required, and passes only when Longhorn's rule passes too,
// so that wgmesh.io/longhorn-ready=true never stands next to a False
// condition that Longhorn could have set True. wgmesh's other checks
// (initiator name, PATH resolution, iscsid, mount propagation) are extra.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
)

// longhornConfigFiles are where longhorn-manager reads the kernel's
// configuration, in its order: /boot/config-<release>, then
// /proc/config.gz. It reads no other place (not /lib/modules/<release>/config,
// not modules.builtin).
func longhornConfigFiles(release string) []string {
	return []string{"/boot/config-" + release, "/proc/config.gz"}
}

// readLonghornConfig reads the kernel configuration as longhorn-manager
// does; nil when neither file is readable (Longhorn's condition is then
// False: "failed to check kernel config file").
func (r *run) readLonghornConfig() (map[string]string, string) {
	for _, p := range longhornConfigFiles(r.kernel.release) {
		b, err := r.root.ReadFile(p)
		if err != nil {
			continue
		}
		if strings.HasSuffix(p, ".gz") {
			if b, err = gunzip(b); err != nil {
				continue
			}
		}
		cfg := map[string]string{}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if key, val, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(key, "CONFIG_") {
				cfg[key] = val
			}
		}
		return cfg, p
	}
	return nil, ""
}

// longhornSeesModule applies Longhorn's KernelModulesLoaded rule to one
// module: its name is in the list of loaded modules (kmod list, that is
// /proc/modules), or its config option is =y. A module built in but not
// =y in a config file Longhorn can read does not count.
func (r *run) longhornSeesModule(name string) (bool, string) {
	if r.kernel.loaded[name] {
		return true, "loaded (/proc/modules)"
	}
	cfg, from := r.readLonghornConfig()
	if cfg == nil {
		return false, fmt.Sprintf("not in /proc/modules, and Longhorn reads the kernel config only from %s: neither is readable", strings.Join(longhornConfigFiles(r.kernel.release), " or "))
	}
	opt := kmodConfig[name]
	if cfg[opt] == "y" {
		return true, fmt.Sprintf("built in (%s=y in %s)", opt, from)
	}
	return false, fmt.Sprintf("not in /proc/modules and %s is %q in %s", opt, cfg[opt], from)
}

// checkNFSClient mirrors Longhorn's NFSClientInstalled condition: one of
// CONFIG_NFS_V4_2, CONFIG_NFS_V4_1, CONFIG_NFS_V4 is =y, or is =m with an
// nfs module loaded (Longhorn looks for "nfs" in kmod list's output).
func (r *run) checkNFSClient(ctx context.Context) Check {
	c := Check{ID: "nfs.v4-client", Topic: "NFSv4", Required: true}
	cfg, from := r.readLonghornConfig()
	if cfg == nil {
		c.Status = StatusMissing
		c.Summary = "Longhorn cannot tell whether the kernel has an NFSv4 client: it reads the kernel config only from " +
			strings.Join(longhornConfigFiles(r.kernel.release), " or ") + ", and neither is readable (its NFSClientInstalled condition is False)"
		c.Fix = "install the running kernel's config as /boot/config-" + r.kernel.release + " (most distributions' kernel package does), or use a kernel with CONFIG_IKCONFIG_PROC=y"
		return c
	}
	opts := []string{"CONFIG_NFS_V4_2", "CONFIG_NFS_V4_1", "CONFIG_NFS_V4"}
	module := false
	for _, opt := range opts {
		switch cfg[opt] {
		case "y":
			c.Status = StatusOK
			c.Summary = fmt.Sprintf("NFSv4 client is built in (%s=y in %s)", opt, from)
			return c
		case "m":
			module = true
		}
	}
	if module {
		if m := r.loadedNFSModule(); m != "" {
			c.Status = StatusOK
			c.Summary = fmt.Sprintf("NFSv4 client is a module and %s is loaded (/proc/modules)", m)
			return c
		}
		c.Evidence = []string{fmt.Sprintf("%s: the NFSv4 client is a module (=m); no nfs module in /proc/modules", from)}
		if r.fixing(c.ID) {
			if changed, err := r.modprobe(ctx, "nfsv4"); err != nil {
				c.Evidence = append(c.Evidence, err.Error())
			} else if changed != "" {
				c.Status = StatusFixed
				c.Summary = "NFSv4 client module nfsv4 was not loaded; loaded it"
				c.Changed = []string{changed}
				c.Fix = "to load it at every boot: " + r.persistModuleFix("nfsv4")
				return c
			}
		}
		c.Status = StatusMissing
		c.Summary = "the NFSv4 client is a module that is not loaded: Longhorn's NFSClientInstalled condition is False until it is (RWX volumes and NFS backups)"
		c.Fix = "modprobe nfsv4   (what --fix does)\nto load it at every boot: " + r.persistModuleFix("nfsv4")
		return c
	}
	c.Evidence = []string{fmt.Sprintf("%s: %s", from, strings.Join(opts, ", ")+" not set")}
	c.Status = StatusMissing
	c.Summary = "no NFSv4 client in this kernel: RWX volumes and NFS backups fail, and Longhorn's NFSClientInstalled condition is False"
	c.Fix = r.kernelModulesFix("nfsv4")
	return c
}

// loadedNFSModule names a loaded module whose name contains "nfs", as
// Longhorn's substring test on kmod list finds it; "" when none.
func (r *run) loadedNFSModule() string {
	for _, m := range []string{"nfsv4", "nfs"} {
		if r.kernel.loaded[m] {
			return m
		}
	}
	return ""
}

// nfsmountConf is where Longhorn reads the host's default NFS version.
const nfsmountConf = "/etc/nfsmount.conf"

// checkNFSDefaultVersion mirrors the second half of Longhorn's
// NFSClientInstalled condition: Defaultvers in the NFSMount_Global_Options
// section of /etc/nfsmount.conf must be 4.0, 4.1 or 4.2 (4 means 4.0);
// absent file or key means 4.0. A line Longhorn cannot parse (no "=")
// makes its condition False too.
func (r *run) checkNFSDefaultVersion() Check {
	c := Check{ID: "nfs.default-version", Topic: "NFSv4", Required: true}
	b, err := r.root.ReadFile(nfsmountConf)
	if errors.Is(err, fs.ErrNotExist) {
		c.Status = StatusOK
		c.Summary = nfsmountConf + " is absent: the default NFS version is 4"
		return c
	}
	if err != nil {
		c.Status = StatusMissing
		c.Summary = fmt.Sprintf("%s cannot be read: %v", nfsmountConf, err)
		return c
	}
	ver, set, err := nfsDefaultVersion(b)
	switch {
	case err != nil:
		c.Status = StatusMissing
		c.Summary = fmt.Sprintf("%s: %v (Longhorn cannot parse it: its NFSClientInstalled condition is False)", nfsmountConf, err)
		c.Fix = "comment out or fix that line in " + nfsmountConf
	case !set:
		c.Status = StatusOK
		c.Summary = nfsmountConf + " does not set Defaultvers: the default NFS version is 4"
	case ver == "4.0" || ver == "4.1" || ver == "4.2":
		c.Status = StatusOK
		c.Summary = fmt.Sprintf("%s sets Defaultvers to %s", nfsmountConf, ver)
	default:
		c.Status = StatusMissing
		c.Summary = fmt.Sprintf("%s sets Defaultvers to %s: Longhorn supports only NFS 4.0, 4.1 and 4.2 (its NFSClientInstalled condition is False)", nfsmountConf, ver)
		c.Fix = "in " + nfsmountConf + ", section [ NFSMount_Global_Options ]: Defaultvers=4.2 (or remove the line)"
	}
	return c
}

// nfsDefaultVersion parses nfsmount.conf(5) as Longhorn's go-common-libs
// does: "[section]" headers, "key=value" lines, '#' comments; any other
// non-empty line is an error. It returns Defaultvers of the global section
// as "major.minor".
func nfsDefaultVersion(b []byte) (ver string, set bool, err error) {
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = strings.TrimSpace(strings.Trim(line, "[]"))
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return "", false, fmt.Errorf("line %d %q is not key=value", n, line)
		}
		if section != "NFSMount_Global_Options" || strings.TrimSpace(key) != "Defaultvers" {
			continue
		}
		val = strings.TrimSpace(val)
		majorS, minorS, _ := strings.Cut(val, ".")
		major, err := strconv.Atoi(majorS)
		if err != nil {
			return "", false, fmt.Errorf("invalid NFS major version %q", val)
		}
		minor := 0
		if minorS != "" {
			if minor, err = strconv.Atoi(minorS); err != nil {
				return "", false, fmt.Errorf("invalid NFS minor version %q", val)
			}
		}
		ver, set = fmt.Sprintf("%d.%d", major, minor), true
	}
	return ver, set, sc.Err()
}

// longhornPackageRule is one case of longhorn-manager's syncPackagesInstalled
// (environment_check_monitor.go at the commit above). The first rule with a
// word that is a substring of the Node's OS image (PRETTY_NAME of
// os-release, lower-cased) decides: Longhorn runs tool on the host (nsenter
// into its mount namespace, so tool is looked up with Longhorn's container
// PATH) once per package, and counts the package as installed when
//
//	dpkg:   `dpkg -l` succeeds and its output, piped through `grep -w PKG`,
//	        has a line with PKG as a whole word (dpkg -l lists every package
//	        of the status database that is not not-installed: state letters,
//	        name, version, architecture, first line of the description);
//	rpm:    `rpm -q PKG` exits 0 (an installed package of that name, or
//	        whose name-version or name-version-release it is; not one
//	        that only provides it);
//	pacman: `pacman -Q PKG` exits 0 (an installed package of that name, or
//	        one that provides it);
//	qlist:  `qlist -I CAT/PN` exits 0 (portage-utils: an installed package
//	        whose CAT/PF begins with CAT/PN).
//
// Any package not counted makes its RequiredPackages condition False.
// On Talos it runs the programs instead (cryptsetup, dmsetup and iscsiadm
// with --version; dpkg -s nfs-common in the kubelet's namespace). No rule:
// False, reason UnknownOS.
type longhornPackageRule struct {
	words    []string
	tool     string   // dpkg, rpm, pacman, qlist; "talos"
	packages []string // in longhornPackagePrograms' order
}

var longhornPackageRules = []longhornPackageRule{
	{words: []string{"talos"}, tool: "talos"},
	{words: []string{"ubuntu", "debian"}, tool: "dpkg", packages: []string{"nfs-common", "open-iscsi", "cryptsetup", "dmsetup"}},
	{words: []string{"centos", "fedora", "red hat", "rocky", "ol"}, tool: "rpm", packages: []string{"nfs-utils", "iscsi-initiator-utils", "cryptsetup", "device-mapper"}},
	{words: []string{"suse"}, tool: "rpm", packages: []string{"nfs-client", "open-iscsi", "cryptsetup", "device-mapper"}},
	{words: []string{"arch"}, tool: "pacman", packages: []string{"nfs-utils", "open-iscsi", "cryptsetup", "device-mapper"}},
	{words: []string{"gentoo"}, tool: "qlist", packages: []string{"net-fs/nfs-utils", "sys-block/open-iscsi", "sys-fs/cryptsetup", "sys-fs/lvm2"}},
}

// longhornPackagePrograms are the programs the required packages bring, in
// the order of every rule's packages.
var longhornPackagePrograms = []string{"mount.nfs", "iscsiadm", "cryptsetup", "dmsetup"}

// longhornPackageRuleFor is the rule Longhorn applies to an OS image.
func longhornPackageRuleFor(osImage string) (longhornPackageRule, bool) {
	s := strings.ToLower(osImage)
	for _, rule := range longhornPackageRules {
		for _, w := range rule.words {
			if strings.Contains(s, w) {
				return rule, true
			}
		}
	}
	return longhornPackageRule{}, false
}

// longhornOSFamily names how Longhorn verifies an OS image's packages (its
// rule's tool); "" means the image is unknown to Longhorn.
func longhornOSFamily(osImage string) string {
	rule, _ := longhornPackageRuleFor(osImage)
	return rule.tool
}

// checkLonghornOS says whether Longhorn knows how to verify this OS's
// packages. On an OS it does not know, Longhorn sets its RequiredPackages
// condition False (reason UnknownOS) whatever is installed; that cannot be
// fixed on the host, so this is a warning and does not block: the program
// checks above verify the same packages' programs.
func (r *run) checkLonghornOS() Check {
	c := Check{ID: "longhorn.os-image", Topic: "RequiredPackages", Required: false}
	img := r.distro.PrettyName
	fam := longhornOSFamily(img)
	if fam != "" {
		c.Status = StatusOK
		c.Summary = fmt.Sprintf("Longhorn verifies the packages of %q with %s", img, fam)
		return c
	}
	c.Status = StatusWarning
	c.Summary = fmt.Sprintf("Longhorn does not know the OS image %q: its RequiredPackages condition is False (reason UnknownOS) whatever is installed; the program checks verify what it would", img)
	c.Fix = "nothing on the host changes it: the condition depends on Longhorn's list of OS images"
	return c
}
