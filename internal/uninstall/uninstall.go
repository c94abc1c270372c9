// Package uninstall removes everything wgmesh left on a node, for
// `wgmesh-agent uninstall` once the DaemonSet is gone: the data plane
// (dataplane.CleanupWithout: chains, routes, rules, the WireGuard device),
// the pods' bridge, the CNI files in every directory an install could have
// used (k3s's of every release and the standard ones), the IPAM store and
// libcni's cached results of the wgmesh network, subnet.env and the private
// key. It removes only names wgmesh owns: another vendor's plugin, conflist
// or network state is never touched. Every step runs even when an earlier
// one failed, and a second run finds nothing to do.
package uninstall

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/internal/dataplane"
	"github.com/wgmesh/wgmesh/internal/install"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// CandidateConfDirs and CandidateBinDirs are every CNI dir an install on
// k3s or a plain kubelet node may have written to, besides the ones the
// flags or containerd's config name. k3s's bin dir moved across releases
// (data/cni, data/current/bin, data/<id>/bin).
var (
	CandidateConfDirs = []string{"/etc/cni/net.d", "/var/lib/rancher/k3s/agent/etc/cni/net.d"}
	CandidateBinDirs  = []string{"/opt/cni/bin", "/var/lib/rancher/k3s/data/cni", "/var/lib/rancher/k3s/data/current/bin", "/var/lib/rancher/k3s/data/*/bin"}
)

// Options say what to remove. Paths are host paths, reached through
// Install.HostRoot.
type Options struct {
	// Install names the host root and the CNI dirs the install used (flags
	// or containerd's config); the candidate dirs are swept as well.
	Install install.Options
	// Device and Mode are the WireGuard device's, Bridge the pods' bridge.
	Device string
	Mode   wireguard.Mode
	Bridge string
	// SubnetFile and PrivateKey are the agent's files; their directories
	// go too when empty.
	SubnetFile, PrivateKey string
	// CNIStateDir is libcni's and the IPAM's state dir (/var/lib/cni);
	// Network the conflist's network name (wgmesh).
	CNIStateDir, Network string
	Logger               *slog.Logger
}

// Node removes everything wgmesh left on this node and returns what it
// removed (host paths, and "link NAME" for links).
func Node(ctx context.Context, o Options) ([]string, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	var removed []string
	var errs []error
	if err := dataplane.CleanupWithout(ctx, dataplane.Config{Device: o.Device, Mode: o.Mode, Logger: log}); err != nil {
		errs = append(errs, err)
	}
	if gone, err := deleteBridge(o.Bridge); err != nil {
		errs = append(errs, err)
	} else if gone {
		removed = append(removed, "link "+o.Bridge)
	}
	var paths, trees []string
	for _, d := range confDirs(o.Install) {
		paths = append(paths, filepath.Join(d, install.ConflistName))
	}
	for _, d := range binDirs(o.Install) {
		for _, p := range install.OwnPlugins {
			paths = append(paths, filepath.Join(d, p))
		}
	}
	trees = append(trees, filepath.Join(o.CNIStateDir, "networks", o.Network))
	if results, err := hostGlob(o.Install.HostRoot, filepath.Join(o.CNIStateDir, "results", o.Network+"-*")); err != nil {
		errs = append(errs, err)
	} else {
		paths = append(paths, results...)
	}
	paths = append(paths, o.SubnetFile, o.PrivateKey)
	for _, p := range paths {
		if ok, err := remove(o.Install.HostRoot, p, os.Remove); err != nil {
			errs = append(errs, err)
		} else if ok {
			removed = append(removed, p)
		}
	}
	for _, p := range trees {
		if ok, err := remove(o.Install.HostRoot, p, os.RemoveAll); err != nil {
			errs = append(errs, err)
		} else if ok {
			removed = append(removed, p)
		}
	}
	// The agent's own directories, once empty (a person's file keeps one).
	for _, d := range []string{filepath.Dir(o.SubnetFile), filepath.Dir(o.PrivateKey)} {
		if ok, _ := remove(o.Install.HostRoot, d, os.Remove); ok {
			removed = append(removed, d)
		}
	}
	for _, p := range removed {
		log.Info("removed", "what", p)
	}
	return removed, errors.Join(errs...)
}

// remove removes the host path p with rm and reports whether it existed.
func remove(root, p string, rm func(string) error) (bool, error) {
	dir, err := install.HostPath(root, filepath.Dir(p))
	if err != nil {
		return false, err
	}
	hp := filepath.Join(dir, filepath.Base(p))
	if _, err := os.Lstat(hp); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err := rm(hp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("remove %s: %w", p, err)
	}
	return true, nil
}

// hostGlob expands a host path pattern below root into host paths. (A
// symlink on the way is followed inside the container's view, so k3s's
// absolute data/current link is not: data/<id>/bin finds that dir anyway.)
func hostGlob(root, pattern string) ([]string, error) {
	root = filepath.Clean(root)
	matches, err := filepath.Glob(filepath.Join(root, pattern))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range matches {
		rel, err := filepath.Rel(root, m)
		if err != nil {
			return nil, err
		}
		out = append(out, filepath.Join("/", rel))
	}
	return out, nil
}

func confDirs(o install.Options) []string {
	dirs := slices.Clone(CandidateConfDirs)
	if d, err := install.ResolveDirs(o); err == nil {
		dirs = append(dirs, d.ConfDir)
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

func binDirs(o install.Options) []string {
	var dirs []string
	for _, c := range CandidateBinDirs {
		m, err := hostGlob(o.HostRoot, c)
		if err == nil {
			dirs = append(dirs, m...)
		}
	}
	if d, err := install.ResolveDirs(o); err == nil {
		dirs = append(dirs, d.BinDirs...)
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

// deleteBridge deletes the pods' bridge if it exists and is a bridge; the
// pods' veths on it go with it (their pods have no network left anyway).
func deleteBridge(name string) (bool, error) {
	l, err := netlinksafe.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("find bridge %s: %w", name, err)
	case l.Type() != "bridge":
		return false, fmt.Errorf("%s is a %s link, not the pods' bridge: left alone", name, l.Type())
	}
	if err := netlink.LinkDel(l); err != nil {
		return false, fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return true, nil
}
