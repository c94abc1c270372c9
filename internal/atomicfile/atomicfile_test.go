package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteSetsExactModeOverExistingFile(t *testing.T) {
	old := syscall.Umask(0o077)
	t.Cleanup(func() { syscall.Umask(old) })
	dir := t.TempDir()
	path := filepath.Join(dir, "f.conf")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("new"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "new" {
		t.Fatalf("content %q, %v", b, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755 (umask and the old mode must not apply)", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("dir holds %d entries, want only the file", len(entries))
	}
}

func TestWriteFailureLeavesTargetAndNoTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "target")
	// A non-empty directory at path: the rename fails.
	if err := os.MkdirAll(filepath.Join(path, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("x"), 0o644); err == nil {
		t.Fatal("write over a non-empty directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "target" || !entries[0].IsDir() {
		t.Errorf("dir holds %v after a failed write", entries)
	}
}

func TestIsTemp(t *testing.T) {
	for _, c := range []struct {
		name, target string
		want         bool
	}{
		{".10-wgmesh.conflist8123456", "10-wgmesh.conflist", true},
		{".wgmesh0", "wgmesh", true},
		{".wgmesh", "wgmesh", false},
		{"wgmesh123", "wgmesh", false},
		{".wgmesh-ipam123", "wgmesh", false},
		{".wgmesh12a", "wgmesh", false},
	} {
		if got := IsTemp(c.name, c.target); got != c.want {
			t.Errorf("IsTemp(%q, %q) = %v, want %v", c.name, c.target, got, c.want)
		}
	}
}
