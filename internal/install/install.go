package install

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/internal/cniconf"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
)

// Conflist modes (--write-conflist).
const (
	ConflistNever     = "never"
	ConflistNow       = "now"
	ConflistWhenReady = "when-ready"
)

// DefaultContainerdConfig is where k3s writes containerd's config.
const DefaultContainerdConfig = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"

// readyPoll is how often a when-ready install looks at the agent.
const readyPoll = 2 * time.Second

// Options configure an install. Every path is a path on the host; install
// reaches it through HostRoot (where the host's / is mounted, "/" when run
// on the host itself).
type Options struct {
	HostRoot         string
	ContainerdConfig string
	CNIBinDir        string
	CNIConfDir       string
	SourceDir        string
	StateDir         string
	WriteConflist    string
	SubnetFile       string
	ReadyURL         string
	Bridge           string
	Interface        string
	Watch            time.Duration
	Uninstall        bool

	Logger *slog.Logger
}

// RegisterFlags defines the `wgmesh-agent install` flags on fs, with their
// defaults, writing into o.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.HostRoot, "host-root", "/", "where the host's / is mounted; every other path is a host path below it")
	fs.StringVar(&o.ContainerdConfig, "containerd-config", DefaultContainerdConfig, "containerd config.toml to read the CNI dirs from (CRI cni bin_dir/bin_dirs and conf_dir, config version 1-4)")
	fs.StringVar(&o.CNIBinDir, "cni-bin-dir", "", "CNI bin dir (default: from --containerd-config)")
	fs.StringVar(&o.CNIConfDir, "cni-conf-dir", "", "CNI conf dir (default: from --containerd-config)")
	fs.StringVar(&o.SourceDir, "source-dir", "", "directory holding the plugin binaries to install (default: this executable's directory)")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/wgmesh", "agent state dir (private key) to create with mode 0700; empty to skip")
	fs.StringVar(&o.WriteConflist, "write-conflist", ConflistWhenReady, "when to write "+ConflistName+": never, now, or when-ready (once --subnet-file is valid and --ready-url answers 200)")
	fs.StringVar(&o.SubnetFile, "subnet-file", subnetenv.DefaultPath, "subnet file the agent writes (named in the conflist, and the readiness signal)")
	fs.StringVar(&o.ReadyURL, "ready-url", "", "agent readiness URL to require before writing the conflist, e.g. http://127.0.0.1:9918/readyz (empty: subnet file only)")
	fs.StringVar(&o.Bridge, "bridge", cniconf.DefaultBridge, "bridge named in the conflist (must match the agent's --bridge)")
	fs.StringVar(&o.Interface, "interface", cniconf.DefaultWireguardInterface, "WireGuard interface named in the conflist (must match the agent's --interface)")
	fs.DurationVar(&o.Watch, "watch", 0, "keep running and re-check (repair) binaries and conflist at this interval; 0: install once and exit")
	fs.BoolVar(&o.Uninstall, "uninstall", false, "remove "+ConflistName+", wgmesh and wgmesh-ipam from the CNI dirs instead")
}

func (o *Options) validate() error {
	if !filepath.IsAbs(o.HostRoot) {
		return fmt.Errorf("--host-root %q must be an absolute path", o.HostRoot)
	}
	switch o.WriteConflist {
	case ConflistNever, ConflistNow, ConflistWhenReady:
	default:
		return fmt.Errorf("--write-conflist %q: want never, now or when-ready", o.WriteConflist)
	}
	for name, p := range map[string]string{
		"--containerd-config": o.ContainerdConfig, "--cni-bin-dir": o.CNIBinDir,
		"--cni-conf-dir": o.CNIConfDir, "--state-dir": o.StateDir, "--subnet-file": o.SubnetFile,
	} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("%s %q must be an absolute path", name, p)
		}
	}
	if o.SubnetFile == "" {
		return errors.New("--subnet-file must be set")
	}
	if o.ReadyURL != "" && !strings.HasPrefix(o.ReadyURL, "http://") && !strings.HasPrefix(o.ReadyURL, "https://") {
		return fmt.Errorf("--ready-url %q must be an http(s) URL", o.ReadyURL)
	}
	if o.Watch < 0 {
		return fmt.Errorf("--watch %s must not be negative", o.Watch)
	}
	if _, err := RenderConflist(o.conflistConfig()); err != nil {
		return err
	}
	return nil
}

func (o *Options) conflistConfig() ConflistConfig {
	return ConflistConfig{Bridge: o.Bridge, WireguardInterface: o.Interface, SubnetFile: o.SubnetFile}
}

// onHost maps a host path to where this process sees it, following
// symlinks as the host would (see inRoot).
func (o *Options) onHost(p string) (string, error) { return inRoot(o.HostRoot, p) }

// fileOnHost maps a host path whose last component must not be followed (a
// file install replaces or removes, even if it is a symlink).
func (o *Options) fileOnHost(p string) (string, error) {
	dir, err := o.onHost(filepath.Dir(p))
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, filepath.Base(p)), nil
}

// Run installs once, or with Watch > 0 keeps the install right until ctx
// ends. A failing first pass is returned (the container restarts and says
// why); later failures are logged and retried.
func Run(ctx context.Context, o Options) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := o.validate(); err != nil {
		return err
	}
	if o.SourceDir == "" && !o.Uninstall {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this executable's directory (pass --source-dir): %w", err)
		}
		o.SourceDir = filepath.Dir(exe)
	}
	if o.Uninstall {
		return uninstall(o)
	}
	if err := pass(ctx, o, true); err != nil {
		return err
	}
	if o.Watch == 0 {
		return nil
	}
	t := time.NewTicker(o.Watch)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := pass(ctx, o, false); err != nil {
				o.Logger.Error("install check failed; retrying", "in", o.Watch, "err", err)
			}
		}
	}
}

// ResolveDirs returns the CNI dirs: the flags when both are given, else what
// containerd's config says (its defaults for keys it leaves out).
func ResolveDirs(o Options) (CNIDirs, error) {
	if o.CNIBinDir != "" && o.CNIConfDir != "" {
		return CNIDirs{BinDirs: []string{o.CNIBinDir}, ConfDir: o.CNIConfDir, Source: "flags"}, nil
	}
	path, err := o.onHost(o.ContainerdConfig)
	if err != nil {
		return CNIDirs{}, err
	}
	doc, err := os.ReadFile(path)
	if err != nil {
		return CNIDirs{}, fmt.Errorf("read containerd config %s (at %s): %w; pass --cni-bin-dir and --cni-conf-dir to skip it", o.ContainerdConfig, path, err)
	}
	dirs, err := ParseContainerdCNIDirs(doc)
	if err != nil {
		return CNIDirs{}, fmt.Errorf("%s: %w", o.ContainerdConfig, err)
	}
	dirs.Source = o.ContainerdConfig + ": " + dirs.Source
	if o.CNIBinDir != "" {
		dirs.BinDirs = []string{o.CNIBinDir}
		dirs.Source += ", bin dir from --cni-bin-dir"
	}
	if o.CNIConfDir != "" {
		dirs.ConfDir = o.CNIConfDir
		dirs.Source += ", conf dir from --cni-conf-dir"
	}
	for _, d := range append(slices.Clone(dirs.BinDirs), dirs.ConfDir) {
		if !filepath.IsAbs(d) {
			return CNIDirs{}, fmt.Errorf("%s names CNI dir %q, which is not an absolute path", o.ContainerdConfig, d)
		}
	}
	return dirs, nil
}

// pass makes one install: state dir, binaries, then the conflist. first
// waits for the agent when the conflist is to be written when ready; later
// passes only look.
func pass(ctx context.Context, o Options, first bool) error {
	dirs, err := ResolveDirs(o)
	if err != nil {
		return err
	}
	log := o.Logger.With("binDir", dirs.BinDirs[0], "confDir", dirs.ConfDir)
	if first {
		log.Info("CNI dirs", "source", dirs.Source)
	}
	if o.StateDir != "" {
		dir, err := o.onHost(o.StateDir)
		if err != nil {
			return err
		}
		if err := ensurePrivateDir(dir); err != nil {
			return err
		}
	}
	changed, err := installBinaries(o, dirs)
	if err != nil {
		return err
	}
	for _, name := range changed {
		log.Info("plugin installed", "plugin", name)
	}
	switch o.WriteConflist {
	case ConflistNever:
		return nil
	case ConflistWhenReady:
		if first {
			if err := waitReady(ctx, o); err != nil {
				return err
			}
		} else if err := agentReady(ctx, o); err != nil {
			// Not ready now: leave the conflist as it is. Removing it would
			// turn the node NotReady and stop every new pod.
			log.Debug("agent not ready; conflist not checked", "reason", err)
			return nil
		}
	}
	return writeConflist(o, dirs, log)
}

// ensurePrivateDir creates dir with mode 0700, or tightens an existing one
// (a hostPath DirectoryOrCreate volume is created 0755).
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("chmod state dir: %w", err)
	}
	return nil
}

// installBinaries copies OwnPlugins into the first bin dir (always kept
// current), and each SupportPlugin that no bin dir has yet. It returns the
// names it wrote.
func installBinaries(o Options, dirs CNIDirs) ([]string, error) {
	binDir, err := o.onHost(dirs.BinDirs[0])
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(binDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("CNI bin dir %s (%s) is not a directory at %s: mount the host's directory into this container, or pass --cni-bin-dir", dirs.BinDirs[0], dirs.Source, binDir)
	}
	if err := removeStaleTemps(binDir, slices.Concat(OwnPlugins, SupportPlugins)...); err != nil {
		return nil, err
	}
	var changed []string
	install := func(name string) error {
		data, err := os.ReadFile(filepath.Join(o.SourceDir, name))
		if err != nil {
			return fmt.Errorf("read plugin %s from source dir: %w", name, err)
		}
		ok, err := writeAtomic(filepath.Join(binDir, name), data, 0o755)
		if err != nil {
			return fmt.Errorf("install plugin %s: %w", name, err)
		}
		if ok {
			changed = append(changed, name)
		}
		return nil
	}
	for _, name := range OwnPlugins {
		if err := install(name); err != nil {
			return changed, err
		}
	}
	for _, name := range SupportPlugins {
		if found := findPlugin(o, dirs, name); found != "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(o.SourceDir, name)); err != nil {
			return changed, fmt.Errorf("pods need the %s plugin, which is in no CNI bin dir (%s) and not in %s", name, strings.Join(dirs.BinDirs, ", "), o.SourceDir)
		}
		if err := install(name); err != nil {
			return changed, err
		}
	}
	return changed, nil
}

// findPlugin returns the host path of the first bin dir entry called name
// (a file, or a symlink such as k3s's links to its multi-call binary).
func findPlugin(o Options, dirs CNIDirs, name string) string {
	for _, d := range dirs.BinDirs {
		p, err := o.fileOnHost(filepath.Join(d, name))
		if err != nil {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			return filepath.Join(d, name)
		}
	}
	return ""
}

func writeConflist(o Options, dirs CNIDirs, log *slog.Logger) error {
	data, err := RenderConflist(o.conflistConfig())
	if err != nil {
		return err
	}
	confDir, err := o.onHost(dirs.ConfDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return fmt.Errorf("create CNI conf dir %s: %w", dirs.ConfDir, err)
	}
	if err := removeStaleTemps(confDir, ConflistName); err != nil {
		return err
	}
	changed, err := writeAtomic(filepath.Join(confDir, ConflistName), data, 0o644)
	if err != nil {
		return fmt.Errorf("write conflist: %w", err)
	}
	if changed {
		log.Info("conflist written", "file", filepath.Join(dirs.ConfDir, ConflistName))
	}
	if first := shadowingConfigs(confDir); len(first) > 0 {
		log.Warn("other CNI configs sort before "+ConflistName+"; the runtime uses the first, so pods will not get wgmesh until they are removed", "files", first)
	}
	return nil
}

// shadowingConfigs lists the network configs in dir that libcni would load
// before ours (it takes the first of *.conf, *.conflist, *.json by name).
func shadowingConfigs(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if name >= ConflistName || e.IsDir() {
			continue
		}
		switch filepath.Ext(name) {
		case ".conf", ".conflist", ".json":
			out = append(out, name)
		}
	}
	return out
}

// waitReady blocks until the agent is ready or ctx ends.
func waitReady(ctx context.Context, o Options) error {
	logged := time.Time{}
	for {
		err := agentReady(ctx, o)
		if err == nil {
			o.Logger.Info("agent is ready")
			return nil
		}
		if time.Since(logged) >= 30*time.Second {
			o.Logger.Info("waiting for the agent before writing the conflist", "reason", err)
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent not ready (%w): %w", err, ctx.Err())
		case <-time.After(readyPoll):
		}
	}
}

// agentReady is nil once the agent has written a valid subnet file and, if a
// ready URL is set, answers it with 200.
func agentReady(ctx context.Context, o Options) error {
	path, err := o.onHost(o.SubnetFile)
	if err != nil {
		return err
	}
	env, err := subnetenv.Read(path)
	if err != nil {
		return fmt.Errorf("subnet file: %w", err)
	}
	if err := env.Validate(); err != nil {
		return fmt.Errorf("subnet file %s: %w", o.SubnetFile, err)
	}
	if o.ReadyURL == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.ReadyURL, nil)
	if err != nil {
		return fmt.Errorf("ready url: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ready url: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", o.ReadyURL, resp.Status)
	}
	return nil
}

// uninstall removes what install wrote: the conflist, then our plugins. The
// support plugins stay: install cannot tell whether it or the distribution
// put them there.
func uninstall(o Options) error {
	dirs, err := ResolveDirs(o)
	if err != nil {
		return err
	}
	paths := []string{filepath.Join(dirs.ConfDir, ConflistName)}
	for _, name := range OwnPlugins {
		paths = append(paths, filepath.Join(dirs.BinDirs[0], name))
	}
	for _, p := range paths {
		hp, err := o.fileOnHost(p)
		if err != nil {
			return fmt.Errorf("uninstall: %w", err)
		}
		err = os.Remove(hp)
		switch {
		case err == nil:
			o.Logger.Info("removed", "file", p)
		case errors.Is(err, fs.ErrNotExist):
		default:
			return fmt.Errorf("uninstall: %w", err)
		}
	}
	return nil
}
