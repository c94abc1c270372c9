// Package figures collects the FIGURE lines that the e2e scenarios measure
// (convergence times, packets lost) and writes them, with the date, the
// commit and the machine's load, to a results file, so that the docs point
// at what the last run measured instead of retyping it.
//
// It owns that file only; it runs nothing and measures nothing.
package figures

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/internal/atomicfile"
)

// FileName is the file Write makes in the results directory; a copy named
// after the UTC time of the run stays beside it.
const FileName = "e2e-figures.txt"

// Figure is one measured line of one test.
type Figure struct {
	Test   string
	Text   string
	Failed bool // the test that measured it failed
}

// Set collects figures from tests running in parallel.
type Set struct {
	mu   sync.Mutex
	figs []Figure
}

// Add records text, measured by test.
func (s *Set) Add(test, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.figs = append(s.figs, Figure{Test: test, Text: text})
}

// MarkFailed marks the figures of test: a figure of a failed test is kept,
// but flagged, since it may measure the failure rather than the product.
func (s *Set) MarkFailed(test string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.figs {
		if s.figs[i].Test == test {
			s.figs[i].Failed = true
		}
	}
}

// Figures returns a copy of what was recorded, in order.
func (s *Set) Figures() []Figure {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Figure(nil), s.figs...)
}

// Run describes the run the figures come from.
type Run struct {
	Time    time.Time
	Commit  string // short hash; "" when unknown
	Dirty   bool   // the tree had changes not committed
	Filter  string // the -run filter; "" = every scenario
	Load    string // /proc/loadavg's first three fields at the end
	CPUs    int
	Command string // how the figures were produced
}

// Format renders the file: a header saying when, on what and from which
// commit, then one line per figure.
func Format(r Run, figs []Figure) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# FIGURE lines of %s, written by its TestMain (test/e2e/figures).\n", r.Command)
	fmt.Fprintf(&b, "# date: %s\n", r.Time.UTC().Format(time.RFC3339))
	commit := r.Commit
	if commit == "" {
		commit = "unknown"
	}
	if r.Dirty {
		commit += " (with changes not committed)"
	}
	fmt.Fprintf(&b, "# commit: %s\n", commit)
	run := "every scenario"
	if r.Filter != "" {
		run = "-run '" + r.Filter + "'"
	}
	fmt.Fprintf(&b, "# run: %s\n", run)
	fmt.Fprintf(&b, "# machine: %d CPUs, load average %s at the end (figures are times on a shared machine, not assertions)\n", r.CPUs, r.Load)
	for _, f := range figs {
		mark := ""
		if f.Failed {
			mark = " (the test failed)"
		}
		fmt.Fprintf(&b, "%s: %s%s\n", f.Test, f.Text, mark)
	}
	return b.Bytes()
}

// Write writes figs as dir/FileName and as a copy named after r.Time
// (dir/20261202-170501-e2e-figures.txt), and returns the first path.
func Write(dir string, r Run, figs []Figure) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	data := Format(r, figs)
	latest := filepath.Join(dir, FileName)
	dated := filepath.Join(dir, r.Time.UTC().Format("20060102-150405")+"-"+FileName)
	for _, p := range []string{latest, dated} {
		if err := atomicfile.Write(p, data, 0o644); err != nil {
			return "", err
		}
	}
	return latest, nil
}

// ThisRun fills Run from the environment of the test binary: the time, the
// commit of the checkout holding dir, the load and the CPUs.
func ThisRun(dir, filter, command string) Run {
	r := Run{Time: time.Now(), Filter: filter, CPUs: runtime.NumCPU(), Command: command}
	if out, err := exec.Command("git", "-C", dir, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		r.Commit = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "-C", dir, "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
		r.Dirty = len(bytes.TrimSpace(out)) > 0
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			r.Load = strings.Join(f[:3], " ")
		}
	}
	return r
}

// ResultsDir is where the figures go: $WGMESH_RESULTS_DIR, else results/
// at the top of the module that holds dir (the test's working directory).
func ResultsDir(dir string) (string, error) {
	if d := os.Getenv("WGMESH_RESULTS_DIR"); d != "" {
		return d, nil
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "results"), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s: set WGMESH_RESULTS_DIR", dir)
		}
	}
}
