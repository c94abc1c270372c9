package hostprep

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// Status is a check's verdict.
type Status string

const (
	StatusOK      Status = "ok"      // nothing to do
	StatusFixed   Status = "fixed"   // was wrong, wgmesh-hostprep fixed it in this run
	StatusMissing Status = "missing" // Longhorn will fail (required) or the feature fails
	StatusWarning Status = "warning" // a feature Longhorn offers will not work, or we cannot tell
)

// Check is one verdict about the host.
type Check struct {
	// ID is stable: people grep for it and alerts match on it.
	ID string `json:"id"`
	// Topic groups checks like longhornctl's "[Topic]" prefix.
	Topic  string `json:"topic"`
	Status Status `json:"status"`
	// Required checks block Longhorn (readiness false when missing).
	Required bool `json:"required"`
	// Summary is one line for a person.
	Summary string `json:"summary"`
	// Evidence is what was seen on the host (paths, link chains, lines).
	Evidence []string `json:"evidence,omitempty"`
	// Fix is what to do on this host's distribution, empty when ok.
	Fix string `json:"fix,omitempty"`
	// Changed lists what a fix changed on the host in this run.
	Changed []string `json:"changed,omitempty"`
}

// Blocking reports whether this check keeps Longhorn from working.
func (c Check) Blocking() bool { return c.Required && c.Status == StatusMissing }

// Report is the result of one run over a host.
type Report struct {
	Root   string  `json:"hostRoot"`
	Distro Distro  `json:"os"`
	V2     bool    `json:"v2Engine"`
	Checks []Check `json:"checks"`
}

// Ready reports whether every required dependency is present.
func (r Report) Ready() bool {
	return !slices.ContainsFunc(r.Checks, Check.Blocking)
}

// Blocking returns the checks that keep Longhorn from working.
func (r Report) Blocking() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Blocking() {
			out = append(out, c)
		}
	}
	return out
}

// LonghornLog is the shape longhornctl check preflight prints per node.
type LonghornLog struct {
	Error []string `json:"error"`
	Warn  []string `json:"warn"`
	Info  []string `json:"info"`
}

// Log renders the checks as longhornctl-style "[Topic] msg" lines: missing
// required -> error, missing optional and warning -> warn, ok/fixed -> info.
func (r Report) Log() LonghornLog {
	l := LonghornLog{Error: []string{}, Warn: []string{}, Info: []string{}}
	for _, c := range r.Checks {
		line := fmt.Sprintf("[%s] %s", c.Topic, c.Summary)
		switch {
		case c.Blocking():
			l.Error = append(l.Error, line)
		case c.Status == StatusMissing || c.Status == StatusWarning:
			l.Warn = append(l.Warn, line)
		default:
			l.Info = append(l.Info, line)
		}
	}
	return l
}

// jsonReport is the machine output of `check --json`.
type jsonReport struct {
	Ready bool        `json:"ready"`
	Log   LonghornLog `json:"log"`
	Report
}

// WriteJSON writes the report for machines: {"ready":..,"log":{"error":[],
// "warn":[],"info":[]},"hostRoot":..,"os":..,"checks":[..]}.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(jsonReport{Ready: r.Ready(), Log: r.Log(), Report: r})
}

// WriteTable writes the report for people: one row per check, then the
// evidence and the fix for everything that is not ok.
func (r Report) WriteTable(w io.Writer) error {
	name := r.Distro.PrettyName
	if name == "" {
		name = r.Distro.ID
	}
	fmt.Fprintf(w, "host root %s: %s (%s)\n\n", r.Root, name, r.Distro.Family)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCHECK\tTOPIC\tRESULT")
	for _, c := range r.Checks {
		st := string(c.Status)
		if c.Status == StatusMissing && !c.Required {
			st += " (optional)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", st, c.ID, c.Topic, c.Summary)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var details strings.Builder
	for _, c := range r.Checks {
		if c.Status == StatusOK {
			continue
		}
		fmt.Fprintf(&details, "\n%s (%s):\n", c.ID, c.Status)
		for _, e := range c.Evidence {
			fmt.Fprintf(&details, "  seen:    %s\n", e)
		}
		for _, ch := range c.Changed {
			fmt.Fprintf(&details, "  changed: %s\n", ch)
		}
		if c.Fix != "" {
			fmt.Fprintf(&details, "  fix:     %s\n", strings.ReplaceAll(c.Fix, "\n", "\n           "))
		}
	}
	if details.Len() > 0 {
		fmt.Fprint(w, details.String())
	}
	if b := r.Blocking(); len(b) > 0 {
		ids := make([]string, len(b))
		for i, c := range b {
			ids[i] = c.ID
		}
		fmt.Fprintf(w, "\nLonghorn would fail on this host: %d required check(s) missing: %s\n", len(b), strings.Join(ids, ", "))
	} else {
		fmt.Fprintf(w, "\nLonghorn's host dependencies are present.\n")
	}
	return nil
}
