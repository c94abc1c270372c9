package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/wgmesh/wgmesh/internal/dataplane"
	"github.com/wgmesh/wgmesh/internal/kube"
	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/metrics"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// recorder is a data plane that records every desired state it is given.
type recorder struct {
	mu     sync.Mutex
	states []mesh.State
	closed bool
	notify chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1000)} }

func (r *recorder) Apply(_ context.Context, s mesh.State) (dataplane.Changes, error) {
	r.mu.Lock()
	r.states = append(r.states, s)
	r.mu.Unlock()
	r.notify <- struct{}{}
	return dataplane.Changes{}, nil
}

func (r *recorder) Status(context.Context) (dataplane.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var st dataplane.Status
	if len(r.states) > 0 {
		for _, p := range r.states[len(r.states)-1].Peers {
			st.Peers = append(st.Peers, dataplane.PeerStatus{Node: p.Node, PublicKey: p.PublicKey.String()})
		}
	}
	return st, nil
}

func (r *recorder) CheckDevice(context.Context) error { return nil }

func (r *recorder) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return nil
}

func (r *recorder) last() mesh.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) == 0 {
		return mesh.State{}
	}
	return r.states[len(r.states)-1]
}

// waitFor polls until cond holds for the latest applied state.
func (r *recorder) waitFor(t *testing.T, what string, cond func(mesh.State) bool) mesh.State {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if s := r.last(); cond(s) {
			return s
		}
		select {
		case <-r.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s; last applied state: %+v", what, r.last())
		}
	}
}

func peerNodes(s mesh.State) []string {
	var out []string
	for _, p := range s.Peers {
		out = append(out, p.Node)
	}
	return out
}

func peerOf(s mesh.State, node string) (mesh.Peer, bool) {
	i := slices.IndexFunc(s.Peers, func(p mesh.Peer) bool { return p.Node == node })
	if i < 0 {
		return mesh.Peer{}, false
	}
	return s.Peers[i], true
}

func newKey(t *testing.T) wgtypes.Key {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func apiNode(name, podCIDR, ip string, pub wgtypes.Key) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Annotations: map[string]string{}},
		Status: corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue, Reason: "NoRouteCreated"}},
		},
	}
	if podCIDR != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = podCIDR, []string{podCIDR}
	}
	if pub != (wgtypes.Key{}) {
		n.Annotations[mesh.AnnotationPublicKey] = pub.String()
		n.Annotations[mesh.AnnotationEndpoint] = ip + ":51820"
	}
	return n
}

// logBuf is the agent's log as a test reads it while the agent writes.
type logBuf struct{ testutil.LockedBuffer }

// waitFor waits until the log holds every line of want. The agent logs
// its peer decisions after the data plane applied them, so a test that saw
// the state applied may look at the log a moment too early.
func (l *logBuf) waitFor(t *testing.T, want ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("log lines %q", want), func() bool {
		logs := l.String()
		return !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(logs, w) })
	})
}

type harness struct {
	client  *fake.Clientset
	dp      *recorder
	agent   *Agent
	logs    *logBuf
	subnet  string
	private wgtypes.Key
	cancel  context.CancelFunc
	done    chan error
}

// startAgent runs a real agent (real kube layer on the fake clientset) for
// node name, with a recording data plane.
func startAgent(t *testing.T, c *fake.Clientset, name, subnetFile string, priv wgtypes.Key) *harness {
	t.Helper()
	return startAgentWith(t, c, name, subnetFile, priv, nil)
}

// startAgentWith is startAgent with edit applied to the Config first.
func startAgentWith(t *testing.T, c *fake.Clientset, name, subnetFile string, priv wgtypes.Key, edit func(*Config)) *harness {
	t.Helper()
	logs := &logBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}
	dp := newRecorder()
	cfg := Config{
		NodeName:     name,
		PublicKey:    priv.PublicKey(),
		ClusterCIDRs: cidrs,
		MTU:          1420,
		Masquerade:   true,
		SubnetFile:   subnetFile,
		Resync:       time.Hour, // the tests drive reconciles through events
		Cluster:      kube.NewCluster(c, kube.ClusterConfig{NodeName: name, Namespace: "kube-system", ClusterCIDRs: cidrs, Log: log}),
		NewDataplane: func(mtu int) (Dataplane, error) { return dp, nil },
		Metrics:      metrics.New(nil),
		Log:          log,
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{client: c, dp: dp, agent: a, logs: logs, subnet: subnetFile, private: priv, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- a.Run(ctx) }()
	t.Cleanup(h.stop)
	waitWatching(t, c)
	return h
}

func (h *harness) stop() {
	h.cancel()
	<-h.done
	h.done <- nil // let a second stop return
}

// waitWatching waits until the informers watch nodes and leases, so objects
// created afterwards are seen as events (the fake clientset has no resource
// versions to resume from).
func waitWatching(t *testing.T, c *fake.Clientset) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var nodes, leases bool
		for _, a := range c.Actions() {
			if a.GetVerb() == "watch" {
				nodes = nodes || a.GetResource().Resource == "nodes"
				leases = leases || a.GetResource().Resource == "leases"
			}
		}
		if nodes && leases {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("informers never started watching")
}

func countActions(c *fake.Clientset, verb, resource, sub string) int {
	n := 0
	for _, a := range c.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource && a.GetSubresource() == sub {
			n++
		}
	}
	return n
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAgentProgramsPeersFromNodesAndFollowsEvents(t *testing.T) {
	ctx := context.Background()
	ka, kb, kc := newKey(t), newKey(t), newKey(t)
	c := fake.NewClientset(
		apiNode("a", "10.42.0.0/24", "192.168.0.1", wgtypes.Key{}),
		apiNode("b", "10.42.1.0/24", "192.168.0.2", kb.PublicKey()),
	)
	h := startAgent(t, c, "a", filepath.Join(t.TempDir(), "subnet.env"), ka)

	// The informer's Node becomes a peer with exactly its pod CIDR.
	s := h.dp.waitFor(t, "peer b", func(s mesh.State) bool { _, ok := peerOf(s, "b"); return ok })
	pb, _ := peerOf(s, "b")
	if !reflect.DeepEqual(pb.AllowedIPs, []netip.Prefix{netip.MustParsePrefix("10.42.1.0/24")}) || pb.PublicKey != kb.PublicKey() ||
		pb.Endpoint != netip.MustParseAddrPort("192.168.0.2:51820") {
		t.Fatalf("peer b = %+v", pb)
	}
	if !reflect.DeepEqual(s.Subnets, []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")}) {
		t.Errorf("own subnets = %v", s.Subnets)
	}

	// A node that joins later is added by its event.
	if _, err := c.CoreV1().Nodes().Create(ctx, apiNode("c", "10.42.2.0/24", "192.168.0.3", kc.PublicKey()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.dp.waitFor(t, "peers b and c", func(s mesh.State) bool { return slices.Equal(peerNodes(s), []string{"b", "c"}) })

	// A changed annotation (a person forces c's endpoint) updates the peer.
	n, _ := c.CoreV1().Nodes().Get(ctx, "c", metav1.GetOptions{})
	n.Annotations[mesh.AnnotationForceEndpoint] = "203.0.113.9:4500"
	if _, err := c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.dp.waitFor(t, "c's forced endpoint", func(s mesh.State) bool {
		p, ok := peerOf(s, "c")
		return ok && p.Endpoint == netip.MustParseAddrPort("203.0.113.9:4500")
	})

	// A deleted node's peer disappears from the desired state.
	if err := c.CoreV1().Nodes().Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.dp.waitFor(t, "b removed", func(s mesh.State) bool { return slices.Equal(peerNodes(s), []string{"c"}) })

	h.logs.waitFor(t,
		`msg="peer added" node=b allowedIPs=[10.42.1.0/24]`,
		`msg="peer added" node=c allowedIPs=[10.42.2.0/24]`,
		`msg="peer updated" node=c`,
		`msg="peer removed" node=b allowedIPs=[10.42.1.0/24]`,
	)
	if strings.Contains(h.logs.String(), ka.String()) {
		t.Fatal("the private key appears in the logs")
	}
	h.stop()
	if !h.dp.closed {
		t.Error("data plane not closed on stop")
	}
}

func TestAgentPublishesAnnotationsOnceAndSetsCondition(t *testing.T) {
	ctx := context.Background()
	ka, kb := newKey(t), newKey(t)
	c := fake.NewClientset(
		apiNode("a", "10.42.0.0/24", "192.168.0.1", wgtypes.Key{}),
		apiNode("b", "10.42.1.0/24", "192.168.0.2", kb.PublicKey()),
	)
	subnetFile := filepath.Join(t.TempDir(), "run", "subnet.env")
	h := startAgent(t, c, "a", subnetFile, ka)
	h.dp.waitFor(t, "peer b", func(s mesh.State) bool { return len(s.Peers) == 1 })

	eventually(t, "annotations and condition", func() bool {
		n, _ := c.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeNetworkUnavailable && cond.Status == corev1.ConditionFalse && cond.Reason == kube.ReadyReason {
				return n.Annotations[mesh.AnnotationPublicKey] == ka.PublicKey().String() &&
					n.Annotations[mesh.AnnotationEndpoint] == "192.168.0.1:51820"
			}
		}
		return false
	})
	eventually(t, "ready", func() bool { return h.agent.Ready() == nil })

	env, err := subnetenv.Read(subnetFile)
	if err != nil {
		t.Fatal(err)
	}
	want := subnetenv.Env{Network: netip.MustParsePrefix("10.42.0.0/16"), Subnet: netip.MustParsePrefix("10.42.0.0/24"), MTU: 1420, IPMasq: true}
	if env != want {
		t.Errorf("subnet.env = %+v, want %+v", env, want)
	}
	st1, _ := os.Stat(subnetFile)

	// More reconciles (our own patches come back as events, plus an
	// unrelated change) publish nothing new and leave subnet.env alone.
	n, _ := c.CoreV1().Nodes().Get(ctx, "b", metav1.GetOptions{})
	n.Labels = map[string]string{"x": "y"}
	n.Annotations[mesh.AnnotationPersistentKeepalive] = "25"
	c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	h.dp.waitFor(t, "keepalive", func(s mesh.State) bool { return len(s.Peers) == 1 && s.Peers[0].PersistentKeepalive == 25*time.Second })
	if err := h.agent.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got := countActions(c, "patch", "nodes", ""); got != 1 {
		t.Errorf("%d annotation patches, want 1", got)
	}
	if got := countActions(c, "patch", "nodes", "status"); got != 1 {
		t.Errorf("%d status patches, want 1", got)
	}
	st2, _ := os.Stat(subnetFile)
	if !os.SameFile(st1, st2) || !st1.ModTime().Equal(st2.ModTime()) {
		t.Error("subnet.env rewritten although its content did not change")
	}

	// Someone sets NetworkUnavailable=True again: the agent sets it back.
	n, _ = c.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeNetworkUnavailable {
			n.Status.Conditions[i].Status, n.Status.Conditions[i].Reason = corev1.ConditionTrue, "NoRouteCreated"
		}
	}
	if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "condition restored", func() bool { return countActions(c, "patch", "nodes", "status") == 2 })
	n, _ = c.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeNetworkUnavailable && cond.Status != corev1.ConditionFalse {
			t.Errorf("NetworkUnavailable = %+v after the agent restored it", cond)
		}
	}
}

func TestAgentRecordsEventsForProblems(t *testing.T) {
	ctx := context.Background()
	ka := newKey(t)
	c := fake.NewClientset(
		apiNode("a", "10.42.0.0/24", "192.168.0.1", wgtypes.Key{}),
		apiNode("nokey", "10.42.5.0/24", "192.168.0.5", wgtypes.Key{}),
	)
	h := startAgent(t, c, "a", filepath.Join(t.TempDir(), "subnet.env"), ka)
	h.dp.waitFor(t, "first apply", func(s mesh.State) bool { return len(s.Subnets) == 1 })
	eventually(t, "MissingPublicKey event", func() bool {
		evs, _ := c.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == "nokey" && e.Reason == mesh.ReasonMissingPublicKey && e.Type == corev1.EventTypeWarning {
				return true
			}
		}
		return false
	})
	// More reconciles with the same problem record no more Events.
	for range 3 {
		if err := h.agent.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // the broadcaster is asynchronous
	evs, _ := c.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if len(evs.Items) != 1 || evs.Items[0].Count > 1 {
		t.Errorf("events after repeated reconciles: %d (count %d), want 1", len(evs.Items), evs.Items[0].Count)
	}
}

func TestAgentReportsPeerOutsideClusterCIDRAndStillProgramsIt(t *testing.T) {
	ctx := context.Background()
	ka, kb := newKey(t), newKey(t)
	// The agent runs with --cluster-cidr 10.42.0.0/16; b's pod CIDR is
	// from another range (a cluster started with another --cluster-cidr).
	c := fake.NewClientset(
		apiNode("a", "10.42.0.0/24", "192.168.0.1", wgtypes.Key{}),
		apiNode("b", "10.52.1.0/24", "192.168.0.2", kb.PublicKey()),
	)
	h := startAgent(t, c, "a", filepath.Join(t.TempDir(), "subnet.env"), ka)
	h.dp.waitFor(t, "peer b", func(s mesh.State) bool { _, ok := peerOf(s, "b"); return ok })
	eventually(t, "PodCIDROutsideCluster event on node b", func() bool {
		evs, _ := c.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == "b" && e.Reason == mesh.ReasonPodCIDROutsideCluster &&
				e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "10.52.1.0/24 is outside the cluster CIDR 10.42.0.0/16") {
				return true
			}
		}
		return false
	})
}

func TestAgentsWithoutPodCIDRReserveSubnetsAndLearnEachOther(t *testing.T) {
	ctx := context.Background()
	ka, kb := newKey(t), newKey(t)
	c := fake.NewClientset(
		apiNode("a", "", "192.168.0.1", wgtypes.Key{}),
		apiNode("b", "", "192.168.0.2", wgtypes.Key{}),
	)
	dir := t.TempDir()
	ha := startAgent(t, c, "a", filepath.Join(dir, "a.env"), ka)
	hb := startAgent(t, c, "b", filepath.Join(dir, "b.env"), kb)

	// Each learns the other's subnet from its Lease, as AllowedIPs.
	sa := ha.dp.waitFor(t, "a sees b", func(s mesh.State) bool { _, ok := peerOf(s, "b"); return ok })
	sb := hb.dp.waitFor(t, "b sees a", func(s mesh.State) bool { _, ok := peerOf(s, "a"); return ok })
	pa, _ := peerOf(sb, "a")
	pb, _ := peerOf(sa, "b")
	if len(sa.Subnets) != 1 || len(sb.Subnets) != 1 || sa.Subnets[0] == sb.Subnets[0] {
		t.Fatalf("subnets a=%v b=%v", sa.Subnets, sb.Subnets)
	}
	if !reflect.DeepEqual(pa.AllowedIPs, sa.Subnets) || !reflect.DeepEqual(pb.AllowedIPs, sb.Subnets) {
		t.Fatalf("a's peer b %v (b holds %v); b's peer a %v (a holds %v)", pb.AllowedIPs, sb.Subnets, pa.AllowedIPs, sa.Subnets)
	}
	envA, err := subnetenv.Read(filepath.Join(dir, "a.env"))
	if err != nil || envA.Subnet != sa.Subnets[0] {
		t.Fatalf("a's subnet.env = %+v, %v", envA, err)
	}

	// A restarted agent reuses its Lease and creates none.
	creates := countActions(c, "create", "leases", "")
	ha.stop()
	ha2 := startAgent(t, c, "a", filepath.Join(dir, "a.env"), ka)
	s2 := ha2.dp.waitFor(t, "restarted a sees b", func(s mesh.State) bool { _, ok := peerOf(s, "b"); return ok })
	if !reflect.DeepEqual(s2.Subnets, sa.Subnets) {
		t.Fatalf("after restart a holds %v, before %v", s2.Subnets, sa.Subnets)
	}
	if got := countActions(c, "create", "leases", ""); got != creates {
		t.Errorf("restart created %d leases", got-creates)
	}

	// b's Node is deleted: a drops the peer and releases b's Lease.
	hb.stop()
	if err := c.CoreV1().Nodes().Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ha2.dp.waitFor(t, "b gone", func(s mesh.State) bool { return len(s.Peers) == 0 })
	eventually(t, "b's lease released", func() bool {
		_, err := c.CoordinationV1().Leases("kube-system").Get(ctx, kube.SubnetLeaseName(sb.Subnets[0]), metav1.GetOptions{})
		return err != nil
	})
	ls, _ := c.CoordinationV1().Leases("kube-system").List(ctx, metav1.ListOptions{})
	if len(ls.Items) != 1 || *ls.Items[0].Spec.HolderIdentity != "a" {
		t.Errorf("leases left: %+v", ls.Items)
	}
}

func TestLeaseForAnotherNodesSubnetCannotBeClaimedByAnnotation(t *testing.T) {
	// A node whose spec is empty gets only what its Leases say; nothing it
	// writes on its own Node object can give it a subnet.
	ka, kb := newKey(t), newKey(t)
	holder := "b"
	c := fake.NewClientset(
		apiNode("a", "10.42.0.0/24", "192.168.0.1", wgtypes.Key{}),
		apiNode("b", "", "192.168.0.2", kb.PublicKey()),
		&coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: kube.SubnetLeaseName(netip.MustParsePrefix("10.42.9.0/24")), Namespace: "kube-system",
			Labels: map[string]string{kube.LabelSubnetLease: "true"},
			// A person editing the readable annotation changes nothing.
			Annotations: map[string]string{kube.AnnotationSubnet: "10.42.0.0/24"}},
			Spec: coordv1.LeaseSpec{HolderIdentity: &holder}},
	)
	h := startAgent(t, c, "a", filepath.Join(t.TempDir(), "subnet.env"), ka)
	s := h.dp.waitFor(t, "peer b", func(s mesh.State) bool { return len(s.Peers) == 1 })
	if got := s.Peers[0].AllowedIPs; !reflect.DeepEqual(got, []netip.Prefix{netip.MustParsePrefix("10.42.9.0/24")}) {
		t.Fatalf("b's AllowedIPs = %v, want its lease's 10.42.9.0/24", got)
	}
}

func TestReadyAndHealthy(t *testing.T) {
	a, err := New(Config{NodeName: "a", Cluster: kube.NewCluster(fake.NewClientset(), kube.ClusterConfig{NodeName: "a", Namespace: "kube-system"}),
		NewDataplane: func(int) (Dataplane, error) { return newRecorder(), nil }, Resync: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Ready(); err == nil || !strings.Contains(err.Error(), "first sync not done") {
		t.Errorf("Ready before any sync = %v", err)
	}
	if err := a.Healthy(); err != nil {
		t.Errorf("Healthy at start = %v", err)
	}
	// The node is missing: the reconcile fails and readiness says why.
	if err := a.Reconcile(context.Background()); err == nil {
		t.Fatal("reconcile without the node succeeded")
	}
	if err := a.Ready(); err == nil || !strings.Contains(err.Error(), "is not in the API") {
		t.Errorf("Ready after a failed sync = %v", err)
	}
	a.mu.Lock()
	a.lastDone = time.Now().Add(-10 * time.Minute)
	a.mu.Unlock()
	if err := a.Healthy(); err == nil {
		t.Error("Healthy with no reconcile for 10 minutes")
	}
}
