package hostprep

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/internal/atomicfile"
	"github.com/wgmesh/wgmesh/internal/hostfs"
)

// RecordPath is where, on the host, wgmesh-hostprep keeps the list of what
// it created, so that `undo` removes exactly that and nothing else.
const RecordPath = "/var/lib/wgmesh-hostprep/record.json"

// Entry kinds.
const (
	kindDir     = "dir"
	kindSymlink = "symlink"
	kindFile    = "file"
)

// Entry is one thing wgmesh-hostprep created or replaced on the host.
type Entry struct {
	Kind string `json:"kind"`
	// Path is the host path (already resolved: no symlinks in its parent).
	Path string `json:"path"`
	// Target is a symlink's target.
	Target string `json:"target,omitempty"`
	// SHA256 and Mode are those of a file we wrote.
	SHA256 string      `json:"sha256,omitempty"`
	Mode   fs.FileMode `json:"mode,omitempty"`
	// Previous holds a file we replaced, to put it back on undo.
	Previous *PreviousFile `json:"previous,omitempty"`
	// Check is the id of the check whose fix made this.
	Check   string    `json:"check"`
	Created time.Time `json:"created"`
}

// PreviousFile is a replaced file's content and permission bits.
type PreviousFile struct {
	Content []byte      `json:"content"`
	Mode    fs.FileMode `json:"mode"`
}

// Record is the on-host list of changes, oldest first.
type Record struct {
	Entries []Entry `json:"entries"`
}

// fixer applies changes to the host and remembers each in the record.
type fixer struct {
	root    hostfs.Root
	log     *slog.Logger
	now     func() time.Time
	record  Record
	dirty   bool
	loaded  bool
	checkID string // the check being fixed, stamped on new entries
}

var errExists = errors.New("already exists; not replaced")

func (f *fixer) load() error {
	if f.loaded {
		return nil
	}
	b, err := f.root.ReadFile(RecordPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("read record: %w", err)
	default:
		if err := json.Unmarshal(b, &f.record); err != nil {
			return fmt.Errorf("parse record %s: %w", RecordPath, err)
		}
	}
	f.loaded = true
	return nil
}

func (f *fixer) add(e Entry) {
	e.Check = f.checkID
	e.Created = f.now().UTC()
	f.record.Entries = append(f.record.Entries, e)
	f.dirty = true
}

// owns reports whether the record lists a symlink we made at p.
func (f *fixer) owns(p string) bool {
	for _, e := range f.record.Entries {
		if e.Path == p {
			return true
		}
	}
	return false
}

// mkdirAll makes the host directory p and its missing parents, recording
// each directory it creates. It returns the resolved host path.
func (f *fixer) mkdirAll(p string) (string, error) {
	res, err := f.root.Resolve(p)
	if err != nil {
		return "", err
	}
	if res.Exists {
		fi, err := os.Stat(f.root.Join(res.Path))
		if err != nil {
			return "", err
		}
		if !fi.IsDir() {
			return "", fmt.Errorf("%s leads to %s, which is not a directory", p, res.Path)
		}
		return res.Path, nil
	}
	// res.Path is the resolved existing prefix plus a lexical remainder.
	cur := "/"
	for _, part := range strings.Split(strings.Trim(res.Path, "/"), "/") {
		cur = path.Join(cur, part)
		err := os.Mkdir(f.root.Join(cur), 0o755)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("create directory %s: %w", cur, err)
		}
		f.add(Entry{Kind: kindDir, Path: cur})
		f.log.Info("host changed", "check", f.checkID, "created", "directory", "path", cur)
	}
	return res.Path, nil
}

// symlink creates host path link -> target unless something is there.
func (f *fixer) symlink(link, target string) (string, error) {
	dir, err := f.mkdirAll(path.Dir(link))
	if err != nil {
		return "", err
	}
	p := path.Join(dir, path.Base(link))
	if err := os.Symlink(target, f.root.Join(p)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("create symlink %s: %w", p, errExists)
		}
		return "", fmt.Errorf("create symlink %s: %w", p, err)
	}
	f.add(Entry{Kind: kindSymlink, Path: p, Target: target})
	f.log.Info("host changed", "check", f.checkID, "created", "symlink", "path", p, "target", target)
	return p, nil
}

// writeFile atomically writes a regular host file (temp file created with
// the final mode, fsync, rename), remembering a file it replaces. It
// refuses to write through a symlink.
func (f *fixer) writeFile(p string, content []byte, mode fs.FileMode) (string, error) {
	dir, err := f.mkdirAll(path.Dir(p))
	if err != nil {
		return "", err
	}
	p = path.Join(dir, path.Base(p))
	local := f.root.Join(p)
	var prev *PreviousFile
	fi, err := os.Lstat(local)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", err
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("write %s: it is a %s, not a regular file; not replaced", p, fi.Mode().Type())
	default:
		old, err := os.ReadFile(local)
		if err != nil {
			return "", fmt.Errorf("keep a copy of %s: %w", p, err)
		}
		prev = &PreviousFile{Content: old, Mode: fi.Mode().Perm()}
	}
	if err := atomicfile.Write(local, content, mode); err != nil {
		return "", err
	}
	sum := sha256.Sum256(content)
	f.add(Entry{Kind: kindFile, Path: p, SHA256: hex.EncodeToString(sum[:]), Mode: mode, Previous: prev})
	f.log.Info("host changed", "check", f.checkID, "wrote", "file", "path", p, "mode", fmt.Sprintf("%04o", mode), "replaced", prev != nil)
	return p, nil
}

// save writes the record if anything changed.
func (f *fixer) save() error {
	if !f.dirty {
		return nil
	}
	id := f.checkID
	f.checkID = "record"
	dir, err := f.mkdirAll(path.Dir(RecordPath))
	f.checkID = id
	if err != nil {
		return fmt.Errorf("save record: %w", err)
	}
	b, err := json.MarshalIndent(f.record, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(f.root.Join(path.Join(dir, path.Base(RecordPath))), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save record: %w", err)
	}
	f.dirty = false
	return nil
}

// UndoResult says what undo did.
type UndoResult struct {
	Removed  []string `json:"removed"`
	Restored []string `json:"restored"`
	// Kept lists entries left in place because they changed since we
	// made them (they stay in the record).
	Kept []string `json:"kept"`
}

// Undo removes exactly what the record lists, newest first: a symlink only
// if it still points where we pointed it, a file only if it still holds
// what we wrote (a file we replaced is put back), a directory only if it is
// empty. The record goes when nothing is left in it.
func Undo(root hostfs.Root, log *slog.Logger) (UndoResult, error) {
	f := &fixer{root: root, log: log, now: time.Now}
	var out UndoResult
	if fi, err := os.Stat(root.Dir); err != nil {
		return out, fmt.Errorf("host root: %w", err)
	} else if !fi.IsDir() {
		return out, fmt.Errorf("host root %s is not a directory", root.Dir)
	}
	if err := f.load(); err != nil {
		return out, err
	}
	entries := f.record.Entries
	var keep []Entry
	var dirs []Entry
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		local := root.Join(e.Path)
		switch e.Kind {
		case kindDir:
			dirs = append(dirs, e)
		case kindSymlink:
			target, err := os.Readlink(local)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				out.Removed = append(out.Removed, e.Path+" (already gone)")
			case err != nil || target != e.Target:
				out.Kept = append(out.Kept, fmt.Sprintf("%s: no longer a symlink to %s", e.Path, e.Target))
				keep = append(keep, e)
			default:
				if err := os.Remove(local); err != nil {
					return out, fmt.Errorf("remove %s: %w", e.Path, err)
				}
				log.Info("host changed", "undo", "removed symlink", "path", e.Path, "target", e.Target)
				out.Removed = append(out.Removed, e.Path)
			}
		case kindFile:
			cur, err := os.ReadFile(local)
			sum := sha256.Sum256(cur)
			switch {
			case errors.Is(err, fs.ErrNotExist) && e.Previous == nil:
				out.Removed = append(out.Removed, e.Path+" (already gone)")
			case err != nil && !errors.Is(err, fs.ErrNotExist), err == nil && hex.EncodeToString(sum[:]) != e.SHA256:
				out.Kept = append(out.Kept, fmt.Sprintf("%s: changed since wgmesh-hostprep wrote it", e.Path))
				keep = append(keep, e)
			case e.Previous != nil:
				if err := atomicfile.Write(local, e.Previous.Content, e.Previous.Mode); err != nil {
					return out, err
				}
				log.Info("host changed", "undo", "restored file", "path", e.Path)
				out.Restored = append(out.Restored, e.Path)
			default:
				if err := os.Remove(local); err != nil {
					return out, fmt.Errorf("remove %s: %w", e.Path, err)
				}
				log.Info("host changed", "undo", "removed file", "path", e.Path)
				out.Removed = append(out.Removed, e.Path)
			}
		default:
			keep = append(keep, e)
		}
	}
	if len(keep) == 0 {
		if err := os.Remove(root.Join(RecordPath)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return out, fmt.Errorf("remove record: %w", err)
		}
	}
	for _, e := range dirs {
		err := os.Remove(root.Join(e.Path))
		switch {
		case err == nil, errors.Is(err, fs.ErrNotExist):
			log.Info("host changed", "undo", "removed directory", "path", e.Path)
			out.Removed = append(out.Removed, e.Path+"/")
		default:
			// Not empty (someone put something there, or entries we kept).
			out.Kept = append(out.Kept, fmt.Sprintf("%s/: not empty", e.Path))
			keep = append(keep, e)
		}
	}
	if len(keep) > 0 {
		// Oldest first again, like the record was.
		for i, j := 0, len(keep)-1; i < j; i, j = i+1, j-1 {
			keep[i], keep[j] = keep[j], keep[i]
		}
		f.record.Entries = keep
		f.dirty = true
		if err := f.save(); err != nil {
			return out, err
		}
	}
	return out, nil
}
