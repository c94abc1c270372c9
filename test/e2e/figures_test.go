//go:build e2e

package e2e

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/wgmesh/wgmesh/test/e2e/figures"
)

// figs collects the FIGURE lines of this run; TestMain writes them to
// results/e2e-figures.txt.
var figs figures.Set

// figure prints a measured figure in the test's log as "FIGURE ..." and
// records it for results/e2e-figures.txt; a figure of a test that then
// fails is flagged there.
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	text := fmt.Sprintf(format, args...)
	t.Log("FIGURE " + text)
	figs.Add(t.Name(), text)
	t.Cleanup(func() {
		if t.Failed() {
			figs.MarkFailed(t.Name())
		}
	})
}

// writeFigures writes what the scenarios measured, if they measured
// anything (a run of other scenarios leaves the last file alone).
func writeFigures() {
	all := figs.Figures()
	if len(all) == 0 {
		return
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "figures not written:", err)
		return
	}
	dir, err := figures.ResultsDir(wd)
	if err != nil {
		fmt.Fprintln(os.Stderr, "figures not written:", err)
		return
	}
	filter := ""
	if f := flag.Lookup("test.run"); f != nil {
		filter = f.Value.String()
	}
	path, err := figures.Write(dir, figures.ThisRun(wd, filter, "make e2e"), all)
	if err != nil {
		fmt.Fprintln(os.Stderr, "figures not written:", err)
		return
	}
	fmt.Printf("%d figures written to %s\n", len(all), path)
}
