package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Row is one line of the results table.
type Row struct {
	Section string `json:"section"`
	Name    string `json:"name"`
	// Value is the wgmesh figure, Ref what it is compared with (the
	// reference plugins, the tunnel's or the link's own limit), both in Unit.
	Value float64 `json:"value"`
	Ref   float64 `json:"ref,omitempty"`
	Unit  string  `json:"unit"`
	// Ratio is Value/Ref when Ref is set.
	Ratio float64 `json:"ratio,omitempty"`
	// Goal is the target in words ("<= 1.0x"); Met is nil without a goal.
	Goal string `json:"goal,omitempty"`
	Met  *bool  `json:"met,omitempty"`
	Note string `json:"note,omitempty"`
}

// compared is a row with a reference value and its ratio.
func compared(section, name string, value, ref float64, unit string) Row {
	r := Row{Section: section, Name: name, Value: value, Ref: ref, Unit: unit}
	if ref != 0 {
		r.Ratio = value / ref
	}
	return r
}

// goal sets the goal text and whether met.
func (r Row) goal(text string, met bool) Row {
	r.Goal, r.Met = text, &met
	return r
}

func (r Row) note(s string) Row { r.Note = s; return r }

// Report is one run of the benchmarks.
type Report struct {
	Date    time.Time `json:"date"`
	Machine Machine   `json:"machine"`
	Rows    []Row     `json:"rows"`
	Errors  []string  `json:"errors,omitempty"`
}

// Machine describes where the figures were taken.
type Machine struct {
	CPUs   int    `json:"cpus"`
	Memory string `json:"memory"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
	Load   string `json:"load"`
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func (r Row) cells() []string {
	ref, ratio, met := "", "", ""
	if r.Ref != 0 {
		ref = fmtNum(r.Ref)
	}
	if r.Ratio != 0 {
		ratio = fmt.Sprintf("%.2fx", r.Ratio)
	}
	if r.Met != nil {
		met = map[bool]string{true: "yes", false: "NO"}[*r.Met]
	}
	return []string{r.Section, r.Name, fmtNum(r.Value), ref, r.Unit, ratio, r.Goal, met, r.Note}
}

var header = []string{"section", "measurement", "wgmesh", "reference/limit", "unit", "ratio", "goal", "met", "note"}

// WriteText prints the table with aligned columns.
func (rep *Report) WriteText(w io.Writer) {
	rows := [][]string{header}
	for _, r := range rep.Rows {
		rows = append(rows, r.cells())
	}
	width := make([]int, len(header))
	for _, c := range rows {
		for i, s := range c {
			width[i] = max(width[i], len(s))
		}
	}
	for _, c := range rows {
		var b strings.Builder
		for i, s := range c {
			if i == 2 || i == 3 || i == 5 {
				fmt.Fprintf(&b, "%*s  ", width[i], s)
			} else {
				fmt.Fprintf(&b, "%-*s  ", width[i], s)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(w, "ERROR: %s\n", e)
	}
}

// Markdown is the table as Markdown, with the machine and the date.
func (rep *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run %s on %d CPUs, %s RAM, kernel %s, %s, load average %s.\n\n",
		rep.Date.UTC().Format("2006-01-02 15:04 UTC"), rep.Machine.CPUs, rep.Machine.Memory, rep.Machine.Kernel, rep.Machine.Go, rep.Machine.Load)
	fmt.Fprintf(&b, "| %s |\n", strings.Join(header, " | "))
	fmt.Fprintf(&b, "|%s\n", strings.Repeat(" --- |", len(header)))
	for _, r := range rep.Rows {
		c := r.cells()
		for i := range c {
			c[i] = strings.ReplaceAll(c[i], "|", "\\|")
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(c, " | "))
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(&b, "\nERROR: %s\n", e)
	}
	return b.String()
}

// Save writes bench.md and bench.json (and a dated copy of each) to dir.
func (rep *Report) Save(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, err
	}
	stamp := rep.Date.UTC().Format("20060102-150405")
	var paths []string
	for name, data := range map[string][]byte{"bench.md": []byte(rep.Markdown()), "bench.json": append(js, '\n')} {
		for _, p := range []string{filepath.Join(dir, name), filepath.Join(dir, stamp+"-"+name)} {
			if err := os.WriteFile(p, data, 0o644); err != nil {
				return paths, fmt.Errorf("write %s: %w", p, err)
			}
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	return paths, nil
}
