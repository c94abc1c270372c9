package metrics

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check answers a probe: nil means healthy/ready, an error says why not.
type Check func() error

// Handler serves /metrics and /problems (JSON, the agent's current mesh
// problems) from m, /healthz from healthy and /readyz from ready. Probes answer 200 "ok" or 503 with the reason, so `curl` tells a
// person what is missing.
func Handler(m *Metrics, healthy, ready Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /healthz", probe(healthy))
	mux.HandleFunc("GET /readyz", probe(ready))
	mux.HandleFunc("GET /problems", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		ps := m.Problems()
		if ps == nil {
			ps = []Problem{}
		}
		_ = json.NewEncoder(w).Encode(ps)
	})
	return mux
}

func probe(c Check) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := c(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ok: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ok")
	}
}
