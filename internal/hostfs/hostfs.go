// Package hostfs reads a host's file system through a host-root mount (the
// host's "/" mounted at, say, /host in a container) the way the host itself
// would see it: every symlink is resolved inside the root, so an absolute
// target such as /run/current-system/sw/bin/iscsiadm means
// <root>/run/current-system/sw/bin/iscsiadm, never the container's own path,
// and ".." never climbs out of the root.
//
// It owns path resolution and program lookup only. It never writes; callers
// that change the host resolve the parent directory here and create the new
// entry themselves. Resolution is a lexical walk with lstat and readlink (in
// the spirit of cyphar/filepath-securejoin), not openat2(RESOLVE_IN_ROOT): it
// is meant for a host that is not actively racing us.
package hostfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// MaxLinks bounds how many symlinks one resolution follows (the kernel's
// limit for a whole path is 40; we allow more but still stop loops).
const MaxLinks = 255

// ErrTooManyLinks is returned for a symlink loop.
var ErrTooManyLinks = errors.New("too many levels of symbolic links")

// Root is a host's "/" as seen from here.
type Root struct {
	// Dir is where the host's "/" is mounted ("/" when running on the host).
	Dir string
}

// Link is one symlink followed during a resolution, in host paths.
type Link struct {
	Path   string // the link itself
	Target string // what it points to, as stored
}

// Resolution is where a host path leads.
type Resolution struct {
	// Path is the resolved host path (absolute, clean, no symlinks in the
	// part that exists).
	Path string
	// Exists is false when some component does not exist (or is not a
	// directory where one is needed); Path is then the lexical remainder
	// joined to the deepest existing directory.
	Exists bool
	// Links lists the symlinks followed, in order.
	Links []Link
}

// Join returns the local path of an already resolved host path. It is
// lexical: use it only on paths that came out of Resolve.
func (r Root) Join(hostPath string) string {
	return filepath.Join(r.Dir, filepath.FromSlash(path.Clean("/"+hostPath)))
}

// Resolve follows hostPath inside the root, like the host's kernel would.
func (r Root) Resolve(hostPath string) (Resolution, error) {
	var res Resolution
	resolved := "/"
	remaining := hostPath
	for remaining != "" {
		var part string
		part, remaining, _ = strings.Cut(strings.TrimLeft(remaining, "/"), "/")
		switch part {
		case "", ".":
			continue
		case "..":
			resolved = path.Dir(resolved)
			continue
		}
		next := path.Join(resolved, part)
		fi, err := os.Lstat(r.Join(next))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			res.Path = path.Join(next, remaining)
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("resolve %s in host root %s: %w", hostPath, r.Dir, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if len(res.Links) >= MaxLinks {
			return res, fmt.Errorf("resolve %s in host root %s: %w", hostPath, r.Dir, ErrTooManyLinks)
		}
		target, err := os.Readlink(r.Join(next))
		if err != nil {
			return res, fmt.Errorf("resolve %s in host root %s: %w", hostPath, r.Dir, err)
		}
		res.Links = append(res.Links, Link{Path: next, Target: target})
		if path.IsAbs(target) {
			resolved = "/"
		}
		remaining = target + "/" + remaining
	}
	res.Path = resolved
	res.Exists = true
	return res, nil
}

// Lstat resolves every component of hostPath but the last and lstats the
// last, so a symlink at hostPath is reported as a symlink.
func (r Root) Lstat(hostPath string) (string, fs.FileInfo, error) {
	clean := path.Clean("/" + hostPath)
	dir, err := r.Resolve(path.Dir(clean))
	if err != nil {
		return "", nil, err
	}
	p := path.Join(dir.Path, path.Base(clean))
	if !dir.Exists {
		return p, nil, fmt.Errorf("lstat %s: %w", hostPath, fs.ErrNotExist)
	}
	fi, err := os.Lstat(r.Join(p))
	return p, fi, err
}

// Stat resolves hostPath and stats what it leads to.
func (r Root) Stat(hostPath string) (Resolution, fs.FileInfo, error) {
	res, err := r.Resolve(hostPath)
	if err != nil {
		return res, nil, err
	}
	if !res.Exists {
		return res, nil, fmt.Errorf("stat %s: %w", hostPath, fs.ErrNotExist)
	}
	fi, err := os.Lstat(r.Join(res.Path))
	return res, fi, err
}

// ReadFile reads a host file, following symlinks inside the root.
func (r Root) ReadFile(hostPath string) ([]byte, error) {
	res, err := r.Resolve(hostPath)
	if err != nil {
		return nil, err
	}
	if !res.Exists {
		return nil, fmt.Errorf("read %s: %w", hostPath, fs.ErrNotExist)
	}
	b, err := os.ReadFile(r.Join(res.Path))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", hostPath, err)
	}
	return b, nil
}

// ReadDir lists a host directory, following symlinks inside the root.
func (r Root) ReadDir(hostPath string) ([]fs.DirEntry, error) {
	res, err := r.Resolve(hostPath)
	if err != nil {
		return nil, err
	}
	if !res.Exists {
		return nil, fmt.Errorf("read dir %s: %w", hostPath, fs.ErrNotExist)
	}
	return os.ReadDir(r.Join(res.Path))
}

// Exists reports whether hostPath leads to something.
func (r Root) Exists(hostPath string) bool {
	_, _, err := r.Stat(hostPath)
	return err == nil
}

// Program is a program found on a search path.
type Program struct {
	// Path is the name as the caller's exec would find it: dir + "/" + name.
	Path string
	// Resolved is the host path of the executable after every symlink.
	Resolved string
	// Links are the symlinks followed from Path to Resolved.
	Links []Link
}

// Evidence describes the lookup for a person: "/usr/sbin/iscsiadm" or
// "/usr/local/sbin/iscsiadm -> /run/current-system/sw/bin/iscsiadm -> ...".
func (p Program) Evidence() string {
	if p.Resolved == p.Path {
		return p.Path
	}
	return p.Path + " -> " + p.Resolved
}

// LookPath finds name the way execvp(3) does with PATH=dirs: the first
// directory in which name leads to a regular file with an execute bit.
// It returns fs.ErrNotExist (wrapped) when no directory has it.
func (r Root) LookPath(name string, dirs []string) (Program, error) {
	if strings.Contains(name, "/") {
		return Program{}, fmt.Errorf("look up %q: program name contains '/'", name)
	}
	for _, dir := range dirs {
		if dir == "" || !path.IsAbs(dir) {
			continue // execvp would search the working directory; Longhorn's PATH has none
		}
		p := path.Join(dir, name)
		res, fi, err := r.Stat(p)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrTooManyLinks) {
			continue
		}
		if err != nil {
			return Program{}, err
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		return Program{Path: p, Resolved: res.Path, Links: res.Links}, nil
	}
	return Program{}, fmt.Errorf("%s not found in %s: %w", name, strings.Join(dirs, ":"), fs.ErrNotExist)
}

// SplitPath splits a PATH value into its directories.
func SplitPath(list string) []string {
	return strings.Split(list, ":")
}
