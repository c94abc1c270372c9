package figures

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestWriteNamesTheRunAndFlagsFailedTests(t *testing.T) {
	var s Set
	var wg sync.WaitGroup
	wg.Go(func() { s.Add("TestJoin", "join convergence: 790ms") })
	wg.Wait()
	s.Add("TestRestart", "agent restart: 3 of 800 pings lost")
	s.MarkFailed("TestRestart")
	dir := filepath.Join(t.TempDir(), "results")
	r := Run{Time: time.Date(2026, 12, 2, 17, 5, 1, 0, time.UTC), Commit: "40b8d7f0a1b2", Dirty: true, Filter: "TestJoin|TestRestart", Load: "1.00 2.00 3.00", CPUs: 2, Command: "make e2e"}
	path, err := Write(dir, r, s.Figures())
	if err != nil {
		t.Fatal(err)
	}
	want := `# FIGURE lines of make e2e, written by its TestMain (test/e2e/figures).
# date: 2026-12-02T17:05:01Z
# commit: 40b8d7f0a1b2 (with changes not committed)
# run: -run 'TestJoin|TestRestart'
# machine: 2 CPUs, load average 1.00 2.00 3.00 at the end (figures are times on a shared machine, not assertions)
TestJoin: join convergence: 790ms
TestRestart: agent restart: 3 of 800 pings lost (the test failed)
`
	for _, p := range []string{path, filepath.Join(dir, "20261202-170501-e2e-figures.txt")} {
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s:\n%s\nwant\n%s", p, got, want)
		}
	}
	if path != filepath.Join(dir, FileName) {
		t.Errorf("path %s", path)
	}
}

func TestResultsDirIsAtTheModuleTop(t *testing.T) {
	top := t.TempDir()
	deep := filepath.Join(top, "test", "e2e")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(top, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WGMESH_RESULTS_DIR", "")
	if d, err := ResultsDir(deep); err != nil || d != filepath.Join(top, "results") {
		t.Errorf("ResultsDir = %s, %v", d, err)
	}
	t.Setenv("WGMESH_RESULTS_DIR", "/elsewhere")
	if d, _ := ResultsDir(deep); d != "/elsewhere" {
		t.Errorf("with WGMESH_RESULTS_DIR: %s", d)
	}
}
