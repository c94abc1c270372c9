package sidecar

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/wgmesh/wgmesh/internal/hostprep"
	"github.com/wgmesh/wgmesh/internal/hostprep/fakehost"
	"github.com/wgmesh/wgmesh/internal/hostprep/kubenode"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, path, nil))
	return rr.Code, rr.Body.String()
}

// A NixOS node whose kernel lacks a loaded iscsi_tcp and nfsv4 and no
// modprobe is allowed: not ready, label false, an Event naming it; after a
// person loads the modules, the next run makes it ready.
func TestSidecarReadinessFollowsTheHost(t *testing.T) {
	tr := fakehost.NixOS(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cs := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}})
	s := New(Config{
		Options:   hostprep.Options{Root: tr.Root(), Fix: true, LoadModules: false},
		Interval:  time.Minute,
		Publisher: &kubenode.Publisher{Client: cs, NodeName: "node1", Log: log},
		Log:       log,
	})
	h := s.Handler()
	if code, _ := get(t, h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("readyz before the first run = %d", code)
	}
	if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
		t.Errorf("healthz before the first run = %d", code)
	}

	if err := s.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, h, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "module.iscsi_tcp") || !strings.Contains(body, "modprobe iscsi_tcp") {
		t.Errorf("readyz = %d %q", code, body)
	}
	if strings.Contains(body, "program.iscsiadm") {
		t.Errorf("readyz lists program.iscsiadm although the sidecar linked it: %q", body)
	}
	node, _ := cs.CoreV1().Nodes().Get(context.Background(), "node1", metav1.GetOptions{})
	if node.Labels[kubenode.LabelReady] != "false" {
		t.Errorf("label = %q", node.Labels[kubenode.LabelReady])
	}
	evs, _ := cs.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
	if len(evs.Items) != 1 || !strings.Contains(evs.Items[0].Message, "module.iscsi_tcp") {
		t.Fatalf("events = %+v", evs.Items)
	}

	// A person loads the modules on the host (iscsi_tcp, and nfsv4 for
	// Longhorn's NFSClientInstalled condition).
	if !strings.Contains(body, "nfs.v4-client") {
		t.Errorf("readyz does not list nfs.v4-client: %q", body)
	}
	tr.File("proc/modules", tr.Read("proc/modules")+"iscsi_tcp 24576 0 - Live 0x0\nnfsv4 1 0 - Live 0x0\n", 0o444)
	if err := s.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, h, "/readyz"); code != http.StatusOK {
		t.Errorf("readyz after the fix = %d %q", code, body)
	}
	node, _ = cs.CoreV1().Nodes().Get(context.Background(), "node1", metav1.GetOptions{})
	if node.Labels[kubenode.LabelReady] != "true" {
		t.Errorf("label after the fix = %q", node.Labels[kubenode.LabelReady])
	}
	evs, _ = cs.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
	if len(evs.Items) != 2 {
		t.Errorf("events after the fix = %d, want 2", len(evs.Items))
	}
	if code, body := get(t, h, "/report"); code != http.StatusOK || !strings.Contains(body, `"ready": true`) {
		t.Errorf("report = %d %.200q", code, body)
	}
}

func TestHealthzFailsWhenTheLoopStalls(t *testing.T) {
	tr := fakehost.Debian(t)
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	s := New(Config{
		Options:  hostprep.Options{Root: tr.Root()},
		Interval: time.Minute,
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:      func() time.Time { return now },
	})
	if err := s.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, s.Handler(), "/healthz"); code != http.StatusOK {
		t.Errorf("healthz = %d", code)
	}
	now = now.Add(4 * time.Minute)
	if code, _ := get(t, s.Handler(), "/healthz"); code != http.StatusInternalServerError {
		t.Errorf("healthz after 4 missed intervals = %d", code)
	}
}

func TestReadyzReportsAnUnreadableRoot(t *testing.T) {
	s := New(Config{Options: hostprep.Options{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s.cfg.Options.Root.Dir = "/nonexistent-host-root-for-test"
	if err := s.Once(context.Background()); err == nil {
		t.Fatal("Once on a missing root succeeded")
	}
	if code, body := get(t, s.Handler(), "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "host check failed") {
		t.Errorf("readyz = %d %q", code, body)
	}
}
