package hostprep

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"
)

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return io.ReadAll(io.LimitReader(zr, 16<<20))
}

// unameRelease is the running kernel's release: the host's, since a
// container shares the kernel.
func unameRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// moduleState says how the kernel offers a module.
type moduleState struct {
	present   bool   // loaded or built in
	loadable  bool   // modprobe can load it
	how       string // for evidence
	configVal string
}

// kmodConfig maps module names to their kernel config option.
var kmodConfig = map[string]string{
	"iscsi_tcp":       "CONFIG_ISCSI_TCP",
	"dm_crypt":        "CONFIG_DM_CRYPT",
	"nvme_tcp":        "CONFIG_NVME_TCP",
	"vfio_pci":        "CONFIG_VFIO_PCI",
	"uio_pci_generic": "CONFIG_UIO_PCI_GENERIC",
	"nfsv4":           "CONFIG_NFS_V4",
}

func (k kernelInfo) module(name string) moduleState {
	cfg := k.config[kmodConfig[name]]
	switch {
	case k.loaded[name]:
		return moduleState{present: true, how: "loaded (/proc/modules)", configVal: cfg}
	case k.sysModule[name] == "live":
		return moduleState{present: true, how: "loaded (/sys/module/" + name + "/initstate live)", configVal: cfg}
	case k.builtin[name]:
		return moduleState{present: true, how: "built in (modules.builtin)", configVal: cfg}
	case cfg == "y":
		return moduleState{present: true, how: "built in (" + kmodConfig[name] + "=y)", configVal: cfg}
	case k.sysModule[name] == "builtin":
		return moduleState{present: true, how: "built in (/sys/module/" + name + " without initstate)", configVal: cfg}
	case k.available[name]:
		return moduleState{loadable: true, how: "not loaded; available to modprobe (modules.dep)", configVal: cfg}
	case cfg == "m":
		return moduleState{loadable: true, how: "not loaded; " + kmodConfig[name] + "=m", configVal: cfg}
	case cfg != "" || len(k.config) > 0:
		return moduleState{how: "not in this kernel (" + kmodConfig[name] + " not set)", configVal: cfg}
	}
	return moduleState{how: "not loaded, not built in, not found in modules.dep"}
}

// moduleSpec is a module Longhorn needs and why.
type moduleSpec struct {
	id       string
	names    []string // any one of them is enough
	required bool
	why      string
	// longhorn: Longhorn's KernelModulesLoaded condition checks it, so it
	// counts only as Longhorn sees it (longhornSeesModule).
	longhorn bool
}

func (r *run) moduleSpecs() []moduleSpec {
	specs := []moduleSpec{
		{id: "module.iscsi_tcp", names: []string{"iscsi_tcp"}, required: true, why: "v1 volumes, attached over iSCSI"},
		{id: "module.dm_crypt", names: []string{"dm_crypt"}, required: true, why: "encrypted volumes; Longhorn's KernelModulesLoaded condition", longhorn: true},
	}
	if r.opts.V2Engine {
		// Longhorn's KernelModulesLoaded condition wants all three with
		// the v2 engine, though SPDK uses one of the two PCI drivers.
		specs = append(specs,
			moduleSpec{id: "module.nvme_tcp", names: []string{"nvme_tcp"}, required: true, why: "v2 volumes, attached over NVMe/TCP", longhorn: true},
			moduleSpec{id: "module.vfio_pci", names: []string{"vfio_pci"}, required: true, why: "the v2 engine (SPDK), which drives disks from user space; Longhorn's KernelModulesLoaded condition", longhorn: true},
			moduleSpec{id: "module.uio_pci_generic", names: []string{"uio_pci_generic"}, required: true, why: "the v2 engine (SPDK), which drives disks from user space; Longhorn's KernelModulesLoaded condition", longhorn: true},
		)
	}
	return specs
}

func (r *run) checkModules(ctx context.Context) []Check {
	var out []Check
	for _, s := range r.moduleSpecs() {
		out = append(out, r.checkModule(ctx, s))
	}
	return out
}

func (r *run) checkModule(ctx context.Context, s moduleSpec) Check {
	c := Check{ID: s.id, Topic: "KernelModules", Required: s.required}
	label := strings.Join(s.names, " or ")
	var loadable string
	for _, n := range s.names {
		st := r.kernel.module(n)
		c.Evidence = append(c.Evidence, n+": "+st.how)
		if st.present && s.longhorn {
			if ok, how := r.longhornSeesModule(n); ok {
				st.how = how
			} else {
				// Present, but Longhorn cannot see it: its condition is
				// False, and loading a built-in module changes nothing.
				c.Status = StatusMissing
				c.Summary = fmt.Sprintf("%s is %s, but Longhorn does not see it: %s (its KernelModulesLoaded condition is False)", n, st.how, how)
				c.Fix = "install the running kernel's config as /boot/config-" + r.kernel.release + " (most distributions' kernel package does), or use a kernel with CONFIG_IKCONFIG_PROC=y"
				return c
			}
		}
		if st.present {
			c.Status = StatusOK
			c.Summary = fmt.Sprintf("%s is %s", n, st.how)
			c.Evidence = nil
			return c
		}
		if st.loadable && loadable == "" {
			loadable = n
		}
	}
	c.Evidence = append(c.Evidence, "read: "+strings.Join(r.kernel.sources, ", "))
	if loadable != "" && r.fixing(s.id) {
		if changed, err := r.modprobe(ctx, loadable); err != nil {
			c.Evidence = append(c.Evidence, err.Error())
		} else if changed != "" {
			c.Status = StatusFixed
			c.Summary = fmt.Sprintf("%s was not loaded; loaded it", loadable)
			c.Changed = []string{changed}
			c.Fix = "to load it at every boot: " + r.persistModuleFix(loadable)
			return c
		}
	}
	c.Status = StatusMissing
	if loadable != "" {
		c.Summary = fmt.Sprintf("%s is not loaded (needed for %s)", label, s.why)
		c.Fix = fmt.Sprintf("modprobe %s   (what --fix does)\nto load it at every boot: %s", loadable, r.persistModuleFix(loadable))
	} else {
		c.Summary = fmt.Sprintf("%s is not in this kernel (needed for %s)", label, s.why)
		c.Fix = r.kernelModulesFix(s.names[0])
	}
	return c
}

// persistModuleFix says how to load a module at every boot.
func (r *run) persistModuleFix(mod string) string {
	if r.distro.Family == FamilyNixOS {
		return fmt.Sprintf(`in configuration.nix: boot.kernelModules = [ "%s" ];`, mod)
	}
	return fmt.Sprintf("echo %s > /etc/modules-load.d/longhorn-%s.conf", mod, mod)
}

func (r *run) kernelModulesFix(mod string) string {
	switch r.distro.Family {
	case FamilyNixOS:
		return fmt.Sprintf(`in configuration.nix: boot.kernelModules = [ "%s" ]; (the kernel must build it: check boot.kernelPackages) then nixos-rebuild switch`, mod)
	case FamilyDebian:
		return fmt.Sprintf("apt-get install -y linux-modules-extra-%s (Ubuntu) or a kernel with %s; then modprobe %s", r.kernel.release, kmodConfig[mod], mod)
	}
	return fmt.Sprintf("install the kernel's extra modules package (or a kernel with %s=m), then modprobe %s", kmodConfig[mod], mod)
}

// modprobe loads a module with the host's own modprobe through the
// HostRunner, then confirms it in /proc/modules. It returns "" without an
// error when loading is not allowed.
func (r *run) modprobe(ctx context.Context, mod string) (string, error) {
	if !r.opts.LoadModules || r.opts.Runner == nil {
		return "", nil
	}
	prog, err := r.root.LookPath("modprobe", hostPATH())
	if err != nil {
		return "", fmt.Errorf("no modprobe on the host: %w", err)
	}
	argv := []string{prog.Path, mod}
	out, err := r.opts.Runner.Run(ctx, argv, r.hostEnv())
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	r.kernel = r.readKernel()
	if !r.kernel.module(mod).present {
		return "", fmt.Errorf("%s succeeded but %s is still not in /proc/modules", strings.Join(argv, " "), mod)
	}
	r.log.Info("host changed", "check", r.fix.checkID, "loaded", "module", "module", mod, "command", strings.Join(argv, " "))
	return "ran " + strings.Join(argv, " "), nil
}

// hostEnv is the environment for host programs: the host's program
// directories, and on NixOS the booted kernel's module directory, which
// NixOS's kmod reads from MODULE_DIR.
func (r *run) hostEnv() []string {
	env := []string{"PATH=" + LonghornPATH + ":" + ExtraHostPATH}
	if r.distro.Family == FamilyNixOS {
		env = append(env, "MODULE_DIR=/run/booted-system/kernel-modules/lib/modules")
	}
	return env
}
