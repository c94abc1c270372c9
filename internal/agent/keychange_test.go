package agent

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/wgmesh/wgmesh/internal/mesh"
)

// setPeerAnnotations rewrites node's key and endpoint annotations, as its
// own agent (or a stolen token) would.
func setPeerAnnotations(t *testing.T, c *fake.Clientset, node string, pub wgtypes.Key, endpoint string) {
	t.Helper()
	ctx := context.Background()
	n, err := c.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Annotations[mesh.AnnotationPublicKey] = pub.String()
	n.Annotations[mesh.AnnotationEndpoint] = endpoint
	if _, err := c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func keyChangeEvents(t *testing.T, c *fake.Clientset) []corev1.Event {
	t.Helper()
	evs, err := c.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range evs.Items {
		if e.Reason == mesh.ReasonKeyAndEndpointChanged {
			out = append(out, e)
		}
	}
	return out
}

func TestKeyAndEndpointChangeWarnsButProgramsThePeer(t *testing.T) {
	k1, k2, k3, k4 := newKey(t).PublicKey(), newKey(t).PublicKey(), newKey(t).PublicKey(), newKey(t).PublicKey()
	c := fake.NewClientset(
		apiNode("a", "10.42.0.0/24", "192.168.0.1", wgtypes.Key{}),
		apiNode("b", "10.42.1.0/24", "192.168.0.2", k1),
	)
	h := startAgent(t, c, "a", filepath.Join(t.TempDir(), "subnet.env"), newKey(t))
	h.dp.waitFor(t, "b programmed", func(s mesh.State) bool { p, ok := peerOf(s, "b"); return ok && p.PublicKey == k1 })

	// Endpoint only (NAT roaming, a new DHCP lease): no warning.
	setPeerAnnotations(t, c, "b", k1, "192.168.0.22:51820")
	h.dp.waitFor(t, "b roamed", func(s mesh.State) bool {
		p, _ := peerOf(s, "b")
		return p.Endpoint == netip.MustParseAddrPort("192.168.0.22:51820")
	})
	// Key only (reinstalled behind the same address): no warning.
	setPeerAnnotations(t, c, "b", k2, "192.168.0.22:51820")
	h.dp.waitFor(t, "b's new key", func(s mesh.State) bool { p, _ := peerOf(s, "b"); return p.PublicKey == k2 })
	time.Sleep(200 * time.Millisecond) // the broadcaster is asynchronous
	if evs := keyChangeEvents(t, c); len(evs) != 0 {
		t.Fatalf("a key or an endpoint change alone raised %v", evs)
	}
	if ps := h.agent.cfg.Metrics.Problems(); len(ps) != 0 {
		t.Fatalf("problems after a key or an endpoint change alone: %v", ps)
	}

	// Key and endpoint together: still programmed, but a Warning Event on b,
	// once, and the problem stays for doctor and the metric.
	setPeerAnnotations(t, c, "b", k3, "203.0.113.9:51820")
	h.dp.waitFor(t, "b programmed with key and endpoint changed", func(s mesh.State) bool {
		p, _ := peerOf(s, "b")
		return p.PublicKey == k3 && p.Endpoint == netip.MustParseAddrPort("203.0.113.9:51820")
	})
	eventually(t, "KeyAndEndpointChanged Warning Event on b", func() bool {
		for _, e := range keyChangeEvents(t, c) {
			if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == "b" && e.Type == corev1.EventTypeWarning &&
				strings.Contains(e.Message, k2.String()) && strings.Contains(e.Message, k3.String()) && strings.Contains(e.Message, "203.0.113.9:51820") {
				return true
			}
		}
		return false
	})
	for range 3 {
		if err := h.agent.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if evs := keyChangeEvents(t, c); len(evs) != 1 || evs[0].Count > 1 {
		t.Errorf("KeyAndEndpointChanged events after more reconciles: %v, want one", evs)
	}
	if ps := h.agent.cfg.Metrics.Problems(); len(ps) != 1 || ps[0].Node != "b" || ps[0].Reason != mesh.ReasonKeyAndEndpointChanged {
		t.Errorf("problems served to doctor: %v", ps)
	}
	h.logs.waitFor(t, "reason=KeyAndEndpointChanged")

	// A second such change replaces the warning with a new Event.
	setPeerAnnotations(t, c, "b", k4, "198.51.100.4:51820")
	eventually(t, "a second Event for the second change", func() bool { return len(keyChangeEvents(t, c)) == 2 })
	if ps := h.agent.cfg.Metrics.Problems(); len(ps) != 1 || !strings.Contains(ps[0].Message, k4.String()) {
		t.Errorf("problems after the second change: %v", ps)
	}
}

func TestKeyChangeWarningsExpireAndFollowNodes(t *testing.T) {
	a := &Agent{}
	k1, k2 := newKey(t).PublicKey(), newKey(t).PublicKey()
	ep1, ep2 := netip.MustParseAddrPort("192.168.0.2:51820"), netip.MustParseAddrPort("203.0.113.9:51820")
	nodes := []mesh.Node{{Name: "a"}, {Name: "b"}}
	before := mesh.State{Peers: []mesh.Peer{{Node: "b", PublicKey: k1, Endpoint: ep1}}}
	after := mesh.State{Peers: []mesh.Peer{{Node: "b", PublicKey: k2, Endpoint: ep2}}}
	t0 := time.Now()

	if ps := a.keyChangeWarnings(nodes, before, t0); len(ps) != 0 {
		t.Fatalf("first sight warned: %v", ps)
	}
	a.rememberProgrammed(nodes, before)
	if ps := a.keyChangeWarnings(nodes, after, t0); len(ps) != 1 {
		t.Fatalf("change not warned: %v", ps)
	}
	a.rememberProgrammed(nodes, after)
	if ps := a.keyChangeWarnings(nodes, after, t0.Add(KeyChangeWarnFor-time.Second)); len(ps) != 1 {
		t.Fatalf("warning gone before %s: %v", KeyChangeWarnFor, ps)
	}
	if ps := a.keyChangeWarnings(nodes, after, t0.Add(KeyChangeWarnFor)); len(ps) != 0 {
		t.Fatalf("warning kept after %s: %v", KeyChangeWarnFor, ps)
	}

	// A deleted Node is forgotten: registered again elsewhere, with a new
	// key, it is a new node.
	a.rememberProgrammed(nodes, before)
	a.rememberProgrammed(nodes[:1], mesh.State{})
	if ps := a.keyChangeWarnings(nodes, after, t0); len(ps) != 0 {
		t.Fatalf("a Node registered again warned: %v", ps)
	}
	// A warning on a Node that is deleted goes with it.
	a.rememberProgrammed(nodes, after)
	a.keyChangeWarnings(nodes, before, t0)
	if ps := a.keyChangeWarnings(nodes[:1], mesh.State{}, t0); len(ps) != 0 {
		t.Fatalf("warning on a deleted Node kept: %v", ps)
	}
}
