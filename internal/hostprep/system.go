package hostprep

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
)

// checkOS reads /etc/os-release (then /usr/lib/os-release) under the host
// root; /run/current-system marks NixOS even without it.
func (r *run) checkOS() Check {
	c := Check{ID: "os.release", Topic: "OS", Required: false}
	nixos := r.root.Exists("/run/current-system")
	var kv map[string]string
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := r.root.ReadFile(p)
		if err != nil {
			continue
		}
		kv = parseOSRelease(b)
		c.Evidence = append(c.Evidence, fmt.Sprintf("%s: ID=%s ID_LIKE=%s VERSION_ID=%s", p, kv["ID"], kv["ID_LIKE"], kv["VERSION_ID"]))
		break
	}
	if nixos {
		c.Evidence = append(c.Evidence, "/run/current-system exists (NixOS)")
	}
	r.distro = distroFrom(kv, nixos)
	name := r.distro.PrettyName
	if name == "" {
		name = r.distro.ID
	}
	switch {
	case kv == nil && !nixos:
		c.Status = StatusWarning
		c.Summary = "no /etc/os-release or /usr/lib/os-release under the host root; fixes below are generic"
		c.Fix = "mount the host's / at the host root (--host-root) so its files can be read"
	case r.distro.Family == FamilyUnknown:
		c.Status = StatusWarning
		c.Summary = fmt.Sprintf("%s: unknown distribution family; fixes below name packages only", name)
	default:
		c.Status = StatusOK
		c.Summary = fmt.Sprintf("%s (%s family)", name, r.distro.Family)
	}
	return c
}

// kernelInfo is what the host's kernel offers: loaded and built-in modules,
// modules available to modprobe, and its configuration.
type kernelInfo struct {
	release   string
	loaded    map[string]bool   // /proc/modules
	sysModule map[string]string // /sys/module/<m>: "live" (module) or "builtin"
	builtin   map[string]bool   // modules.builtin
	available map[string]bool   // modules.dep
	config    map[string]string // CONFIG_X -> y/m
	sources   []string          // files read, for evidence
}

// moduleDirs are where a host keeps /lib/modules/<release>; NixOS keeps its
// booted kernel's modules under /run/booted-system/kernel-modules.
var moduleDirs = []string{"/lib/modules", "/usr/lib/modules", "/run/booted-system/kernel-modules/lib/modules"}

// modName normalizes a module file or name: "kernel/drivers/md/dm-crypt.ko.zst" -> "dm_crypt".
func modName(s string) string {
	s = path.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

func (r *run) readKernel() kernelInfo {
	k := kernelInfo{loaded: map[string]bool{}, sysModule: map[string]string{}, builtin: map[string]bool{}, available: map[string]bool{}, config: map[string]string{}}
	if b, err := r.root.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		k.release = strings.TrimSpace(string(b))
	} else {
		k.release = unameRelease()
	}
	if b, err := r.root.ReadFile("/proc/modules"); err == nil {
		k.sources = append(k.sources, "/proc/modules")
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				k.loaded[f[0]] = true
			}
		}
	}
	if ents, err := r.root.ReadDir("/sys/module"); err == nil {
		k.sources = append(k.sources, "/sys/module")
		for _, e := range ents {
			state := "builtin"
			if b, err := r.root.ReadFile("/sys/module/" + e.Name() + "/initstate"); err == nil {
				state = strings.TrimSpace(string(b))
			}
			k.sysModule[e.Name()] = state
		}
	}
	for _, d := range moduleDirs {
		dir := path.Join(d, k.release)
		if b, err := r.root.ReadFile(dir + "/modules.builtin"); err == nil {
			k.sources = append(k.sources, dir+"/modules.builtin")
			for _, line := range strings.Fields(string(b)) {
				k.builtin[modName(line)] = true
			}
		}
		if b, err := r.root.ReadFile(dir + "/modules.dep"); err == nil {
			k.sources = append(k.sources, dir+"/modules.dep")
			for _, line := range strings.Split(string(b), "\n") {
				if mod, _, ok := strings.Cut(line, ":"); ok {
					k.available[modName(mod)] = true
				}
			}
		}
	}
	for _, p := range []string{"/proc/config.gz", "/boot/config-" + k.release, "/lib/modules/" + k.release + "/config", "/usr/lib/modules/" + k.release + "/config"} {
		b, err := r.root.ReadFile(p)
		if err != nil {
			continue
		}
		if strings.HasSuffix(p, ".gz") {
			if b, err = gunzip(b); err != nil {
				r.log.Warn("unreadable kernel config", "path", p, "err", err)
				continue
			}
		}
		k.sources = append(k.sources, p)
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if key, val, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(key, "CONFIG_") {
				k.config[key] = val
			}
		}
		break
	}
	return k
}

// multipathd's blacklist that keeps it off Longhorn's devices.
var longhornBlacklist = `blacklist {
    devnode "^sd[a-z0-9]+"
}`

// checkMultipath warns when multipathd runs without a blacklist covering
// Longhorn's /dev/sdX devices: it grabs them and Longhorn's mounts fail
// with "already mounted or mount point busy".
func (r *run) checkMultipath() Check {
	c := Check{ID: "multipath.blacklist", Topic: "MultipathService"}
	procs := r.processes("multipathd")
	units := r.activeUnits("multipathd.service", "multipathd.socket")
	if len(procs) == 0 && len(units) == 0 {
		c.Status = StatusOK
		c.Summary = "multipathd is not running"
		return c
	}
	c.Evidence = append(c.Evidence, procs...)
	c.Evidence = append(c.Evidence, units...)
	files := []string{"/etc/multipath.conf"}
	if ents, err := r.root.ReadDir("/etc/multipath/conf.d"); err == nil {
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".conf") {
				files = append(files, "/etc/multipath/conf.d/"+e.Name())
			}
		}
	}
	for _, f := range files {
		b, err := r.root.ReadFile(f)
		if err != nil {
			continue
		}
		if pat, ok := blacklistsLonghorn(string(b)); ok {
			c.Status = StatusOK
			c.Summary = fmt.Sprintf("multipathd is running and %s blacklists devnode %q (Longhorn's Multipathd condition reads False while multipathd runs, blacklist or not)", f, pat)
			return c
		}
		c.Evidence = append(c.Evidence, f+": no blacklist devnode matching sda..sdzz")
	}
	c.Status = StatusWarning
	c.Summary = "multipathd is running without a blacklist for Longhorn's devices (devnode \"^sd[a-z0-9]+\")"
	if r.distro.Family == FamilyNixOS {
		c.Fix = "in configuration.nix: services.multipath.extraConfig = ''\n" + longhornBlacklist + "\n'';  (or services.multipath.enable = false;) then nixos-rebuild switch"
	} else {
		c.Fix = "add to /etc/multipath.conf:\n" + longhornBlacklist + "\nthen: systemctl restart multipathd.service  (or stop and disable multipathd if nothing else uses it)"
	}
	return c
}

// blacklistsLonghorn finds, inside a "blacklist { }" section (not
// blacklist_exceptions, not a device subsection), a devnode pattern that
// matches Longhorn's sdX names.
func blacklistsLonghorn(conf string) (string, bool) {
	var stack []string
	prev := ""
	for _, tok := range confTokens(conf) {
		switch {
		case tok == "{":
			stack = append(stack, prev)
		case tok == "}":
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case prev == "devnode" && len(stack) > 0 && stack[len(stack)-1] == "blacklist":
			pat := strings.Trim(tok, `"`)
			if re, err := regexp.Compile(pat); err == nil && re.MatchString("sda") && re.MatchString("sdab") && re.MatchString("sdc1") {
				return pat, true
			}
		}
		prev = tok
	}
	return "", false
}

// confTokens splits multipath.conf into words, quoted strings and braces,
// dropping comments.
func confTokens(conf string) []string {
	var toks []string
	for _, line := range strings.Split(conf, "\n") {
		for i := 0; i < len(line); {
			switch c := line[i]; {
			case c == '#' || c == '!':
				i = len(line)
			case c == ' ' || c == '\t' || c == '\r':
				i++
			case c == '{' || c == '}':
				toks = append(toks, string(c))
				i++
			case c == '"':
				j := strings.IndexByte(line[i+1:], '"')
				if j < 0 { // unterminated: the rest of the line
					toks = append(toks, line[i:])
					i = len(line)
					break
				}
				toks = append(toks, line[i:i+j+2])
				i += j + 2
			default:
				j := i
				for j < len(line) && !strings.ContainsRune(" \t\r{}\"#", rune(line[j])) {
					j++
				}
				toks = append(toks, line[i:j])
				i = j
			}
		}
	}
	return toks
}

// processes lists "pid N (comm)" for host processes whose comm is name,
// from /proc under the host root.
func (r *run) processes(name string) []string {
	ents, err := r.root.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := r.root.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == name {
			out = append(out, fmt.Sprintf("process %s: pid %s", name, e.Name()))
		}
	}
	return out
}

// activeUnits lists the systemd units among names that are active:
// systemd keeps /run/systemd/units/invocation:<unit> for each started unit.
func (r *run) activeUnits(names ...string) []string {
	var out []string
	for _, n := range names {
		p := "/run/systemd/units/invocation:" + n
		if _, _, err := r.root.Lstat(p); err == nil {
			out = append(out, "unit "+n+" active ("+p+")")
		}
	}
	return out
}

// listeningAbstract reports whether the host's init network namespace has
// a unix socket bound to the abstract name (without the leading '@').
func (r *run) listeningAbstract(name string) (bool, string) {
	b, err := r.root.ReadFile("/proc/1/net/unix")
	if err != nil {
		return false, ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && f[len(f)-1] == "@"+name {
			return true, "/proc/1/net/unix: @" + name
		}
	}
	return false, ""
}

// parseMountInfo parses a /proc/<pid>/mountinfo (moby/sys/mountinfo, the
// parser runc and the kubelet's mount code use), leaving out lines without
// a mount point.
func parseMountInfo(b []byte) ([]*mountinfo.Info, error) {
	mounts, err := mountinfo.GetMountsFromReader(bytes.NewReader(b), nil)
	return slices.DeleteFunc(mounts, func(m *mountinfo.Info) bool { return m.Mountpoint == "" }), err
}

// mountFor returns the mount that holds p: the last mount whose mount point
// is p or a parent of p (later lines stack over earlier ones).
func mountFor(mounts []*mountinfo.Info, p string) (*mountinfo.Info, bool) {
	var best *mountinfo.Info
	for _, m := range mounts {
		if m.Mountpoint == p || m.Mountpoint == "/" || strings.HasPrefix(p, strings.TrimSuffix(m.Mountpoint, "/")+"/") {
			if best == nil || len(m.Mountpoint) >= len(best.Mountpoint) {
				best = m
			}
		}
	}
	return best, best != nil
}

// checkMountPropagation: Longhorn's CSI plugin mounts with Bidirectional
// propagation, which the kubelet refuses unless / and the kubelet dir are
// shared mounts in the host's init mount namespace.
func (r *run) checkMountPropagation() []Check {
	b, err := r.root.ReadFile("/proc/1/mountinfo")
	var mounts []*mountinfo.Info
	if err == nil {
		mounts, err = parseMountInfo(b)
	}
	var out []Check
	for _, t := range []struct{ id, dir string }{{"mount.propagation-root", "/"}, {"mount.propagation-kubelet", r.opts.KubeletDir}} {
		c := Check{ID: t.id, Topic: "MountPropagation", Required: true}
		m, ok := mountFor(mounts, t.dir)
		switch {
		case err != nil:
			c.Status = StatusWarning
			c.Summary = "cannot read or parse the host's /proc/1/mountinfo to check mount propagation of " + t.dir
			c.Evidence = []string{err.Error()}
			c.Fix = "mount the host's / with its /proc (hostPath / at the host root, HostToContainer propagation)"
		case !ok:
			c.Status = StatusWarning
			c.Summary = "no mount holds " + t.dir + " in /proc/1/mountinfo"
		default:
			shared := slices.ContainsFunc(strings.Fields(m.Optional), func(o string) bool { return strings.HasPrefix(o, "shared:") })
			c.Evidence = []string{fmt.Sprintf("/proc/1/mountinfo: %s is on mount %s [%s]", t.dir, m.Mountpoint, m.Optional)}
			if shared {
				c.Status = StatusOK
				c.Summary = fmt.Sprintf("%s is on a shared mount (%s)", t.dir, m.Mountpoint)
			} else {
				c.Status = StatusMissing
				c.Summary = fmt.Sprintf("%s is on mount %s, which is not shared: Longhorn's Bidirectional mounts will be refused", t.dir, m.Mountpoint)
				c.Fix = fmt.Sprintf("mount --make-rshared %s  (systemd makes / shared at boot; find what made it private, e.g. a container runtime unit with MountFlags=private)", m.Mountpoint)
			}
		}
		out = append(out, c)
	}
	return out
}

// checkHugePages: the v2 engine (SPDK) needs 2 GiB of 2 MiB huge pages.
func (r *run) checkHugePages() Check {
	const need = 1024 // 2 GiB / 2 MiB
	c := Check{ID: "v2.hugepages", Topic: "HugePages", Required: true}
	p := "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
	b, err := r.root.ReadFile(p)
	n := -1
	if err == nil {
		n, err = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if err != nil {
		n = meminfoHugePages(r.root)
		p = "/proc/meminfo HugePages_Total (Hugepagesize 2048 kB)"
	}
	fix := "sysctl -w vm.nr_hugepages=1024 && echo vm.nr_hugepages=1024 > /etc/sysctl.d/90-longhorn-hugepages.conf"
	if r.distro.Family == FamilyNixOS {
		fix = `in configuration.nix: boot.kernel.sysctl."vm.nr_hugepages" = 1024; then nixos-rebuild switch`
	}
	switch {
	case n < 0:
		c.Status = StatusMissing
		c.Summary = "cannot read the number of 2 MiB huge pages"
		c.Fix = fix
	case n < need:
		c.Status = StatusMissing
		c.Summary = fmt.Sprintf("%d 2 MiB huge pages, the v2 engine needs %d (2 GiB)", n, need)
		c.Evidence = []string{fmt.Sprintf("%s: %d", p, n)}
		c.Fix = fix
	default:
		c.Status = StatusOK
		c.Summary = fmt.Sprintf("%d 2 MiB huge pages (>= %d)", n, need)
		c.Evidence = []string{fmt.Sprintf("%s: %d", p, n)}
	}
	return c
}

func meminfoHugePages(root interface {
	ReadFile(string) ([]byte, error)
}) int {
	b, err := root.ReadFile("/proc/meminfo")
	if err != nil {
		return -1
	}
	total, size := -1, 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.Atoi(f[0])
		switch k {
		case "HugePages_Total":
			total = n
		case "Hugepagesize":
			size = n
		}
	}
	if size != 2048 {
		return -1
	}
	return total
}

// checkCPU: SPDK needs SSE4.2 on amd64 (longhornctl checks the same).
func (r *run) checkCPU() Check {
	c := Check{ID: "v2.cpu-sse4_2", Topic: "CpuInstructionSet", Required: true}
	if runtime.GOARCH != "amd64" {
		c.Status = StatusOK
		c.Summary = "not amd64 (" + runtime.GOARCH + "): no instruction set requirement"
		return c
	}
	b, err := r.root.ReadFile("/proc/cpuinfo")
	if errors.Is(err, fs.ErrNotExist) || err != nil {
		c.Status = StatusWarning
		c.Summary = "cannot read /proc/cpuinfo"
		return c
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			if slices.Contains(strings.Fields(v), "sse4_2") {
				c.Status = StatusOK
				c.Summary = "CPU supports sse4_2"
				return c
			}
			break
		}
	}
	c.Status = StatusMissing
	c.Summary = "CPU lacks sse4_2, which the v2 engine (SPDK) needs"
	c.Fix = "use a CPU (or VM CPU model) with SSE4.2, or the v1 engine"
	return c
}
