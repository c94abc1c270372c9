// Package atomicfile replaces a file so that a reader sees the old content or
// the new one, never a partial file. It is the one place wgmesh writes files
// that way; github.com/google/renameio/v2 does the work.
//
// It owns nothing but the file it is asked to write and, while it writes, a
// temp file beside it named "." + the file's name + digits.
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
)

// Write makes path hold data with exactly mode (the umask does not apply, and
// the mode of a file already at path is not kept). The data goes to a temp
// file in path's directory, which is synced and renamed over path; the
// directory is then synced too (best effort) so the rename survives a crash.
// On error path is untouched and no temp file is left.
func Write(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	// WithTempDir: without it renameio may stage the file in $TMPDIR;
	// WithStaticPermissions: renameio.WriteFile would keep an existing file's
	// mode, and we want the one asked for.
	f, err := renameio.NewPendingFile(path, renameio.WithTempDir(dir), renameio.WithStaticPermissions(mode))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer f.Cleanup() // no-op after a successful replace
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.CloseAtomicallyReplace(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// IsTemp reports whether name (a base name) is a temp file that Write, killed
// while writing target (also a base name), may have left behind.
func IsTemp(name, target string) bool {
	prefix := "." + target
	if len(name) <= len(prefix) || name[:len(prefix)] != prefix {
		return false
	}
	for _, c := range name[len(prefix):] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
