package conformance

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// A trimmed report as e2e.test --report-dir writes it (Ginkgo v2).
const sampleJUnit = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="5" disabled="3" errors="0" failures="1" time="100">
  <testsuite name="Kubernetes e2e suite" package="/" tests="5" disabled="0" skipped="3" errors="0" failures="1" time="100">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1.5"></testcase>
    <testcase name="[ReportAfterSuite] Kubernetes e2e suite report" classname="Kubernetes e2e suite" status="failed" time="0"><failure message="" type="failed">[FAILED] could not write the report</failure></testcase>
    <testcase name="[It] [sig-network] DNS should provide DNS for services  [Conformance]" classname="Kubernetes e2e suite" status="failed" time="62">
      <failure message="[FAILED] timed out&#xA;second line" type="failed">[FAILED] timed out
details</failure>
    </testcase>
    <testcase name="[It] [sig-network] Networking Granular Checks: Pods should function for intra-pod communication: udp [NodeConformance] [Conformance]" classname="Kubernetes e2e suite" status="passed" time="30.2"></testcase>
    <testcase name="[It] [sig-apps] Deployment should run" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
    <testcase name="[It] [sig-network] Services should work with a cloud LB" classname="Kubernetes e2e suite" status="skipped" time="0.1"><skipped message="skipped - Only supported for providers [gce] (not skeleton)"></skipped></testcase>
  </testsuite>
</testsuites>`

func TestParseJUnit(t *testing.T) {
	s, err := ParseJUnit(strings.NewReader(sampleJUnit))
	if err != nil {
		t.Fatal(err)
	}
	if s.NotSelected != 1 || s.SuiteNodes != 1 {
		t.Errorf("NotSelected = %d, SuiteNodes = %d, want 1 and 1", s.NotSelected, s.SuiteNodes)
	}
	got := map[string]Result{}
	for _, r := range s.Results {
		got[r.Name] = r
	}
	want := []Result{
		{Name: "[ReportAfterSuite] Kubernetes e2e suite report", Outcome: Failed, Reason: "[FAILED] could not write the report"},
		{Name: "[sig-network] DNS should provide DNS for services  [Conformance]", Outcome: Failed, Reason: "[FAILED] timed out", Time: 62 * time.Second},
		{Name: "[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: udp [NodeConformance] [Conformance]", Outcome: Passed, Time: 30200 * time.Millisecond},
		{Name: "[sig-network] Services should work with a cloud LB", Outcome: Skipped, Reason: "Only supported for providers [gce] (not skeleton)", Time: 100 * time.Millisecond},
	}
	if len(s.Results) != len(want) {
		t.Fatalf("%d results, want %d: %+v", len(s.Results), len(want), s.Results)
	}
	for _, w := range want {
		if g := got[w.Name]; g != w {
			t.Errorf("got %+v\nwant %+v", g, w)
		}
	}
	if s.Count(Passed) != 1 || s.Count(Failed) != 2 || s.Count(Skipped) != 1 {
		t.Errorf("counts %d/%d/%d", s.Count(Passed), s.Count(Failed), s.Count(Skipped))
	}
}

func TestParseJUnitRejectsGarbage(t *testing.T) {
	if _, err := ParseJUnit(strings.NewReader("not xml")); err == nil {
		t.Error("no error for a report that is not XML")
	}
}

func TestSummaryMarkdownListsEveryOutcome(t *testing.T) {
	s, err := ParseJUnit(strings.NewReader(sampleJUnit))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := s.WriteMarkdown(&b, RunInfo{Date: time.Date(2026, 12, 2, 17, 0, 0, 0, time.UTC), K8sVersion: "v1.37.2", Focus: DefaultFocus,
		NoSCTP: "protocol not supported"}); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"# make conformance: 2026-12-02 17:00 UTC",
		"1 passed, 2 failed, 1 skipped (1 tests of the suite not selected)",
		"| failed | [sig-network] DNS should provide DNS for services  [Conformance] | [FAILED] timed out |",
		"| skipped | [sig-network] Services should work with a cloud LB | Only supported for providers [gce] (not skeleton) |",
		"| passed | [sig-network] Networking Granular Checks: Pods should function for intra-pod communication: udp",
		"- this kernel has no SCTP (protocol not supported): the suite's [Feature:SCTPConnectivity] tests cannot pass here",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
	// Failures come first.
	if strings.Index(md, "| failed |") > strings.Index(md, "| passed |") {
		t.Errorf("failures are not listed first:\n%s", md)
	}
}
