package kubenode

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// cgroupMount is where this machine mounts its cgroup hierarchies (v1, one
// directory per controller, plus the unified v2 one).
const cgroupMount = "/sys/fs/cgroup"

// cgroupHierarchies lists the mounted cgroup hierarchies' directories.
func cgroupHierarchies() ([]string, error) {
	entries, err := os.ReadDir(cgroupMount)
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range entries {
		d := filepath.Join(cgroupMount, e.Name())
		if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err == nil {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) == 0 {
		// A pure cgroup v2 machine mounts the unified hierarchy right here.
		if _, err := os.Stat(filepath.Join(cgroupMount, "cgroup.procs")); err == nil {
			dirs = append(dirs, cgroupMount)
		}
	}
	return dirs, nil
}

// makeCgroupRoot creates root in every hierarchy: the kubelet refuses a
// cgroupRoot that does not exist. A new cpuset cgroup starts with no CPUs
// and no memory nodes, so those are copied from the parent.
func makeCgroupRoot(root string) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		var missing []string
		for d := filepath.Join(h, root); d != h; d = filepath.Dir(d) {
			if _, err := os.Stat(d); err == nil {
				break
			}
			missing = append([]string{d}, missing...)
		}
		for _, d := range missing {
			if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
				return fmt.Errorf("cgroup %s: %w", d, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				parent, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
				if err != nil {
					continue // not the cpuset hierarchy
				}
				if err := os.WriteFile(filepath.Join(d, f), parent, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %s: %w", d, f, err)
				}
			}
		}
	}
	return nil
}

// cgroupPIDs lists the processes in root's tree, in any hierarchy.
func cgroupPIDs(root string) []int {
	hs, _ := cgroupHierarchies()
	seen := map[int]bool{}
	var pids []int
	for _, h := range hs {
		_ = filepath.WalkDir(filepath.Join(h, root), func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// removeCgroupRoot removes root's tree, deepest first, in every hierarchy,
// and the lab's shared parent when it is left empty.
func removeCgroupRoot(root string) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, root), func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
		_ = os.Remove(filepath.Dir(filepath.Join(h, root))) // only if empty
	}
	return errors.Join(errs...)
}

// cgroupParent holds every lab node's cgroup root: /wgmesh-lab/<lab id>-<node>.
const cgroupParent = "/wgmesh-lab"

// Sweep kills the pod processes and removes the cgroups of kubelet nodes
// whose lab is gone (its registry file in lab.RegistryDir was removed by
// lab.Down, lab.DownDir or lab.Sweep, or the lab never registered). Run it
// after those: the kubelet and containerd of a live lab would restart what
// it kills.
func Sweep(log *slog.Logger) {
	hs, _ := cgroupHierarchies()
	roots := map[string]bool{}
	for _, h := range hs {
		entries, _ := os.ReadDir(filepath.Join(h, cgroupParent))
		for _, e := range entries {
			if e.IsDir() {
				roots[e.Name()] = true
			}
		}
	}
	for name := range roots {
		id, _, _ := strings.Cut(name, "-")
		if _, err := os.Stat(filepath.Join(lab.RegistryDir, id+".json")); err == nil {
			continue
		}
		root := filepath.Join(cgroupParent, name)
		for range 3 {
			pids := cgroupPIDs(root)
			if len(pids) == 0 {
				break
			}
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := removeCgroupRoot(root); err != nil {
			log.Warn("kubenode: sweep cgroups of a removed lab", "cgroup", root, "err", err)
			continue
		}
		log.Info("kubenode: swept cgroups of a removed lab", "cgroup", root)
	}
}

// cgroupMounts lists, from a mountinfo file, the tmpfs at /sys/fs/cgroup
// and every cgroup and cgroup2 mount under it, parents first, to be
// mounted again inside a node. Parsed by moby/sys/mountinfo (what runc and
// the kubelet use); VFSOptions are the superblock options, which for a
// cgroup v1 hierarchy name its controllers.
func cgroupMounts(path string) ([]*mountinfo.Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out, err := cgroupMountsFrom(f, cgroupMount)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no cgroup mounts under %s in %s", cgroupMount, path)
	}
	return out, nil
}

// cgroupMountsFrom is cgroupMounts of the mountinfo text r, for the cgroup
// root root.
func cgroupMountsFrom(r io.Reader, root string) ([]*mountinfo.Info, error) {
	under, cgroupTypes := mountinfo.PrefixFilter(root), mountinfo.FSTypeFilter("tmpfs", "cgroup", "cgroup2")
	out, err := mountinfo.GetMountsFromReader(r, func(m *mountinfo.Info) (skip, stop bool) {
		if skip, _ := under(m); skip {
			return true, false
		}
		return cgroupTypes(m)
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b *mountinfo.Info) int { return len(a.Mountpoint) - len(b.Mountpoint) })
	return out, nil
}
