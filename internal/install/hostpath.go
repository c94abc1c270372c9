package install

import (
	"path/filepath"

	"github.com/wgmesh/wgmesh/internal/hostfs"
)

// inRoot returns where this process sees the host path p when the host's /
// is mounted at root. Symlinks on the way are followed as the host would
// follow them, relative to root (hostfs.Root.Resolve): k3s's data/current
// is an absolute link (/var/lib/rancher/k3s/data/<id>), which inside the
// container would otherwise point out of the host mount. ".." never climbs
// above root. Components that do not exist are joined as they are.
func inRoot(root, p string) (string, error) {
	if root == "/" || root == "" {
		return filepath.Clean(p), nil
	}
	r := hostfs.Root{Dir: root}
	res, err := r.Resolve(p)
	if err != nil {
		return "", err
	}
	return r.Join(res.Path), nil
}

// HostPath returns where a process that has the host's / mounted at root
// sees the host path p (symlinks followed as the host would; see inRoot).
func HostPath(root, p string) (string, error) { return inRoot(root, p) }
