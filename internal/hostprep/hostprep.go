// Package hostprep checks a host for what Longhorn (distributed block
// storage for Kubernetes) needs from it, fixes what is safe to fix, and says
// exactly what to do about the rest, per distribution.
//
// It works on the host through a host-root mount (hostfs.Root): it reads
// the host's files, /proc and /sys under that root, resolving symlinks
// inside it, and finds programs the way Longhorn does (the host's file
// system searched with Longhorn's container PATH). Its only changes are the
// safe fixes: an initiator name file, symlinks that make host programs
// reachable on Longhorn's PATH (and /sbin/lvm), and kernel modules loaded
// through the host's own modprobe via a HostRunner. Every file change is
// kept in a record on the host (RecordPath) so Undo removes exactly it.
//
// It must never replace an existing file, directory or symlink other than a
// malformed initiator name file it keeps a copy of, never write through a
// symlink, never run a program except through the HostRunner it is given,
// and never talk to Kubernetes (kubenode does that).
package hostprep

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/wgmesh/wgmesh/internal/hostfs"
)

// LonghornPATH is the PATH of Longhorn's containers. Longhorn runs host
// programs by bare name through nsenter into the host's mount namespace,
// so the host's file system is searched with this PATH, not the host's.
const LonghornPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ExtraHostPATH lists where hosts keep programs outside Longhorn's PATH
// (NixOS): a program found only here is linked into LinkDir.
const ExtraHostPATH = "/run/wrappers/bin:/run/current-system/sw/bin:/run/current-system/sw/sbin:/nix/var/nix/profiles/default/bin:/nix/var/nix/profiles/default/sbin"

// LinkDir is where missing programs are linked: the first directory of
// LonghornPATH, reserved for the local administrator.
const LinkDir = "/usr/local/sbin"

// DefaultKubeletDir is the kubelet's root directory (k3s uses it too).
const DefaultKubeletDir = "/var/lib/kubelet"

// HostRunner runs a program on the host. The program path is a host path.
// Production uses ChrootRunner; tests use a recorder so that a fake host
// root's programs never run against the real host.
type HostRunner interface {
	Run(ctx context.Context, argv []string, env []string) ([]byte, error)
}

// Options configure one run.
type Options struct {
	// Root is the host's "/" (default "/host" is the caller's business).
	Root hostfs.Root
	// V2Engine adds the checks for Longhorn's SPDK-based v2 data engine.
	V2Engine bool
	// LonghornPATH is the PATH Longhorn's containers use (default
	// LonghornPATH); set it when Longhorn's PATH was extended instead of
	// linking programs.
	LonghornPATH string
	// KubeletDir is the kubelet root dir whose mount must be shared.
	KubeletDir string
	// Fix applies the safe fixes; false only looks.
	Fix bool
	// LoadModules lets a fix run the host's modprobe (needs Fix and Runner).
	LoadModules bool
	// Runner runs host programs; nil means none are run.
	Runner HostRunner
	// Random is the source for a fresh initiator name (crypto/rand if nil).
	Random io.Reader
	// Now stamps record entries (time.Now if nil).
	Now func() time.Time
	// Log receives one line per change (slog.Default if nil).
	Log *slog.Logger
}

// run carries one run's state.
type run struct {
	opts   Options
	root   hostfs.Root
	distro Distro
	fix    *fixer
	log    *slog.Logger
	kernel kernelInfo
}

// Run runs every check against the host and, with opts.Fix, applies the
// safe fixes, re-checking what it fixed. The error is for failures to run
// at all (an unreadable host root, a record that cannot be saved); problems
// with the host are in the report.
func Run(ctx context.Context, opts Options) (Report, error) {
	if opts.KubeletDir == "" {
		opts.KubeletDir = DefaultKubeletDir
	}
	if opts.LonghornPATH == "" {
		opts.LonghornPATH = LonghornPATH
	}
	if opts.Random == nil {
		opts.Random = rand.Reader
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if fi, err := os.Stat(opts.Root.Dir); err != nil {
		return Report{}, fmt.Errorf("host root: %w", err)
	} else if !fi.IsDir() {
		return Report{}, fmt.Errorf("host root %s is not a directory", opts.Root.Dir)
	}
	r := &run{
		opts: opts,
		root: opts.Root,
		log:  opts.Log,
		fix:  &fixer{root: opts.Root, log: opts.Log, now: opts.Now},
	}
	// The record says which links are ours; a check without --fix only
	// reads it, a fix must be able to add to it.
	if err := r.fix.load(); err != nil {
		if opts.Fix {
			return Report{}, err
		}
		r.log.Warn("ignoring unreadable record", "path", RecordPath, "err", err)
	}
	rep := Report{Root: opts.Root.Dir, V2: opts.V2Engine}
	osCheck := r.checkOS()
	rep.Distro = r.distro
	rep.Checks = append(rep.Checks, osCheck)
	r.kernel = r.readKernel()
	rep.Checks = append(rep.Checks, r.checkPrograms()...)
	rep.Checks = append(rep.Checks, r.checkInitiatorName(), r.checkIscsid())
	rep.Checks = append(rep.Checks, r.checkLVM())
	rep.Checks = append(rep.Checks, r.checkModules(ctx)...)
	rep.Checks = append(rep.Checks, r.checkNFSClient(ctx), r.checkNFSDefaultVersion(), r.checkLonghornOS())
	rep.Checks = append(rep.Checks, r.checkLonghornPackages()...)
	rep.Checks = append(rep.Checks, r.checkMultipath())
	rep.Checks = append(rep.Checks, r.checkMountPropagation()...)
	if opts.V2Engine {
		rep.Checks = append(rep.Checks, r.checkHugePages(), r.checkCPU())
	}
	if opts.Fix {
		if err := r.fix.save(); err != nil {
			return rep, err
		}
	}
	return rep, ctx.Err()
}

// fixing reports whether fixes may change the host, and sets the check id
// stamped on record entries.
func (r *run) fixing(id string) bool {
	r.fix.checkID = id
	return r.opts.Fix
}

// hostPATH is where the host's own programs may live (Longhorn's PATH
// first, then the NixOS places).
func hostPATH() []string {
	return append(hostfs.SplitPath(LonghornPATH), hostfs.SplitPath(ExtraHostPATH)...)
}
