package doctor

import (
	"net"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/metrics"
)

func TestAgentProblemsKeepsWhatOnlyTheAgentKnows(t *testing.T) {
	m := metrics.New(nil)
	m.SetProblems([]metrics.Problem{
		{Node: "b", Reason: mesh.ReasonKeyAndEndpointChanged, Message: "key and endpoint changed"},
		{Node: "c", Reason: mesh.ReasonMissingPublicKey, Message: "doctor finds this one itself"},
	})
	srv := httptest.NewServer(metrics.Handler(m, func() error { return nil }, func() error { return nil }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	want := []mesh.Problem{{Node: "b", Reason: mesh.ReasonKeyAndEndpointChanged, Message: "key and endpoint changed"}}
	// The DaemonSet may listen on every address; doctor then asks loopback.
	for _, addr := range []string{srv.Listener.Addr().String(), ":" + port, "0.0.0.0:" + port} {
		got, err := AgentProblems(t.Context(), addr)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, want %v", addr, got, want)
		}
	}
	srv.Close()
	if _, err := AgentProblems(t.Context(), srv.Listener.Addr().String()); err == nil {
		t.Error("no agent, no error")
	}
}

func TestKeyChangeFindingIsAWarning(t *testing.T) {
	fs := problemFindings([]mesh.Problem{{Node: "b", Reason: mesh.ReasonKeyAndEndpointChanged, Message: "m"}})
	if len(fs) != 1 || fs[0].Severity != SeverityWarning || fs[0].ID != mesh.ReasonKeyAndEndpointChanged {
		t.Fatalf("findings %+v", fs)
	}
}
