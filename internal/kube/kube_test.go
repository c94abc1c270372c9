package kube

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/wgmesh/wgmesh/internal/mesh"
)

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func apiNode(name string, podCIDRs []string, internal string) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.NodeSpec{PodCIDRs: podCIDRs},
	}
	if len(podCIDRs) > 0 {
		n.Spec.PodCIDR = podCIDRs[0]
	}
	if internal != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internal}}
	}
	return n
}

func TestNodeFromAPICopiesWhatTheMeshReads(t *testing.T) {
	n := apiNode("a", nil, "192.168.1.10")
	n.Spec.PodCIDR = "10.42.1.0/24" // an old object with only the singular field
	n.Status.Addresses = append(n.Status.Addresses,
		corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.7"},
		corev1.NodeAddress{Type: corev1.NodeHostName, Address: "a"},
		corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "fd00::10"})
	n.Annotations = map[string]string{
		mesh.AnnotationPublicKey:           "PUB",
		mesh.AnnotationEndpoint:            "192.168.1.10:51820",
		mesh.AnnotationForceEndpoint:       "203.0.113.7:4000",
		mesh.AnnotationPersistentKeepalive: "25s",
		"other":                            "x",
	}
	got := NodeFromAPI(n)
	want := mesh.Node{
		Name:                "a",
		PodCIDRs:            []netip.Prefix{netip.MustParsePrefix("10.42.1.0/24")},
		InternalIPs:         []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("fd00::10")},
		ExternalIPs:         []netip.Addr{netip.MustParseAddr("203.0.113.7")},
		PublicKey:           "PUB",
		Endpoint:            "192.168.1.10:51820",
		ForceEndpoint:       "203.0.113.7:4000",
		PersistentKeepalive: "25s",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	// spec.podCIDRs wins over spec.podCIDR (dual-stack).
	n.Spec.PodCIDRs = []string{"10.42.1.0/24", "fd42:0:0:1::/64"}
	if got := NodeFromAPI(n).PodCIDRs; len(got) != 2 {
		t.Errorf("dual-stack PodCIDRs = %v", got)
	}
}

func TestPublishEndpointChoosesForceThenExternalThenInternal(t *testing.T) {
	v4, v6, ext := netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("fd00::10"), netip.MustParseAddr("203.0.113.7")
	for _, tc := range []struct {
		name string
		n    mesh.Node
		want string
		err  bool
	}{
		{"internal only", mesh.Node{InternalIPs: []netip.Addr{v4}}, "192.168.1.10:51820", false},
		{"external wins", mesh.Node{InternalIPs: []netip.Addr{v4}, ExternalIPs: []netip.Addr{ext}}, "203.0.113.7:51820", false},
		{"ipv6 bracketed", mesh.Node{InternalIPs: []netip.Addr{v6}}, "[fd00::10]:51820", false},
		{"force wins", mesh.Node{InternalIPs: []netip.Addr{v4}, ForceEndpoint: "198.51.100.1:6000"}, "198.51.100.1:6000", false},
		{"force without port", mesh.Node{ForceEndpoint: "fd00::99"}, "[fd00::99]:51820", false},
		{"force garbage", mesh.Node{InternalIPs: []netip.Addr{v4}, ForceEndpoint: "nat.example:1"}, "", true},
		{"no address", mesh.Node{}, "", true},
	} {
		got, err := PublishEndpoint(tc.n, 51820)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q, err=%v", tc.name, got, err, tc.want, tc.err)
		}
	}
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

func TestPublishAnnotationsPatchesOnlyWhenDifferent(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset(apiNode("a", []string{"10.42.1.0/24"}, "192.168.1.10"))
	want := map[string]string{mesh.AnnotationPublicKey: "PUB1", mesh.AnnotationEndpoint: "192.168.1.10:51820"}
	get := func() *corev1.Node {
		n, err := c.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	changed, err := PublishAnnotations(ctx, c, get(), want)
	if err != nil || len(changed) != 2 {
		t.Fatalf("first publish: %v, %v", changed, err)
	}
	if n := get(); n.Annotations[mesh.AnnotationPublicKey] != "PUB1" || n.Annotations[mesh.AnnotationEndpoint] != "192.168.1.10:51820" {
		t.Fatalf("annotations after publish: %v", n.Annotations)
	}
	changed, err = PublishAnnotations(ctx, c, get(), want)
	if err != nil || len(changed) != 0 {
		t.Fatalf("second publish changed %v, %v", changed, err)
	}
	if got := countActions(c, "patch", "nodes", ""); got != 1 {
		t.Fatalf("%d patches, want 1 (no patch when nothing differs)", got)
	}
	// Only the differing key is sent, and other annotations survive.
	n := get()
	n.Annotations["someone.else/x"] = "y"
	if _, err := c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want[mesh.AnnotationEndpoint] = "203.0.113.7:51820"
	changed, err = PublishAnnotations(ctx, c, get(), want)
	if err != nil || !reflect.DeepEqual(changed, map[string]string{mesh.AnnotationEndpoint: "203.0.113.7:51820"}) {
		t.Fatalf("third publish: %v, %v", changed, err)
	}
	if get().Annotations["someone.else/x"] != "y" {
		t.Error("publishing dropped someone else's annotation")
	}
}

func TestSetNetworkAvailableSetsConditionOnce(t *testing.T) {
	ctx := context.Background()
	n := apiNode("a", []string{"10.42.1.0/24"}, "192.168.1.10")
	n.Status.Conditions = []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"},
		{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue, Reason: "NoRouteCreated"},
	}
	c := fake.NewClientset(n)
	changed, err := SetNetworkAvailable(ctx, c, n, time.Now())
	if err != nil || !changed {
		t.Fatalf("SetNetworkAvailable = %v, %v", changed, err)
	}
	got, _ := c.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
	conds := map[corev1.NodeConditionType]corev1.NodeCondition{}
	for _, c := range got.Status.Conditions {
		conds[c.Type] = c
	}
	if nu := conds[corev1.NodeNetworkUnavailable]; nu.Status != corev1.ConditionFalse || nu.Reason != ReadyReason {
		t.Errorf("NetworkUnavailable = %+v", nu)
	}
	if conds[corev1.NodeReady].Status != corev1.ConditionTrue {
		t.Error("the kubelet's Ready condition was lost")
	}
	if changed, err := SetNetworkAvailable(ctx, c, got, time.Now()); err != nil || changed {
		t.Errorf("second call patched again: %v, %v", changed, err)
	}
	if got := countActions(c, "patch", "nodes", "status"); got != 1 {
		t.Errorf("%d status patches, want 1", got)
	}
}

func newReserver(t *testing.T, c *fake.Clientset, node *corev1.Node) *Reserver {
	return &Reserver{Client: c, Namespace: "kube-system", Node: node, Log: testLog(t)}
}

func TestReserveRacingAgentsGetDistinctSubnets(t *testing.T) {
	ctx := context.Background()
	const agents = 8
	var nodes []*corev1.Node
	for i := range agents {
		nodes = append(nodes, apiNode(fmt.Sprintf("n%d", i), nil, ""))
	}
	c := fake.NewClientset()
	// The fake's Create really refuses a second object of the same name.
	if _, err := c.CoordinationV1().Leases("x").Create(ctx, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoordinationV1().Leases("x").Create(ctx, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l"}}, metav1.CreateOptions{}); err == nil {
		t.Fatal("fake clientset accepted a duplicate Create: the race test below would prove nothing")
	}

	cluster := netip.MustParsePrefix("10.42.0.0/16")
	got := make([]netip.Prefix, agents)
	errs := make([]error, agents)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range agents {
		wg.Go(func() {
			<-start
			got[i], errs[i] = newReserver(t, c, nodes[i]).Reserve(ctx, cluster, 24)
		})
	}
	close(start)
	wg.Wait()
	seen := map[netip.Prefix]string{}
	for i, p := range got {
		if errs[i] != nil {
			t.Fatalf("agent %d: %v", i, errs[i])
		}
		if other, dup := seen[p]; dup {
			t.Fatalf("%s reserved by both %s and n%d", p, other, i)
		}
		seen[p] = fmt.Sprintf("n%d", i)
		if !cluster.Contains(p.Addr()) || p.Bits() != 24 {
			t.Errorf("n%d got %s", i, p)
		}
	}
	// Each Lease names its holder and is owned by its Node.
	list, _ := c.CoordinationV1().Leases("kube-system").List(ctx, metav1.ListOptions{LabelSelector: LabelSubnetLease})
	if len(list.Items) != agents {
		t.Fatalf("%d leases, want %d", len(list.Items), agents)
	}
	for _, l := range list.Items {
		p, _ := ParseSubnetLeaseName(l.Name)
		holder := *l.Spec.HolderIdentity
		if seen[p] != holder {
			t.Errorf("lease %s held by %s, but %s reserved it", l.Name, holder, seen[p])
		}
		if len(l.OwnerReferences) != 1 || l.OwnerReferences[0].Kind != "Node" || l.OwnerReferences[0].UID != types.UID("uid-"+holder) {
			t.Errorf("lease %s owner = %+v", l.Name, l.OwnerReferences)
		}
	}
}

func TestReserveReusesLeaseAfterRestart(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	cluster := netip.MustParsePrefix("10.42.0.0/16")
	a, b := apiNode("a", nil, ""), apiNode("b", nil, "")
	pa, err := newReserver(t, c, a).Reserve(ctx, cluster, 24)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := newReserver(t, c, b).Reserve(ctx, cluster, 24)
	if err != nil {
		t.Fatal(err)
	}
	creates := countActions(c, "create", "leases", "")
	// A restarted agent (a new Reserver) gets the same subnet and creates nothing.
	again, err := newReserver(t, c, a).Reserve(ctx, cluster, 24)
	if err != nil || again != pa {
		t.Fatalf("restart reserved %s, %v; want %s", again, err, pa)
	}
	if got := countActions(c, "create", "leases", ""); got != creates {
		t.Errorf("restart created %d leases", got-creates)
	}
	if pa == pb {
		t.Fatalf("both got %s", pa)
	}
	// The Node re-registered under the same name (new UID): the Lease is
	// kept and re-owned, so the garbage collector does not take it away.
	a2 := a.DeepCopy()
	a2.UID = "uid-a-v2"
	again, err = newReserver(t, c, a2).Reserve(ctx, cluster, 24)
	if err != nil || again != pa {
		t.Fatalf("re-registered node reserved %s, %v", again, err)
	}
	l, _ := c.CoordinationV1().Leases("kube-system").Get(ctx, SubnetLeaseName(pa), metav1.GetOptions{})
	if l.OwnerReferences[0].UID != "uid-a-v2" {
		t.Errorf("owner not updated: %+v", l.OwnerReferences)
	}
}

func TestReserveReportsFullClusterCIDR(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	cluster := netip.MustParsePrefix("10.42.0.0/23")
	for _, n := range []string{"a", "b"} {
		if _, err := newReserver(t, c, apiNode(n, nil, "")).Reserve(ctx, cluster, 24); err != nil {
			t.Fatal(err)
		}
	}
	_, err := newReserver(t, c, apiNode("c", nil, "")).Reserve(ctx, cluster, 24)
	if err == nil || !strings.Contains(err.Error(), "no free /24 subnet left in cluster CIDR 10.42.0.0/23") {
		t.Fatalf("err = %v", err)
	}
}

func TestReleaseOrphansDeletesLeasesOfDeletedNodes(t *testing.T) {
	ctx := context.Background()
	a, b := apiNode("a", nil, ""), apiNode("b", nil, "")
	c := fake.NewClientset(a, b)
	cluster := netip.MustParsePrefix("10.42.0.0/16")
	pa, _ := newReserver(t, c, a).Reserve(ctx, cluster, 24)
	pb, _ := newReserver(t, c, b).Reserve(ctx, cluster, 24)
	if err := c.CoreV1().Nodes().Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	list, _ := c.CoordinationV1().Leases("kube-system").List(ctx, metav1.ListOptions{})
	var leases []*coordv1.Lease
	for i := range list.Items {
		leases = append(leases, &list.Items[i])
	}
	// The cache still believes b exists for one of the calls: a live GET decides.
	released, err := ReleaseOrphans(ctx, c, "kube-system", leases, func(string) bool { return false }, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(released, []string{SubnetLeaseName(pb)}) {
		t.Fatalf("released %v, want only b's lease %s", released, SubnetLeaseName(pb))
	}
	if _, err := c.CoordinationV1().Leases("kube-system").Get(ctx, SubnetLeaseName(pa), metav1.GetOptions{}); err != nil {
		t.Errorf("a's lease gone: %v", err)
	}
	// The freed subnet is free again.
	pc, err := newReserver(t, c, apiNode("c", nil, "")).Reserve(ctx, cluster, 24)
	if err != nil || pc != pb {
		t.Errorf("new node reserved %s, %v; want the released %s", pc, err, pb)
	}
}

func TestWatcherNodesUseLeaseSubnetsOnlyWhenSpecIsEmpty(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := apiNode("a", nil, "192.168.1.1")
	b := apiNode("b", []string{"10.42.7.0/24"}, "192.168.1.2")
	lease := func(p, holder string) *coordv1.Lease {
		h := holder
		return &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{
			Name: SubnetLeaseName(netip.MustParsePrefix(p)), Namespace: "kube-system",
			Labels: map[string]string{LabelSubnetLease: "true"}},
			Spec: coordv1.LeaseSpec{HolderIdentity: &h}}
	}
	c := fake.NewClientset(a, b,
		lease("10.42.3.0/24", "a"),
		lease("10.42.9.0/24", "b"), // b's spec wins
		lease("10.99.0.0/24", "a"), // outside the cluster CIDR: ignored
		&coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "wgmesh-subnet-10-42-4-0-24", Namespace: "other",
			Labels: map[string]string{LabelSubnetLease: "true"}}}) // other namespace
	w := NewWatcher(c, "kube-system", []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")})
	changes := make(chan Change, 16)
	if err := w.OnChange("a", func(ch Change) { changes <- ch }); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string][]netip.Prefix{}
	for _, n := range w.Nodes() {
		got[n.Name] = n.PodCIDRs
	}
	want := map[string][]netip.Prefix{
		"a": {netip.MustParsePrefix("10.42.3.0/24")},
		"b": {netip.MustParsePrefix("10.42.7.0/24")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("PodCIDRs = %v, want %v", got, want)
	}
}

func TestProblemEventsOnlyWhenAProblemAppearsOrChanges(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	p := newProblemEventsWith(rec)
	log := testLog(t)
	overlap := mesh.Problem{Node: "b", Reason: "OverlappingPodCIDR", Message: "10.42.1.0/24 overlaps node c"}
	if n := p.Report([]mesh.Problem{overlap}, log); n != 1 {
		t.Fatalf("first report recorded %d events", n)
	}
	if n := p.Report([]mesh.Problem{overlap}, log); n != 0 {
		t.Fatalf("unchanged problem recorded %d events", n)
	}
	overlap.Message = "10.42.1.0/24 overlaps node d"
	if n := p.Report([]mesh.Problem{overlap}, log); n != 1 {
		t.Fatalf("changed problem recorded %d events", n)
	}
	p.Report(nil, log)
	if n := p.Report([]mesh.Problem{overlap}, log); n != 1 {
		t.Fatalf("reappearing problem recorded %d events", n)
	}
	close(rec.Events)
	var got []string
	for e := range rec.Events {
		got = append(got, e)
	}
	if len(got) != 3 || got[0] != "Warning OverlappingPodCIDR 10.42.1.0/24 overlaps node c" {
		t.Fatalf("events = %q", got)
	}
}

func TestProblemEventsLandOnTheNode(t *testing.T) {
	c := fake.NewClientset(apiNode("b", nil, ""))
	p := NewProblemEvents(c, "a")
	defer p.Close()
	var buf bytes.Buffer
	p.Report([]mesh.Problem{{Node: "b", Reason: "MissingPublicKey", Message: "node b has no wgmesh.io/public-key"}}, slog.New(slog.NewTextHandler(&buf, nil)))
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := c.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs.Items) > 0 {
			e := evs.Items[0]
			if e.InvolvedObject.Kind != "Node" || e.InvolvedObject.Name != "b" || e.Reason != "MissingPublicKey" || e.Type != corev1.EventTypeWarning || e.Source.Component != FieldManager {
				t.Fatalf("event = %+v", e)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no Event recorded")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSupersededLeasesAreOwnLeasesOnceSpecHasPodCIDR(t *testing.T) {
	lease := func(name, holder string) *coordv1.Lease {
		return &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: coordv1.LeaseSpec{HolderIdentity: &holder}}
	}
	own4 := lease(SubnetLeaseName(netip.MustParsePrefix("10.42.3.0/24")), "a")
	own6 := lease(SubnetLeaseName(netip.MustParsePrefix("fd42::/64")), "a")
	other := lease(SubnetLeaseName(netip.MustParsePrefix("10.42.4.0/24")), "b")
	notOurs := lease("kube-scheduler", "a")
	all := []*coordv1.Lease{own4, own6, other, notOurs}
	for _, tc := range []struct {
		name string
		node *corev1.Node
		want []*coordv1.Lease
	}{
		{"spec empty: the lease is the subnet", apiNode("a", nil, ""), nil},
		{"spec.podCIDRs set", apiNode("a", []string{"10.42.7.0/24"}, ""), []*coordv1.Lease{own4, own6}},
		{"old spec.podCIDR only", &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: corev1.NodeSpec{PodCIDR: "10.42.7.0/24"}}, []*coordv1.Lease{own4, own6}},
		{"spec equal to the lease", apiNode("a", []string{"10.42.3.0/24"}, ""), []*coordv1.Lease{own4, own6}},
		{"holds none", apiNode("c", []string{"10.42.7.0/24"}, ""), nil},
	} {
		if got := SupersededLeases(tc.node, all); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestClusterReleasesOwnLeaseWhenSpecPodCIDRAppears(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := apiNode("a", nil, ""), apiNode("b", nil, "")
	c := fake.NewClientset(a, b)
	cluster := netip.MustParsePrefix("10.42.0.0/16")
	pa, _ := newReserver(t, c, a).Reserve(ctx, cluster, 24)
	pb, _ := newReserver(t, c, b).Reserve(ctx, cluster, 24)

	cl := NewCluster(c, ClusterConfig{NodeName: "a", Namespace: "kube-system", ClusterCIDRs: []netip.Prefix{cluster}, Log: testLog(t)})
	defer cl.Close()
	if err := cl.Start(ctx, func(Change) {}); err != nil {
		t.Fatal(err)
	}
	// Spec empty: the Lease is a's subnet and stays.
	if got, err := cl.ReleaseSuperseded(ctx); err != nil || len(got) != 0 {
		t.Fatalf("released %v, %v with an empty spec", got, err)
	}

	a = a.DeepCopy()
	a.Spec.PodCIDR, a.Spec.PodCIDRs = "10.42.9.0/24", []string{"10.42.9.0/24"}
	if _, err := c.CoreV1().Nodes().Update(ctx, a, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, _ := cl.watcher.Node("a"); n != nil && len(n.Spec.PodCIDRs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cache never saw the spec")
		}
		time.Sleep(10 * time.Millisecond)
	}
	released, err := cl.ReleaseSuperseded(ctx)
	if err != nil || !reflect.DeepEqual(released, []string{SubnetLeaseName(pa)}) {
		t.Fatalf("released %v, %v; want a's %s", released, err, SubnetLeaseName(pa))
	}
	if _, err := c.CoordinationV1().Leases("kube-system").Get(ctx, SubnetLeaseName(pb), metav1.GetOptions{}); err != nil {
		t.Errorf("b's lease gone: %v", err)
	}
	for _, n := range cl.Nodes() {
		if n.Name == "a" && !reflect.DeepEqual(n.PodCIDRs, []netip.Prefix{netip.MustParsePrefix("10.42.9.0/24")}) {
			t.Errorf("a's pod CIDRs %v, want the spec", n.PodCIDRs)
		}
	}
}

// k3sNode is a Node as a k3s agent node has it: besides what wgmesh reads,
// labels, foreign annotations, managedFields, the kubelet's conditions,
// capacity and an image list.
func k3sNode(name, podCIDR, internal string) *corev1.Node {
	n := apiNode(name, []string{podCIDR}, internal)
	n.ResourceVersion = "42"
	n.Labels = map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": "k3s"}
	n.Annotations = map[string]string{
		mesh.AnnotationPublicKey: "PUB-" + name, mesh.AnnotationEndpoint: internal + ":51820",
		"k3s.io/node-args": `["agent","--flannel-backend","none"]`, "node.alpha.kubernetes.io/ttl": "0",
	}
	n.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "k3s", Operation: metav1.ManagedFieldsOperationUpdate,
		FieldsV1: &metav1.FieldsV1{Raw: []byte(strings.Repeat(`{"f:metadata":{"f:labels":{}}}`, 40))}}}
	n.Status.Conditions = []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory"},
		{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: ReadyReason},
	}
	n.Status.Capacity = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi")}
	n.Status.NodeInfo = corev1.NodeSystemInfo{KubeletVersion: "v1.37.2+k3s1", OSImage: "NixOS 25.11", ContainerRuntimeVersion: "containerd://2.1.4"}
	for i := range 20 {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{
			Names:     []string{fmt.Sprintf("docker.io/library/app-%d@sha256:%064x", i, i), fmt.Sprintf("docker.io/library/app-%d:v1.%d", i, i)},
			SizeBytes: int64(i) << 20,
		})
	}
	return n
}

func TestWatcherCachesOnlyWhatTheAgentReads(t *testing.T) {
	fat := k3sNode("a", "10.42.1.0/24", "192.168.1.10")
	c := fake.NewClientset(fat.DeepCopy())
	w := NewWatcher(c, "kube-system", nil)
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, ok := w.Node("a")
	if !ok {
		t.Fatal("node a not cached")
	}
	// Everything the agent reads is there.
	if !reflect.DeepEqual(NodeFromAPI(got), NodeFromAPI(fat)) {
		t.Errorf("mesh view differs:\ncached %+v\nAPI    %+v", NodeFromAPI(got), NodeFromAPI(fat))
	}
	if got.UID != fat.UID || got.ResourceVersion != fat.ResourceVersion || !networkReady(got) || !sameNetworkCondition(got, fat) {
		t.Errorf("cached identity or NetworkUnavailable lost: %+v", got)
	}
	if d := AnnotationsToPublish(got, map[string]string{mesh.AnnotationPublicKey: "PUB-a"}); len(d) != 0 {
		t.Errorf("published annotations look missing: %v", d)
	}
	// The rest is not kept.
	if len(got.Labels) != 0 || len(got.ManagedFields) != 0 || len(got.Status.Images) != 0 || len(got.Status.Capacity) != 0 ||
		got.Status.NodeInfo != (corev1.NodeSystemInfo{}) || len(got.Status.Conditions) != 1 || len(got.Annotations) != 2 {
		t.Errorf("cache keeps more than the agent reads: %+v", got)
	}
	again, _ := slimNode(got)
	if !reflect.DeepEqual(again, got) {
		t.Errorf("slimNode is not idempotent")
	}
	t.Logf("cached Node: %d bytes (protobuf) instead of %d", got.Size(), fat.Size())
}
