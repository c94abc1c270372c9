package conformance

import (
	"encoding/xml"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Outcome is what became of one test of the suite.
type Outcome string

const (
	Passed  Outcome = "passed"
	Failed  Outcome = "failed"
	Skipped Outcome = "skipped"
)

// Result is one test the run selected: its upstream name and outcome, with
// the reason of a failure or a skip (first line of the message).
type Result struct {
	Name    string
	Outcome Outcome
	Reason  string
	Time    time.Duration
}

// Summary is a run's account from its JUnit report.
type Summary struct {
	Results []Result
	// NotSelected counts the suite's tests that FOCUS/SKIP left out (the
	// report lists them as skipped with no reason).
	NotSelected int
	// SuiteNodes counts the suite's own setup and report nodes
	// ([SynchronizedBeforeSuite], [ReportAfterSuite] ...) that passed; one
	// that failed is a Result, since the tests after it may not have run.
	SuiteNodes int
}

// Count is how many selected tests ended with o.
func (s Summary) Count(o Outcome) int {
	n := 0
	for _, r := range s.Results {
		if r.Outcome == o {
			n++
		}
	}
	return n
}

// junitSuites is the part of Ginkgo's JUnit report the summary reads.
type junitSuites struct {
	Suites []struct {
		Cases []struct {
			Name    string  `xml:"name,attr"`
			Status  string  `xml:"status,attr"`
			Time    float64 `xml:"time,attr"`
			Skipped *struct {
				Message string `xml:"message,attr"`
			} `xml:"skipped"`
			Failure *struct {
				Message string `xml:"message,attr"`
				Body    string `xml:",chardata"`
			} `xml:"failure"`
			Error *struct {
				Message string `xml:"message,attr"`
				Body    string `xml:",chardata"`
			} `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// ParseJUnit reads a Ginkgo JUnit report (e2e.test --report-dir writes
// junit_01.xml). Ginkgo reports a test left out by the focus as skipped
// with the bare message "skipped", and one that skipped itself at run time
// as "skipped - <reason>": the first are counted in NotSelected, the
// second are Results. Tests are the report's "[It] ..." entries; the
// suite's own nodes count only when they fail.
func ParseJUnit(r io.Reader) (Summary, error) {
	var doc junitSuites
	if err := xml.NewDecoder(r).Decode(&doc); err != nil {
		return Summary{}, fmt.Errorf("conformance: junit report: %w", err)
	}
	var s Summary
	for _, suite := range doc.Suites {
		for _, c := range suite.Cases {
			name, isTest := strings.CutPrefix(c.Name, "[It] ")
			res := Result{Name: name, Time: time.Duration(c.Time * float64(time.Second))}
			switch {
			case c.Failure != nil:
				res.Outcome, res.Reason = Failed, firstLine(c.Failure.Message, c.Failure.Body)
			case c.Error != nil:
				res.Outcome, res.Reason = Failed, firstLine(c.Error.Message, c.Error.Body)
			case c.Skipped != nil || c.Status == "skipped":
				msg := ""
				if c.Skipped != nil {
					msg = c.Skipped.Message
				}
				reason, ranAndSkipped := strings.CutPrefix(msg, "skipped - ")
				if !ranAndSkipped {
					s.NotSelected++
					continue
				}
				res.Outcome, res.Reason = Skipped, firstLine(reason)
			case c.Status == "" || c.Status == "passed":
				res.Outcome = Passed
			default: // panicked, interrupted, aborted, timedout
				res.Outcome, res.Reason = Failed, c.Status
			}
			if !isTest && res.Outcome != Failed {
				s.SuiteNodes++
				continue
			}
			s.Results = append(s.Results, res)
		}
	}
	sort.SliceStable(s.Results, func(i, j int) bool { return s.Results[i].Name < s.Results[j].Name })
	return s, nil
}

// firstLine is the first non-empty line among texts.
func firstLine(texts ...string) string {
	for _, t := range texts {
		for _, line := range strings.Split(t, "\n") {
			if line = strings.TrimSpace(line); line != "" {
				return line
			}
		}
	}
	return ""
}

// RunInfo is what the summary says about the run besides the results.
type RunInfo struct {
	Date                 time.Time
	K8sVersion           string
	Focus, Skip          string
	Nodes                int
	ProxyMode            string
	WgmeshCommit         string
	Duration             time.Duration
	SuiteExit            string
	JUnitPath, SuiteLogs string
	// NoSCTP is why the kernel cannot open SCTP sockets ("" when it can; KernelSCTP).
	NoSCTP string
}

// WriteMarkdown writes the summary: the counts, then every selected test
// with its outcome and, for a failure or a skip, the reason.
func (s Summary) WriteMarkdown(w io.Writer, info RunInfo) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# make conformance: %s\n\n", info.Date.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- Kubernetes e2e suite %s, wgmesh %s, %d kubelet nodes (containerd, kube-proxy %s mode)\n",
		info.K8sVersion, info.WgmeshCommit, info.Nodes, info.ProxyMode)
	fmt.Fprintf(&b, "- focus `%s`, skip `%s`\n", info.Focus, info.Skip)
	fmt.Fprintf(&b, "- %d passed, %d failed, %d skipped (%d tests of the suite not selected); suite ran %s, exit: %s\n",
		s.Count(Passed), s.Count(Failed), s.Count(Skipped), s.NotSelected, info.Duration.Round(time.Second), info.SuiteExit)
	if info.NoSCTP != "" {
		fmt.Fprintf(&b, "- this kernel has no SCTP (%s): the suite's %s tests cannot pass here\n", info.NoSCTP, sctpTag)
	}
	fmt.Fprintf(&b, "- JUnit report: `%s`; suite output: `%s`\n\n", info.JUnitPath, info.SuiteLogs)
	b.WriteString("| outcome | test | reason | time |\n| --- | --- | --- | --- |\n")
	for _, o := range []Outcome{Failed, Skipped, Passed} {
		for _, r := range s.Results {
			if r.Outcome != o {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.Outcome, mdCell(r.Name), mdCell(r.Reason), r.Time.Round(time.Second))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// mdCell escapes what would break a Markdown table cell.
func mdCell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
