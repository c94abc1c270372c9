//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/wgmesh/wgmesh/test/e2e/kubenode"
)

// servicesNodePort is the NodePort the scenario asks for.
const servicesNodePort = 30080

// servicesTries is how many requests each source sends down each path:
// with backends on three nodes, enough that every path reaches backends on
// other nodes, where a wrong source address into the tunnel is dropped.
const servicesTries = 12

// testServicesThroughKubeProxy runs real kube-proxy beside wgmesh on every
// node, in each mode a k3s node can run it (iptables, then nftables), and
// reaches the workload pods (two per node) through a ClusterIP and a
// NodePort Service, from pods, from the nodes themselves and from outside
// the nodes. kube-proxy masquerades traffic to a Service from outside the
// pod network, and NodePort traffic, on its way out: into wgmesh0 when the
// backend is on another node. The source it picks must be inside the
// node's pod subnet (design rule 7) or the peer's WireGuard drops the
// packet. Every request must answer. In a dual-stack lab both Services
// are RequireDualStack and every path is taken over IPv4, then IPv6.
func testServicesThroughKubeProxy(t *testing.T, kc *kubeletCluster, pods []*corev1.Pod) {
	ctx := t.Context()
	svcs := kc.Client.CoreV1().Services(kubeletPodNS)
	port := corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(kubenode.WorkloadHTTPPort), Protocol: corev1.ProtocolTCP}
	selector := map[string]string{"app": "wgmesh-workload"}
	families := []corev1.IPFamily{corev1.IPv4Protocol}
	var policy *corev1.IPFamilyPolicy
	if kc.DualStack {
		families = append(families, corev1.IPv6Protocol)
		policy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
	}
	cip, err := svcs.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "workload"},
		Spec:       corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{port}, IPFamilyPolicy: policy},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	np := port
	np.NodePort = servicesNodePort
	if _, err := svcs.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "workload-nodeport"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: selector, Ports: []corev1.ServicePort{np}, IPFamilyPolicy: policy},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, name := range []string{"workload", "workload-nodeport"} {
			_ = svcs.Delete(context.Background(), name, metav1.DeleteOptions{})
		}
	})
	if len(cip.Spec.ClusterIPs) != len(families) {
		t.Fatalf("Service workload has ClusterIPs %v, want one of each of %v", cip.Spec.ClusterIPs, families)
	}

	backendNode := map[string]string{} // pod name -> node
	for _, p := range pods {
		backendNode[p.Name] = p.Spec.NodeName
	}

	// The nodes run kube-proxy in iptables mode from the start, as k3s
	// does (the DaemonSet's agents reach the API through it); each mode
	// below runs its own, and the first one is back afterwards.
	for _, k := range kc.nodes {
		if err := k.StopKubeProxy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, k := range kc.nodes {
			if err := k.StartKubeProxy(context.Background(), "iptables"); err != nil {
				t.Error(err)
			}
		}
	})
	for _, mode := range kubenode.ProxyModes {
		t.Run(mode, func(t *testing.T) {
			for _, k := range kc.nodes {
				if err := k.StartKubeProxy(ctx, mode); err != nil {
					t.Fatalf("%v\n%s", err, kc.logs())
				}
				t.Cleanup(func() {
					if err := k.StopKubeProxy(context.Background()); err != nil {
						t.Error(err)
					}
				})
			}
			for i, family := range families {
				clusterIP := netip.AddrPortFrom(netip.MustParseAddr(cip.Spec.ClusterIPs[i]), 80)
				nodePort := func(name string) netip.AddrPort {
					n := kc.node(name)
					if family == corev1.IPv6Protocol {
						return netip.AddrPortFrom(n.Addr6, servicesNodePort)
					}
					return netip.AddrPortFrom(n.Addr, servicesNodePort)
				}
				t.Run(string(family), func(t *testing.T) {
					kc.probeServices(t, pods, clusterIP, nodePort, backendNode)
				})
			}
		})
	}
}

// probeServices waits until a pod on every node reaches every backend
// through the ClusterIP (pod traffic needs no masquerade, so this only
// says kube-proxy has synced), then sends servicesTries requests down each
// path and requires every one to answer.
func (kc *kubeletCluster) probeServices(t *testing.T, pods []*corev1.Pod, clusterIP netip.AddrPort, nodePort func(string) netip.AddrPort, backendNode map[string]string) {
	ctx := t.Context()
	nodeNS := func(name string) string { return filepath.Join("/run/netns", kc.node(name).NetNS) }
	for _, k := range kc.nodes {
		pod := firstPodOn(pods, k.Name)
		podNS, err := k.PodNetNS(pod)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		err = kubeletPoll(ctx, 60*time.Second, func() error {
			if got, err := kubenode.ProbeHTTPAt(ctx, podNS, clusterIP, 2*time.Second); err == nil {
				name, _, _ := strings.Cut(strings.TrimPrefix(got, "pod="), " ")
				seen[name] = true
			}
			if len(seen) < len(pods) {
				return fmt.Errorf("%s reached %d of %d backends through %s", pod.Name, len(seen), len(pods), clusterIP)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%v\n%s", err, kc.logs())
		}
	}

	// via is the node whose kube-proxy picks the backend: the request
	// crosses the tunnel when the backend is on another node than via.
	type path struct {
		name, from, via, netns string
		dst                    netip.AddrPort
	}
	var paths []path
	for _, k := range kc.nodes {
		// A pod of this node, to the ClusterIP (its own node's backends,
		// other nodes', itself: hairpin) and to another node's NodePort.
		pod := firstPodOn(pods, k.Name)
		podNS, err := k.PodNetNS(pod)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path{"pod -> ClusterIP", pod.Name, k.Name, podNS, clusterIP})
		paths = append(paths, path{"node -> ClusterIP", k.Name, k.Name, nodeNS(k.Name), clusterIP})
		for _, o := range kc.nodes {
			if o != k {
				paths = append(paths, path{"node -> other node's NodePort", k.Name, o.Name, nodeNS(k.Name), nodePort(o.Name)})
				paths = append(paths, path{"pod -> other node's NodePort", pod.Name, o.Name, podNS, nodePort(o.Name)})
			}
		}
		paths = append(paths, path{"outside -> NodePort", "control-plane", k.Name, filepath.Join("/run/netns", kc.ControlPlaneNetNS()), nodePort(k.Name)})
	}

	var table strings.Builder
	failed := 0
	for _, p := range paths {
		ok, remote := 0, 0
		var errs []string
		for range servicesTries {
			got, err := kubenode.ProbeHTTPAt(ctx, p.netns, p.dst, 3*time.Second)
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			ok++
			name, _, _ := strings.Cut(strings.TrimPrefix(got, "pod="), " ")
			if n := backendNode[name]; n != "" && n != p.via {
				remote++
			}
		}
		fmt.Fprintf(&table, "%-30s %-14s -> %-20s %2d/%d answered, %2d across the tunnel\n", p.name, p.from, p.dst, ok, servicesTries, remote)
		if ok != servicesTries {
			failed++
			slices.Sort(errs)
			t.Errorf("%s: %s -> %s: %d of %d failed: %s", p.name, p.from, p.dst, servicesTries-ok, servicesTries, strings.Join(slices.Compact(errs), "; "))
		}
		if ok > 0 && remote == 0 {
			t.Errorf("%s: %s -> %s: no answer came from a backend on another node in %d requests; the path across the tunnel was not exercised", p.name, p.from, p.dst, ok)
		}
	}
	t.Logf("FIGURE Services through kube-proxy (%s), %d backends on %d nodes, %d requests per path:\n%s", t.Name(), len(pods), len(kc.nodes), servicesTries, table.String())
	fam := "IPv4"
	if clusterIP.Addr().Is6() {
		fam = "IPv6"
	}
	seen, wrong := kc.checkTunnelSources(t)
	switch {
	case seen[fam] == 0:
		t.Errorf("no node's conntrack table holds a masqueraded %s connection to a backend on another node", fam)
	case wrong[fam] > 0:
		t.Errorf("%d of %d masqueraded %s connections into the tunnel did not carry the node's tunnel address", wrong[fam], seen[fam], fam)
	default:
		t.Logf("FIGURE %d masqueraded %s connections into the tunnel in the nodes' conntrack tables, each from the node's tunnel address", seen[fam], fam)
	}
	if failed > 0 {
		for _, k := range kc.nodes {
			out, _ := k.Run(ctx, "ip", "-br", "addr")
			t.Logf("%s addresses:\n%s", k.Name, out)
		}
		t.Log(kc.logs())
	}
}

// firstPodOn is the first of pods on node.
func firstPodOn(pods []*corev1.Pod, node string) *corev1.Pod {
	for _, p := range pods {
		if p.Spec.NodeName == node {
			return p
		}
	}
	return nil
}
