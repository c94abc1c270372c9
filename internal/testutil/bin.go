package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// CacheBinDir is where `make k8s-bin` (test/e2e/tools/build-k8s.sh) puts the
// Kubernetes programs it builds: $WGMESH_CACHE/bin, by default
// ~/.cache/wgmesh/bin. The Makefile exports WGMESH_CACHE to every test.
func CacheBinDir() string {
	cache := os.Getenv("WGMESH_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		cache = filepath.Join(home, ".cache", "wgmesh")
	}
	return filepath.Join(cache, "bin")
}

// Program finds a program the test needs: first in CacheBinDir (so a CI
// machine uses what `make k8s-bin` built, whatever else is installed), then
// on PATH. When neither has it the test skips with why, except under
// CI=true: .ci/run builds these programs before the tests, so a missing one
// there is a broken CI and must fail, not hide a test.
func Program(t testing.TB, name, why string) string {
	t.Helper()
	if dir := CacheBinDir(); dir != "" {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	SkipUnlessCI(t, name+" is neither in "+CacheBinDir()+" (make k8s-bin builds it) nor on PATH: "+why)
	return ""
}

// SkipUnlessCI skips t with reason, or fails it under CI=true, where every
// test is meant to run and a skip would hide a failure.
func SkipUnlessCI(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true, so this test may not skip: %s", reason)
	}
	t.Skip(reason)
}
