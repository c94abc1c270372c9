package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxSymlinks bounds symlink resolution, as the kernel's MAXSYMLINKS does.
const maxSymlinks = 40

// inRoot returns where this process sees the host path p when the host's /
// is mounted at root. Symlinks on the way are followed as the host would
// follow them, relative to root: k3s's data/current is an absolute link
// (/var/lib/rancher/k3s/data/<id>), which inside the container would
// otherwise point out of the host mount. ".." never climbs above root.
// Components that do not exist are joined as they are.
func inRoot(root, p string) (string, error) {
	if root == "/" || root == "" {
		return filepath.Clean(p), nil
	}
	root = filepath.Clean(root)
	var resolved string // host path resolved so far, always clean and absolute
	resolved = "/"
	rest := strings.Split(filepath.Clean("/"+p), "/")
	links := 0
	for len(rest) > 0 {
		part := rest[0]
		rest = rest[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, part)
		fi, err := os.Lstat(filepath.Join(root, next))
		if errors.Is(err, fs.ErrNotExist) {
			// Nothing further can be a symlink we could read.
			return filepath.Join(append([]string{root, next}, rest...)...), nil
		}
		if err != nil {
			return "", fmt.Errorf("resolve %s under %s: %w", p, root, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if links++; links > maxSymlinks {
			return "", fmt.Errorf("resolve %s under %s: too many levels of symbolic links", p, root)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", fmt.Errorf("resolve %s under %s: %w", p, root, err)
		}
		if filepath.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, resolved), nil
}

// HostPath returns where a process that has the host's / mounted at root
// sees the host path p (symlinks followed as the host would; see inRoot).
func HostPath(root, p string) (string, error) { return inRoot(root, p) }
