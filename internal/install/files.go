package install

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/wgmesh/wgmesh/internal/atomicfile"
)

// tempMarker was in the name of every temp file install created before it
// wrote through atomicfile; removeStaleTemps still removes those leftovers.
const tempMarker = ".wgmesh-tmp-"

// writeAtomic makes path hold data with mode, or leaves it untouched when it
// already does (changed=false). atomicfile.Write writes the new content to a
// temp file in the same directory, syncs it and renames it over path: a reader (containerd
// exec'ing a plugin, libcni loading the conf dir) sees the old file or the
// new one, never a partial one.
func writeAtomic(path string, data []byte, mode fs.FileMode) (changed bool, err error) {
	if same, err := hasContent(path, data, mode); err != nil {
		return false, err
	} else if same {
		return false, nil
	}
	// The temp file's name ends in digits, so libcni (which loads only
	// *.conf, *.conflist and *.json) skips it.
	if err := atomicfile.Write(path, data, mode); err != nil {
		return false, err
	}
	return true, nil
}

// hasContent reports whether path is a regular file with exactly data and
// mode. A missing file is not an error.
func hasContent(path string, data []byte, mode fs.FileMode) (bool, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != mode.Perm() || fi.Size() != int64(len(data)) {
		return false, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	want := sha256.Sum256(data)
	return bytes.Equal(h.Sum(nil), want[:]), nil
}

// removeStaleTemps deletes temp files that an earlier, killed run of
// install left in dir while writing one of names. Only such temp names (and
// hidden names carrying the old tempMarker) are touched.
func removeStaleTemps(dir string, names ...string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() && isStaleTemp(e.Name(), names) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove stale temp file: %w", err)
			}
		}
	}
	return nil
}

func isStaleTemp(name string, targets []string) bool {
	if strings.HasPrefix(name, ".") && strings.Contains(name, tempMarker) {
		return true
	}
	for _, t := range targets {
		if atomicfile.IsTemp(name, t) {
			return true
		}
	}
	return false
}
