package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/wgmesh/wgmesh/internal/kube"
	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/netconv"
)

// clusterNodes are n Node objects as a k3s cluster has them: what wgmesh
// reads (a pod CIDR, a public key and an endpoint annotation, an internal
// address) and what the kubelet and k3s add (labels, annotations,
// managedFields, conditions, capacity, node info, an image list), so that
// memory figures count what an agent's informer really receives. Node i has
// pod CIDR 10.(i/256).(i%256).0/24.
func clusterNodes(n int) ([]*corev1.Node, error) {
	out := make([]*corev1.Node, n)
	for i := range out {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("node-%05d", i)
		ip := netip.AddrFrom4([4]byte{192, 168, byte(i / 250), byte(i%250 + 1)})
		cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 256), byte(i % 256), 0}), 24).String()
		out[i] = &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name,
				Labels: map[string]string{
					"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
					"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": "k3s",
				},
				Annotations: map[string]string{
					mesh.AnnotationPublicKey:                                 k.PublicKey().String(),
					mesh.AnnotationEndpoint:                                  netip.AddrPortFrom(ip, 51820).String(),
					"k3s.io/node-args":                                       `["agent","--flannel-backend","none","--node-ip","` + ip.String() + `"]`,
					"k3s.io/node-config-hash":                                "4MPHSAKPDKHBFCJTDQ4LBSXDOUC5JNLY6GKYGJUN5ZEOXTRKFDMQ====",
					"k3s.io/internal-ip":                                     ip.String(),
					"node.alpha.kubernetes.io/ttl":                           "0",
					"volumes.kubernetes.io/controller-managed-attach-detach": "true",
				},
				ManagedFields: []metav1.ManagedFieldsEntry{
					{Manager: "k3s", Operation: metav1.ManagedFieldsOperationUpdate, FieldsV1: fieldsV1("f:metadata", 20)},
					{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status", FieldsV1: fieldsV1("f:status", 30)},
				},
			},
			Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}, ProviderID: "k3s://" + name},
			Status: corev1.NodeStatus{
				Addresses:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}, {Type: corev1.NodeHostName, Address: name}},
				Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi"), corev1.ResourcePods: resource.MustParse("110")},
				Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi"), corev1.ResourcePods: resource.MustParse("110")},
				NodeInfo:    corev1.NodeSystemInfo{KubeletVersion: "v1.37.2+k3s1", OSImage: "NixOS 25.11", ContainerRuntimeVersion: "containerd://2.1.4", KernelVersion: "6.12.40", Architecture: "amd64", OperatingSystem: "linux"},
			},
		}
		for _, c := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, corev1.NodeReady} {
			status := corev1.ConditionFalse
			if c == corev1.NodeReady {
				status = corev1.ConditionTrue
			}
			out[i].Status.Conditions = append(out[i].Status.Conditions, corev1.NodeCondition{Type: c, Status: status, Reason: "Kubelet" + string(c), Message: "kubelet reports " + string(c)})
		}
		for j := range 20 {
			out[i].Status.Images = append(out[i].Status.Images, corev1.ContainerImage{
				Names:     []string{fmt.Sprintf("docker.io/library/app-%d@sha256:%064x", j, j), fmt.Sprintf("docker.io/library/app-%d:v1.%d", j, j)},
				SizeBytes: int64(j+1) << 20,
			})
		}
	}
	return out, nil
}

// fieldsV1 is a managedFields entry's field set with n fields under top.
func fieldsV1(top string, n int) *metav1.FieldsV1 {
	fields := make([]string, n)
	for i := range fields {
		fields[i] = fmt.Sprintf(`"f:field-%d":{}`, i)
	}
	return &metav1.FieldsV1{Raw: []byte(`{"` + top + `":{` + strings.Join(fields, ",") + `}}`)}
}

// devicePeers is what the WireGuard device reports once desired is applied.
func devicePeers(desired []mesh.Peer) []wgtypes.Peer {
	out := make([]wgtypes.Peer, len(desired))
	for i, p := range desired {
		out[i] = wgtypes.Peer{PublicKey: p.PublicKey, PersistentKeepaliveInterval: p.PersistentKeepalive}
		if p.Endpoint.IsValid() {
			out[i].Endpoint = net.UDPAddrFromAddrPort(p.Endpoint)
		}
		for _, a := range p.AllowedIPs {
			out[i].AllowedIPs = append(out[i].AllowedIPs, *netconv.IPNet(a.Masked()))
		}
	}
	return out
}

// watched is a kube.Watcher started on a fake clientset holding n Nodes.
type watched struct {
	client *fake.Clientset
	w      *kube.Watcher
	objs   []*corev1.Node
}

// fakeCluster is a fake clientset holding the n Nodes of clusterNodes,
// and those Nodes.
func fakeCluster(n int) (*fake.Clientset, []*corev1.Node, error) {
	objs, err := clusterNodes(n)
	if err != nil {
		return nil, nil, err
	}
	rt := make([]runtime.Object, len(objs))
	for i, o := range objs {
		rt[i] = o
	}
	return fake.NewClientset(rt...), objs, nil
}

func startWatcher(ctx context.Context, n int) (*watched, error) {
	client, objs, err := fakeCluster(n)
	if err != nil {
		return nil, err
	}
	w := kube.NewWatcher(client, "kube-system", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	if err := w.OnChange("node-00000", func(kube.Change) {}); err != nil {
		return nil, err
	}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	return &watched{client: client, w: w, objs: objs}, nil
}

// startServedWatcher starts the agent's Watcher on a clientset that builds
// the n Nodes afresh for its one list request, as an API server sends them,
// and whose watch stays quiet: the process then holds only the Nodes the
// informer keeps, as an agent does (a fake clientset's tracker, as in
// startWatcher, would hold a copy of every Node besides).
func startServedWatcher(ctx context.Context, n int) (*kube.Watcher, error) {
	client := fake.NewClientset()
	client.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		objs, err := clusterNodes(n)
		if err != nil {
			return true, nil, err
		}
		list := &corev1.NodeList{Items: make([]corev1.Node, len(objs))}
		for i, o := range objs {
			list.Items[i] = *o
		}
		return true, list, nil
	})
	client.PrependWatchReactor("nodes", func(k8stesting.Action) (bool, watch.Interface, error) { return true, watch.NewFake(), nil })
	w := kube.NewWatcher(client, "kube-system", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	if err := w.OnChange("node-00000", func(kube.Change) {}); err != nil {
		return nil, err
	}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

// reconcileLoop starts the Watcher on a cluster of n Nodes and returns one
// full reconcile of node-00000 (Watcher.Nodes, mesh.Desired, the peer and
// route diffs against a device and table that already match), which fails
// when the steady state has anything to write.
func reconcileLoop(ctx context.Context, n int) (func() error, error) {
	wd, err := startWatcher(ctx, n)
	if err != nil {
		return nil, err
	}
	nodes := wd.w.Nodes()
	if len(nodes) != n {
		return nil, fmt.Errorf("informer cache holds %d of %d nodes", len(nodes), n)
	}
	prev, problems := mesh.Desired(nodes[0], nodes, mesh.Options{})
	if len(problems) > 0 {
		return nil, fmt.Errorf("problems: %+v", problems[0])
	}
	dev, routes := devicePeers(prev.Peers), prev.Routes
	return func() error {
		nodes := wd.w.Nodes()
		s, _ := mesh.Desired(nodes[0], nodes, mesh.Options{})
		if cfg := mesh.DiffPeers(dev, s.Peers); len(cfg.Peers) != 0 {
			return fmt.Errorf("steady state has %d peer ops", len(cfg.Peers))
		}
		if d := mesh.DiffRoutes(routes, s.Routes); !d.Empty() {
			return fmt.Errorf("steady state has route ops")
		}
		return nil
	}, nil
}

// Reconcile measures one full reconcile of node-00000 in a cluster of n
// Nodes held by the agent's informer cache (kube.Watcher on a fake
// clientset): Watcher.Nodes, mesh.Desired, and the diffs against a device
// and a route table that already match (the steady state: no writes). It
// runs BenchmarkReconcile's body through testing.Benchmark, for the table.
func Reconcile(ctx context.Context, sizes []int) ([]Row, error) {
	var rows []Row
	for _, n := range sizes {
		ctx, cancel := context.WithCancel(ctx)
		loop, err := reconcileLoop(ctx, n)
		if err != nil {
			cancel()
			return rows, err
		}
		var failed error
		res := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := loop(); err != nil {
					failed = err
				}
			}
		})
		cancel()
		if failed != nil {
			return rows, fmt.Errorf("%d nodes: %w", n, failed)
		}
		ms := float64(res.NsPerOp()) / 1e6
		sec := "agent at scale"
		r := Row{Section: sec, Name: fmt.Sprintf("full reconcile, %d nodes (informer cache -> Desired -> diff)", n), Value: ms, Unit: "ms CPU/op",
			Note: fmt.Sprintf("%d allocs, %.1f MiB per reconcile; %d runs", res.AllocsPerOp(), float64(res.AllocedBytesPerOp())/(1<<20), res.N)}
		if n == 1000 {
			r = r.goal("< 100 ms", ms < 100)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// APILoad starts the Watcher on a cluster of n Nodes, then for window
// lets the kubelets update their Node status (heartbeats) while the agent
// reconciles every 100 ms, and counts the requests the agent made, by verb
// and resource. An informer-based agent makes one list and one watch per
// resource at start and nothing afterwards.
func APILoad(ctx context.Context, n int, window time.Duration) ([]Row, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Count through a reactor on a fresh clientset so that the
	// heartbeats written below (by the "kubelets") are told apart.
	client, objs, err := fakeCluster(n)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	counts := map[string]int{}
	kubelet := false
	count := func(a k8stesting.Action) {
		mu.Lock()
		defer mu.Unlock()
		if !kubelet || a.GetVerb() != "update" {
			counts[a.GetVerb()+" "+a.GetResource().Resource]++
		}
	}
	client.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) { count(a); return false, nil, nil })
	client.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) { count(a); return false, nil, nil })

	w := kube.NewWatcher(client, "kube-system", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	changes := 0
	if err := w.OnChange("node-00000", func(kube.Change) { mu.Lock(); changes++; mu.Unlock() }); err != nil {
		return nil, err
	}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	mu.Lock()
	atStart := fmtCounts(counts)
	clear(counts)
	kubelet = true
	mu.Unlock()

	reconciles, heartbeats := 0, 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(window)
	for time.Now().Before(end) {
		<-tick.C
		nodes := w.Nodes()
		mesh.Desired(nodes[0], nodes, mesh.Options{})
		reconciles++
		// Ten kubelets post status, as every node does every 10 s or so.
		for j := range 10 {
			o := objs[(heartbeats+j)%n].DeepCopy()
			o.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}
			if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, o, metav1.UpdateOptions{}); err != nil {
				return nil, fmt.Errorf("heartbeat: %w", err)
			}
		}
		heartbeats += 10
	}
	mu.Lock()
	during := fmtCounts(counts)
	total := 0
	for _, v := range counts {
		total += v
	}
	mu.Unlock()
	sec := "agent at scale"
	return []Row{
		{Section: sec, Name: fmt.Sprintf("API requests at start, %d nodes", n), Value: float64(sumCounts(atStart)), Unit: "requests", Note: strings.Join(atStart, ", ")},
		Row{Section: sec, Name: fmt.Sprintf("API requests over %s: %d reconciles, %d node heartbeats", window, reconciles, heartbeats), Value: float64(total), Unit: "requests",
			Note: "reads come from the informer cache; " + strings.Join(during, ", ")}.goal("0 (watch only)", total == 0),
	}, nil
}

func fmtCounts(m map[string]int) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, v))
	}
	slices.Sort(out)
	return out
}

func sumCounts(s []string) int {
	t := 0
	for _, e := range s {
		var v int
		fmt.Sscanf(e[strings.LastIndex(e, "=")+1:], "%d", &v)
		t += v
	}
	return t
}
