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
)

// tempMarker is in the name of every temp file install creates, so a later
// run can remove the leftovers of one that was killed mid-write.
const tempMarker = ".wgmesh-tmp-"

// writeAtomic makes path hold data with mode, or leaves it untouched when it
// already does (changed=false). The new content is written to a temp file in
// the same directory, synced, then renamed over path: a reader (containerd
// exec'ing a plugin, libcni loading the conf dir) sees the old file or the
// new one, never a partial one.
func writeAtomic(path string, data []byte, mode fs.FileMode) (changed bool, err error) {
	if same, err := hasContent(path, data, mode); err != nil {
		return false, err
	} else if same {
		return false, nil
	}
	dir, name := filepath.Split(path)
	// The leading dot hides the temp file from libcni, which loads only
	// *.conf, *.conflist and *.json.
	tmp, err := os.CreateTemp(dir, "."+name+tempMarker+"*")
	if err != nil {
		return false, fmt.Errorf("create temp file for %s: %w", path, err)
	}
	success := false
	defer func() {
		if !success {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return false, fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return false, fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return false, fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, fmt.Errorf("rename %s to %s: %w", tmp.Name(), path, err)
	}
	success = true
	syncDir(dir)
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

// syncDir makes a rename durable. Best effort: some filesystems refuse it,
// and the rename itself has already happened.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// removeStaleTemps deletes temp files that an earlier, killed run of
// install left in dir. Only names carrying tempMarker are touched.
func removeStaleTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), tempMarker) && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove stale temp file: %w", err)
			}
		}
	}
	return nil
}
