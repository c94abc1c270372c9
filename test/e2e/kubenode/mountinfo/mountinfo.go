// Package mountinfo parses /proc/<pid>/mountinfo for the cgroup mounts a
// lab node must mount again inside its own mount namespace. It only parses
// text; it never mounts or reads files.
package mountinfo

import (
	"sort"
	"strings"
)

// Mount is one mount: where, which filesystem type, and its superblock
// options (for a cgroup v1 hierarchy they name its controllers).
type Mount struct {
	Point, FSType, Options string
}

// CgroupMounts returns, from the content of a mountinfo file, the tmpfs at
// root (normally /sys/fs/cgroup) and every cgroup and cgroup2 mount under
// it, parents first.
func CgroupMounts(mountinfo []byte, root string) []Mount {
	var out []Mount
	for _, line := range strings.Split(string(mountinfo), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		point, fstype := f[4], g[0]
		if point != root && !strings.HasPrefix(point, root+"/") {
			continue
		}
		if fstype != "tmpfs" && fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		out = append(out, Mount{Point: point, FSType: fstype, Options: g[2]})
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i].Point) < len(out[j].Point) })
	return out
}
