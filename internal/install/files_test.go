package install

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestWriteAtomicLeavesNoTempAndSkipsIdenticalContent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "wgmesh")
	changed, err := writeAtomic(path, []byte("v1"), 0o755)
	if err != nil || !changed {
		t.Fatalf("first write: changed=%v err=%v", changed, err)
	}
	if names := listDir(t, dir); len(names) != 1 || names[0] != "wgmesh" {
		t.Fatalf("dir holds %q, want only wgmesh", names)
	}
	ino := inode(t, path)
	changed, err = writeAtomic(path, []byte("v1"), 0o755)
	if err != nil || changed {
		t.Fatalf("identical write: changed=%v err=%v, want unchanged", changed, err)
	}
	if inode(t, path) != ino {
		t.Error("identical write replaced the file")
	}
	// A mode change alone is a change.
	if changed, err := writeAtomic(path, []byte("v1"), 0o644); err != nil || !changed {
		t.Fatalf("mode change: changed=%v err=%v", changed, err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
}

func TestWriteAtomicReplacesASymlinkNotItsTarget(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("theirs"), 0o755)
	link := filepath.Join(dir, "wgmesh")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := writeAtomic(link, []byte("ours"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(target); string(got) != "theirs" {
		t.Errorf("symlink target rewritten to %q", got)
	}
	if fi, _ := os.Lstat(link); !fi.Mode().IsRegular() {
		t.Errorf("%s is %v, want a regular file", link, fi.Mode())
	}
}

// A reader that opens the file while it is being replaced over and over sees
// one whole version or the other, never a mix or a truncated file.
func TestWriteAtomicReaderNeverSeesPartialFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "wgmesh-ipam")
	a := bytes.Repeat([]byte("A"), 4<<20)
	b := bytes.Repeat([]byte("B"), 3<<20)
	if _, err := writeAtomic(path, a, 0o755); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads, bad atomic.Int64
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				got, err := os.ReadFile(path)
				if err != nil {
					bad.Add(1)
					continue
				}
				reads.Add(1)
				if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
					bad.Add(1)
				}
			}
		}()
	}
	for i := range 40 {
		data := a
		if i%2 == 0 {
			data = b
		}
		if _, err := writeAtomic(path, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of %d reads saw a missing or partial file", bad.Load(), reads.Load()+bad.Load())
	}
	if reads.Load() == 0 {
		t.Fatal("the readers never read")
	}
	if names := listDir(t, dir); len(names) != 1 {
		t.Fatalf("dir holds %q, want only the file", names)
	}
}

func TestWriteAtomicFailureLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	// A directory where the file should be: the rename fails.
	path := filepath.Join(dir, "10-wgmesh.conflist")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(path, "keep"), nil, 0o644)
	if _, err := writeAtomic(path, []byte("{}"), 0o644); err == nil {
		t.Fatal("write over a non-empty directory succeeded")
	}
	if names := listDir(t, dir); len(names) != 1 || names[0] != "10-wgmesh.conflist" {
		t.Fatalf("dir holds %q after a failed write", names)
	}
}

func TestRemoveStaleTempsOnlyRemovesOurs(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{
		".wgmesh" + tempMarker + "123", ".10-wgmesh.conflist" + tempMarker + "9", // an older install's
		".wgmesh8123", ".10-wgmesh.conflist77", // atomicfile's, for the names given
		".portmap42", ".wgmesh-ipam", ".wgmesh12x", // not for the names given, or not a temp name
		"portmap", ".hidden", "x" + tempMarker,
	} {
		os.WriteFile(filepath.Join(dir, name), nil, 0o644)
	}
	if err := removeStaleTemps(dir, "wgmesh", "10-wgmesh.conflist"); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(listDir(t, dir), " ")
	if want := ".hidden .portmap42 .wgmesh-ipam .wgmesh12x portmap x" + tempMarker; got != want {
		t.Errorf("left %q, want %q", got, want)
	}
}
