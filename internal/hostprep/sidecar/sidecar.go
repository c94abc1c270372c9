// Package sidecar runs hostprep as a long-lived container next to the
// wgmesh agent: it re-checks the host periodically (fixing what is safe),
// answers /healthz and /readyz, and hands the verdict to a Publisher (the
// Node label and Events).
//
// It owns the loop and the HTTP handlers only; the checks are hostprep's
// and the Kubernetes writes are the Publisher's.
package sidecar

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/internal/hostprep"
	"github.com/wgmesh/wgmesh/internal/hostprep/kubenode"
)

// Publisher receives every verdict (kubenode.Publisher in production).
type Publisher interface {
	Publish(ctx context.Context, ready bool, missing []kubenode.Missing) error
}

// Config of the sidecar.
type Config struct {
	// Options for every run (Fix is normally true in the sidecar).
	Options hostprep.Options
	// Interval between runs (default 1m).
	Interval time.Duration
	// Publisher, or nil to publish nothing.
	Publisher Publisher
	Log       *slog.Logger
	Now       func() time.Time
}

// Sidecar is the periodic checker.
type Sidecar struct {
	cfg Config

	mu      sync.Mutex
	report  *hostprep.Report
	err     error
	lastRun time.Time
}

// New returns a Sidecar with defaults filled in.
func New(cfg Config) *Sidecar {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Options.Log == nil {
		cfg.Options.Log = cfg.Log
	}
	return &Sidecar{cfg: cfg}
}

// Once checks (and fixes) the host, logs one line per problem and
// publishes the verdict. A publish error is returned but the verdict is
// kept for /readyz.
func (s *Sidecar) Once(ctx context.Context) error {
	rep, err := hostprep.Run(ctx, s.cfg.Options)
	s.mu.Lock()
	s.lastRun = s.cfg.Now()
	s.err = err
	if err == nil {
		s.report = &rep
	}
	s.mu.Unlock()
	if err != nil {
		s.cfg.Log.Error("host check failed", "err", err)
		return err
	}
	var missing []kubenode.Missing
	for _, c := range rep.Checks {
		switch c.Status {
		case hostprep.StatusOK:
			continue
		case hostprep.StatusFixed:
			s.cfg.Log.Info("host check fixed", "check", c.ID, "summary", c.Summary, "changed", c.Changed)
		default:
			s.cfg.Log.Warn("host check", "check", c.ID, "status", c.Status, "required", c.Required, "summary", c.Summary, "fix", c.Fix)
		}
		if c.Blocking() {
			missing = append(missing, kubenode.Missing{ID: c.ID, Summary: c.Summary})
		}
	}
	s.cfg.Log.Info("host checked", "ready", rep.Ready(), "missing", len(missing), "checks", len(rep.Checks))
	if s.cfg.Publisher != nil {
		if err := s.cfg.Publisher.Publish(ctx, rep.Ready(), missing); err != nil {
			s.cfg.Log.Error("publish node readiness", "err", err)
			return fmt.Errorf("publish: %w", err)
		}
	}
	return nil
}

// Run calls Once now and every Interval until ctx ends; errors are logged
// and retried at the next tick (level-triggered, nothing kept in between).
func (s *Sidecar) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		_ = s.Once(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Handler serves /healthz (the loop is alive: it ran within three
// intervals, or has not had its first run yet) and /readyz (200 only when
// the last run found every required dependency; 503 lists what is missing).
func (s *Sidecar) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		last := s.lastRun
		s.mu.Unlock()
		if !last.IsZero() && s.cfg.Now().Sub(last) > 3*s.cfg.Interval {
			http.Error(w, fmt.Sprintf("last host check at %s, more than 3 intervals ago", last.Format(time.RFC3339)), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		rep, err := s.report, s.err
		s.mu.Unlock()
		switch {
		case err != nil:
			http.Error(w, "host check failed: "+err.Error(), http.StatusServiceUnavailable)
		case rep == nil:
			http.Error(w, "host not checked yet", http.StatusServiceUnavailable)
		case !rep.Ready():
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "Longhorn host dependencies missing:")
			for _, c := range rep.Blocking() {
				fmt.Fprintf(w, "%s: %s\n  fix: %s\n", c.ID, c.Summary, c.Fix)
			}
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	mux.HandleFunc("/report", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		rep := s.report
		s.mu.Unlock()
		if rep == nil {
			http.Error(w, "host not checked yet", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = rep.WriteJSON(w)
	})
	return mux
}
