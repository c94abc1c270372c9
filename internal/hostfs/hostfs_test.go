package hostfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// mk builds a tree: entries ending in "/" are directories, "->" makes a
// symlink, anything else a file with the given mode.
func mkfile(t *testing.T, root, p string, mode os.FileMode) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte("#!/bin/sh\n"), mode); err != nil {
		t.Fatal(err)
	}
}

func mklink(t *testing.T, root, p, target string) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		t.Fatal(err)
	}
}

func TestResolveAbsoluteLinkStaysInRoot(t *testing.T) {
	root := t.TempDir()
	mkfile(t, root, "nix/store/abc-open-iscsi/bin/iscsiadm", 0o755)
	mklink(t, root, "run/current-system", "/nix/store/xyz-nixos-system")
	mklink(t, root, "nix/store/xyz-nixos-system/sw", "/nix/store/def-system-path")
	mklink(t, root, "nix/store/def-system-path/bin/iscsiadm", "/nix/store/abc-open-iscsi/bin/iscsiadm")
	r := Root{Dir: root}
	res, err := r.Resolve("/run/current-system/sw/bin/iscsiadm")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Exists || res.Path != "/nix/store/abc-open-iscsi/bin/iscsiadm" {
		t.Fatalf("Resolve = %+v", res)
	}
	if len(res.Links) != 3 {
		t.Fatalf("links = %+v, want 3", res.Links)
	}
}

func TestResolveDotDotClampedAtRoot(t *testing.T) {
	root := t.TempDir()
	mkfile(t, root, "etc/os-release", 0o644)
	mklink(t, root, "a/escape", "../../../../../etc/os-release")
	r := Root{Dir: root}
	res, err := r.Resolve("/a/escape")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Exists || res.Path != "/etc/os-release" {
		t.Fatalf("Resolve = %+v, want /etc/os-release inside the root", res)
	}
	res, err = r.Resolve("/../../etc/os-release")
	if err != nil || res.Path != "/etc/os-release" {
		t.Fatalf("Resolve(/../../etc/os-release) = %+v, %v", res, err)
	}
}

func TestResolveLoopAndMissing(t *testing.T) {
	root := t.TempDir()
	mklink(t, root, "loop/a", "b")
	mklink(t, root, "loop/b", "/loop/a")
	mklink(t, root, "dangling", "/nowhere/x")
	mkfile(t, root, "file", 0o644)
	r := Root{Dir: root}
	if _, err := r.Resolve("/loop/a"); !errors.Is(err, ErrTooManyLinks) {
		t.Fatalf("loop: err = %v, want ErrTooManyLinks", err)
	}
	res, err := r.Resolve("/dangling")
	if err != nil || res.Exists || res.Path != "/nowhere/x" {
		t.Fatalf("dangling: %+v, %v", res, err)
	}
	res, err = r.Resolve("/file/below")
	if err != nil || res.Exists {
		t.Fatalf("below a file: %+v, %v", res, err)
	}
}

func TestLookPathLikeExecvp(t *testing.T) {
	root := t.TempDir()
	mkfile(t, root, "usr/sbin/notexec", 0o644)
	mkfile(t, root, "usr/bin/notexec", 0o755)
	if err := os.MkdirAll(filepath.Join(root, "usr/sbin/isdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	mkfile(t, root, "usr/bin/isdir", 0o755)
	mklink(t, root, "sbin", "usr/sbin")
	mkfile(t, root, "usr/sbin/blkid", 0o755)
	mklink(t, root, "usr/local/sbin/broken", "/does/not/exist")
	mkfile(t, root, "bin/broken", 0o755)
	r := Root{Dir: root}
	dirs := SplitPath("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	for name, want := range map[string]string{
		"notexec": "/usr/bin/notexec",
		"isdir":   "/usr/bin/isdir",
		"blkid":   "/usr/sbin/blkid",
		"broken":  "/bin/broken",
	} {
		p, err := r.LookPath(name, dirs)
		if err != nil || p.Path != want {
			t.Errorf("LookPath(%s) = %+v, %v; want %s", name, p, err, want)
		}
	}
	p, err := r.LookPath("blkid", []string{"/sbin"})
	if err != nil || p.Path != "/sbin/blkid" || p.Resolved != "/usr/sbin/blkid" {
		t.Errorf("LookPath via /sbin link = %+v, %v", p, err)
	}
	if _, err := r.LookPath("iscsiadm", dirs); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing program: err = %v, want ErrNotExist", err)
	}
}
