package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadyzFailsUntilReady(t *testing.T) {
	ready := errors.New("first sync not done")
	srv := httptest.NewServer(Handler(New(nil), func() error { return nil }, func() error { return ready }))
	defer srv.Close()
	if code, body := get(t, srv, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "first sync not done") {
		t.Fatalf("readyz before ready: %d %q", code, body)
	}
	ready = nil
	if code, body := get(t, srv, "/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("readyz when ready: %d %q", code, body)
	}
	if code, _ := get(t, srv, "/healthz"); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}
}

func TestHealthzReportsStuckLoop(t *testing.T) {
	srv := httptest.NewServer(Handler(New(nil), func() error { return errors.New("reconcile running for 6m0s") }, func() error { return nil }))
	defer srv.Close()
	if code, body := get(t, srv, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "6m0s") {
		t.Fatalf("healthz: %d %q", code, body)
	}
}

func TestMetricsExposeEveryName(t *testing.T) {
	now := time.Now()
	m := New(func(context.Context) ([]PeerStat, error) {
		return []PeerStat{
			{Node: "b", LastHandshake: now.Add(-10 * time.Second), RxBytes: 100, TxBytes: 200},
			{Node: "c", LastHandshake: now.Add(-10 * time.Minute)},
			{Node: "d"},
		}, nil
	})
	m.now = func() time.Time { return now }
	m.ObserveReconcile(20*time.Millisecond, nil)
	m.ObserveReconcile(time.Millisecond, errors.New("boom"))
	m.AddKernelChanges("peer", 2)
	m.AddKernelChanges("route", 0)
	m.SetConflicts(map[string]int{"OverlappingPodCIDR": 2})
	m.AddStartOver("handshakes crossed")
	srv := httptest.NewServer(Handler(m, func() error { return nil }, func() error { return nil }))
	defer srv.Close()
	code, body := get(t, srv, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`wgmesh_peers{state="up"} 1`,
		`wgmesh_peers{state="stale"} 1`,
		`wgmesh_peers{state="never"} 1`,
		`wgmesh_peer_last_handshake_seconds{node="b"} 10`,
		`wgmesh_peer_rx_bytes_total{node="b"} 100`,
		`wgmesh_peer_tx_bytes_total{node="b"} 200`,
		`wgmesh_reconcile_duration_seconds_count 2`,
		`wgmesh_reconcile_errors_total 1`,
		`wgmesh_conflicts{reason="OverlappingPodCIDR"} 2`,
		`wgmesh_kernel_changes_total{kind="peer"} 2`,
		`wgmesh_session_start_overs_total{why="handshakes crossed"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(body, `wgmesh_peer_last_handshake_seconds{node="d"}`) {
		t.Error("a peer that never handshook has a handshake age")
	}
}

func TestMetricsSurviveDeviceErrors(t *testing.T) {
	m := New(func(context.Context) ([]PeerStat, error) { return nil, errors.New("no device") })
	m.ObserveReconcile(time.Millisecond, nil)
	srv := httptest.NewServer(Handler(m, func() error { return nil }, func() error { return nil }))
	defer srv.Close()
	code, body := get(t, srv, "/metrics")
	if code != http.StatusOK || !strings.Contains(body, "wgmesh_reconcile_duration_seconds_count 1") {
		t.Fatalf("metrics with a broken device: %d\n%s", code, body)
	}
}

func TestProblemsServesWhatWasSet(t *testing.T) {
	m := New(nil)
	srv := httptest.NewServer(Handler(m, func() error { return nil }, func() error { return nil }))
	defer srv.Close()
	if code, body := get(t, srv, "/problems"); code != http.StatusOK || body != "[]\n" {
		t.Fatalf("problems before any: %d %q", code, body)
	}
	m.SetProblems([]Problem{{Node: "b", Reason: "KeyAndEndpointChanged", Message: "key changed"}})
	want := `[{"node":"b","reason":"KeyAndEndpointChanged","message":"key changed"}]` + "\n"
	if code, body := get(t, srv, "/problems"); code != http.StatusOK || body != want {
		t.Fatalf("problems: %d %q, want %q", code, body, want)
	}
}
