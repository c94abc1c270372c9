package hostprep

import (
	"context"
	"testing"
)

func byID(t *testing.T, rep Report) map[string]Check {
	t.Helper()
	m := map[string]Check{}
	for _, c := range rep.Checks {
		if _, dup := m[c.ID]; dup {
			t.Fatalf("duplicate check id %s", c.ID)
		}
		m[c.ID] = c
	}
	return m
}

func runChecks(t *testing.T, opts Options) Report {
	t.Helper()
	rep, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

func wantStatus(t *testing.T, checks map[string]Check, id string, want Status) Check {
	t.Helper()
	c, ok := checks[id]
	if !ok {
		t.Fatalf("no check %s", id)
	}
	if c.Status != want {
		t.Errorf("%s: status %s, want %s (summary %q, evidence %q)", id, c.Status, want, c.Summary, c.Evidence)
	}
	return c
}
