package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRowGoalsAndRatio(t *testing.T) {
	r := compared("s", "n", 9, 10, "Gbit/s").goalAtLeast(0.9)
	if r.Ratio != 0.9 || r.Met == nil || !*r.Met {
		t.Errorf("9/10 against >= 0.9x: %+v", r)
	}
	r = compared("s", "n", 11, 10, "ms").goalAtMost(1.0)
	if r.Met == nil || *r.Met {
		t.Errorf("11/10 against <= 1.0x should miss: %+v", r)
	}
}

func TestReportIsOneTableInEveryFormat(t *testing.T) {
	rep := &Report{Date: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), Machine: Machine{CPUs: 2, Memory: "24Gi", Kernel: "6.1", Go: "go1.26"},
		Rows: []Row{
			compared("pod setup", "p50", 10, 12, "ms").goalAtMost(1),
			{Section: "agent", Name: "a | b", Value: 3, Unit: "MiB", Note: "x"},
		}}
	var text bytes.Buffer
	rep.WriteText(&text)
	if lines := strings.Split(strings.TrimSpace(text.String()), "\n"); len(lines) != 3 {
		t.Errorf("text table has %d lines, want header + 2:\n%s", len(lines), text.String())
	}
	md := rep.Markdown()
	if !strings.Contains(md, "| pod setup | p50 | 10.0 | 12.0 | ms | 0.83x | <= 1.0x | yes |") || !strings.Contains(md, `a \| b`) {
		t.Errorf("markdown:\n%s", md)
	}
	dir := t.TempDir()
	paths, err := rep.Save(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 4 {
		t.Errorf("saved %v", paths)
	}
	b, err := os.ReadFile(filepath.Join(dir, "bench.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || len(back.Rows) != 2 || *back.Rows[0].Met != true {
		t.Errorf("json round trip: %v %+v", err, back)
	}
}
