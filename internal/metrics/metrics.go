// Package metrics owns the agent's Prometheus registry and its HTTP endpoints
// (/metrics, /healthz, /readyz). It holds numbers and answers HTTP; it never
// talks to the kernel or the Kubernetes API itself: peer statistics come from
// a function the agent passes in, called at scrape time.
package metrics

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// StaleAfter is how old a handshake may be before a peer counts as stale.
// WireGuard re-handshakes every 2 minutes while traffic flows and rejects a
// session after 180 s (REJECT_AFTER_TIME), so older means the tunnel is idle
// or broken.
const StaleAfter = 180 * time.Second

// PeerStat is one WireGuard peer as the device reports it.
type PeerStat struct {
	Node          string // node name, or the public key when unknown
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
}

// PeerState classifies a peer for wgmesh_peers.
func PeerState(p PeerStat, now time.Time) string {
	switch {
	case p.LastHandshake.IsZero():
		return "never"
	case now.Sub(p.LastHandshake) > StaleAfter:
		return "stale"
	default:
		return "up"
	}
}

// Metrics is the agent's registry and its instruments.
type Metrics struct {
	Registry *prometheus.Registry

	reconcileDuration prometheus.Histogram
	reconcileErrors   prometheus.Counter
	kernelChanges     *prometheus.CounterVec
	conflicts         *prometheus.GaugeVec
	startOvers        *prometheus.CounterVec

	mu       sync.Mutex
	peers    func(context.Context) ([]PeerStat, error)
	now      func() time.Time
	problems []Problem
}

// Problem is one of the agent's current mesh problems as /problems serves
// it (JSON), for `wgmesh-agent doctor`: the few the agent alone knows (a
// KeyAndEndpointChanged warning needs the agent's memory) reach doctor
// this way.
type Problem struct {
	Node    string `json:"node"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// New builds the registry with Go and process collectors. peers is called
// at every scrape for fresh handshake ages; nil means no device yet.
func New(peers func(context.Context) ([]PeerStat, error)) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		reconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wgmesh_reconcile_duration_seconds",
			Help:    "Time one reconcile took: desired state, kernel diff and apply, subnet.env.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wgmesh_reconcile_errors_total",
			Help: "Reconciles that failed (they are retried with backoff).",
		}),
		kernelChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_kernel_changes_total",
			Help: "Kernel objects the agent changed, by kind (peer, route, rule, ...). Zero growth while nothing changes in the cluster.",
		}, []string{"kind"}),
		conflicts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wgmesh_conflicts",
			Help: "Current mesh problems by reason (OverlappingPodCIDR, MissingPublicKey, ...): nodes not programmed or only partly; KeyAndEndpointChanged: programmed, but their key and endpoint changed together in the last 24 h.",
		}, []string{"reason"}),
		startOvers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_session_start_overs_total",
			Help: "WireGuard sessions the device started over, by why: handshakes crossed, new session one way (see docs/dataplane.md, stuck sessions). A few when nodes start; steady growth means a pair keeps failing.",
		}, []string{"why"}),
		peers: peers,
		now:   time.Now,
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.reconcileDuration, m.reconcileErrors, m.kernelChanges, m.conflicts, m.startOvers,
		peerCollector{m},
	)
	return m
}

// SetPeerSource replaces the scrape-time peer function (the device exists
// only after the first reconcile).
func (m *Metrics) SetPeerSource(f func(context.Context) ([]PeerStat, error)) {
	m.mu.Lock()
	m.peers = f
	m.mu.Unlock()
}

// ObserveReconcile records one reconcile.
func (m *Metrics) ObserveReconcile(d time.Duration, err error) {
	m.reconcileDuration.Observe(d.Seconds())
	if err != nil {
		m.reconcileErrors.Inc()
	}
}

// AddKernelChanges adds n changes of kind.
func (m *Metrics) AddKernelChanges(kind string, n int) {
	if n > 0 {
		m.kernelChanges.WithLabelValues(kind).Add(float64(n))
	}
}

// AddStartOver counts a session the device started over, and why.
func (m *Metrics) AddStartOver(why string) { m.startOvers.WithLabelValues(why).Inc() }

// SetConflicts replaces the current problem counts by reason.
func (m *Metrics) SetConflicts(byReason map[string]int) {
	m.conflicts.Reset()
	for r, n := range byReason {
		m.conflicts.WithLabelValues(r).Set(float64(n))
	}
}

// SetProblems replaces the problems /problems serves.
func (m *Metrics) SetProblems(ps []Problem) {
	m.mu.Lock()
	m.problems = slices.Clone(ps)
	m.mu.Unlock()
}

// Problems returns what SetProblems set last.
func (m *Metrics) Problems() []Problem {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.problems)
}

var (
	peersDesc     = prometheus.NewDesc("wgmesh_peers", "WireGuard peers by state: up (handshake within 180 s), stale (older), never (no handshake yet).", []string{"state"}, nil)
	handshakeDesc = prometheus.NewDesc("wgmesh_peer_last_handshake_seconds", "Seconds since the last handshake with the node's peer (absent if never).", []string{"node"}, nil)
	rxDesc        = prometheus.NewDesc("wgmesh_peer_rx_bytes_total", "Bytes received from the node's peer.", []string{"node"}, nil)
	txDesc        = prometheus.NewDesc("wgmesh_peer_tx_bytes_total", "Bytes sent to the node's peer.", []string{"node"}, nil)
)

// peerCollector reads the device at scrape time.
type peerCollector struct{ m *Metrics }

func (c peerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peersDesc
	ch <- handshakeDesc
	ch <- rxDesc
	ch <- txDesc
}

func (c peerCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	f := c.m.peers
	c.m.mu.Unlock()
	var stats []PeerStat
	if f != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if stats, err = f(ctx); err != nil {
			ch <- prometheus.NewInvalidMetric(peersDesc, err)
			return
		}
	}
	now := c.m.now()
	counts := map[string]int{"up": 0, "stale": 0, "never": 0}
	for _, p := range stats {
		counts[PeerState(p, now)]++
		if !p.LastHandshake.IsZero() {
			ch <- prometheus.MustNewConstMetric(handshakeDesc, prometheus.GaugeValue, now.Sub(p.LastHandshake).Seconds(), p.Node)
		}
		ch <- prometheus.MustNewConstMetric(rxDesc, prometheus.CounterValue, float64(p.RxBytes), p.Node)
		ch <- prometheus.MustNewConstMetric(txDesc, prometheus.CounterValue, float64(p.TxBytes), p.Node)
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(peersDesc, prometheus.GaugeValue, float64(n), state)
	}
}
