//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wgmesh/wgmesh/internal/bridgenf"
	"github.com/wgmesh/wgmesh/test/e2e/kubenode"
	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// TestK3sStack runs wgmesh beside everything else a k3s node runs:
// kube-proxy (iptables), k3s's network policy controller (kube-router's
// netpol) on every node, CoreDNS behind kube-dns 10.43.0.10, the kubelets
// pointing their pods there, and an internet host on the underlay. The
// first node starts with net.bridge.bridge-nf-call-iptables=0, as a plain
// kubelet node may: its agent must turn it on.
func TestK3sStack(t *testing.T) {
	kc := startKubeletCluster(t, kubeletNodeCount)
	ctx := t.Context()
	bnf := "net.bridge.bridge-nf-call-iptables"
	off := kc.nodes[0]
	if _, err := off.Run(ctx, "sysctl", "-qw", bnf+"=0"); err != nil {
		t.Fatal(err)
	}
	before := map[string]string{}
	for _, k := range kc.nodes {
		before[k.Name] = readBridgeNF(t, k)
	}
	if before[off.Name] != "0" {
		t.Fatalf("%s: could not set %s=0 before wgmesh (read %s)", off.Name, bnf, before[off.Name])
	}
	// wgmesh as users install it. Its agent container cannot write
	// /proc/sys; the CNI plugin sets the sysctl at every ADD (checked below,
	// once pods exist).
	kc.installDaemonSet(t)
	dnsPod, err := kubenode.StartK3sStack(ctx, kc.Lab, kc.nodes, kc.nodes[0].Name)
	t.Cleanup(func() {
		for _, k := range kc.nodes {
			k.StopNetworkPolicy()
			_ = k.StopKubeProxy(context.Background())
		}
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, kc.logs()+kc.stackLogs())
	}
	t.Logf("CoreDNS %s Ready on %s (%s), API reached through the kubernetes Service", dnsPod.Name, dnsPod.Spec.NodeName, dnsPod.Status.PodIP)
	if err := kc.waitDefaultServiceAccount(ctx); err != nil {
		t.Fatal(err)
	}
	// Two workload pods per node: -0 is a Service backend, -1 a client.
	var names []string
	for _, k := range kc.nodes {
		for i := range 2 {
			name := fmt.Sprintf("k3s-%s-%d", k.Name, i)
			p := kubenode.WorkloadPod(name, k.Name)
			p.Labels = map[string]string{"app": "k3s-stack", "pod": name}
			if err := kc.createPod(ctx, p); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
	}
	pods, err := kc.waitRunning(ctx, names, 120*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, kc.logs())
	}
	for _, k := range kc.nodes {
		after := readBridgeNF(t, k)
		t.Logf("FIGURE br_netfilter: %s %s=%s before wgmesh, %s once its pods exist", k.Name, bnf, before[k.Name], after)
		if after != "1" {
			t.Errorf("%s: %s=%s once pods exist, want 1 (the CNI plugin sets it at ADD)", k.Name, bnf, after)
		}
	}

	t.Run("BridgeNetfilter", func(t *testing.T) { testBridgeNetfilterSameBridgeService(t, kc, pods, before) })
	t.Run("DNS", func(t *testing.T) { testDNS(t, kc, pods, dnsPod) })
	t.Run("HostPort", func(t *testing.T) { testHostPort(t, kc) })
	t.Run("Egress", func(t *testing.T) { testEgress(t, kc, pods) })
	t.Run("NetworkPolicy", func(t *testing.T) { testNetworkPolicy(t, kc) })
}

func readBridgeNF(t *testing.T, k *kubenode.Node) string {
	t.Helper()
	out, err := k.Run(t.Context(), "cat", filepath.Join("/proc/sys", bridgenf.Sysctl(false)))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// stackLogs is the tail of every node's network policy controller log and
// the internet host's logs.
func (kc *kubeletCluster) stackLogs() string {
	var b strings.Builder
	for _, k := range kc.nodes {
		b.WriteString(tailFile(filepath.Join(k.Dir, kubenode.NetpolProgram+".log"), k.Name+" "+kubenode.NetpolProgram))
	}
	for _, n := range []string{"coredns", "http"} {
		b.WriteString(tailFile(filepath.Join(kc.InternetDir(), n+".log"), "internet "+n))
	}
	return b.String()
}

// podNS is the network namespace of a running pod.
func (kc *kubeletCluster) podNS(t *testing.T, p *corev1.Pod) string {
	t.Helper()
	ns, err := kc.node(p.Spec.NodeName).PodNetNS(p)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// A pod reaches a ClusterIP whose only backend is another pod on its own
// node's bridge, on the node whose bridge-nf-call-iptables was 0 before
// its agent started and on one where it was 1: the reply is switched on
// cni0 and must still be un-NATed (dataplane/brnetfilter.go).
func testBridgeNetfilterSameBridgeService(t *testing.T, kc *kubeletCluster, pods []*corev1.Pod, before map[string]string) {
	ctx := t.Context()
	for _, k := range kc.nodes[:2] {
		backend, client := "k3s-"+k.Name+"-0", "k3s-"+k.Name+"-1"
		svc := createService(t, kc, "default", "same-"+k.Name, map[string]string{"pod": backend})
		dst := netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 80)
		cns := kc.podNS(t, podNamed(pods, client))
		// Until kube-proxy has synced the new Service, nothing answers.
		if err := kubeletPoll(ctx, 30*time.Second, func() error {
			_, err := kubenode.ProbeHTTPAt(ctx, cns, dst, 2*time.Second)
			return err
		}); err != nil {
			t.Errorf("%s: %s -> %s (backend on the same bridge) never answered: %v", k.Name, client, dst, err)
			continue
		}
		ok := 0
		const tries = 10
		var last error
		for range tries {
			got, err := kubenode.ProbeHTTPAt(ctx, cns, dst, 3*time.Second)
			if err == nil && strings.HasPrefix(got, "pod="+backend+" ") {
				ok++
			} else if err != nil {
				last = err
			}
		}
		t.Logf("FIGURE same-bridge ClusterIP: %s (bridge-nf-call-iptables %s before the agent): %s -> %s (only backend %s, same node): %d/%d answered",
			k.Name, before[k.Name], client, dst, backend, ok, tries)
		if ok != tries {
			t.Errorf("%s: %d of %d requests to %s (backend on the same bridge) failed; last: %v", k.Name, tries-ok, tries, dst, last)
		}
	}
}

// createService creates a ClusterIP Service on the workload's HTTP port.
func createService(t *testing.T, kc *kubeletCluster, ns, name string, selector map[string]string) *corev1.Service {
	t.Helper()
	ctx := t.Context()
	svc, err := kc.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{
			Name: "http", Port: 80, TargetPort: intstr.FromInt32(kubenode.WorkloadHTTPPort), Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kc.Client.CoreV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return svc
}

func podNamed(pods []*corev1.Pod, name string) *corev1.Pod {
	for _, p := range pods {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Every pod, on every node (CoreDNS's own included), resolves
// kubernetes.default (the API's Service), a Service name of its namespace
// and a name only the lab's upstream resolver knows (CoreDNS forwards it),
// through its own resolv.conf (kubelet clusterDNS 10.43.0.10, search
// default.svc.cluster.local ...).
func testDNS(t *testing.T, kc *kubeletCluster, pods []*corev1.Pod, dnsPod *corev1.Pod) {
	ctx := t.Context()
	svc := createService(t, kc, "default", "dns-target", map[string]string{"app": "k3s-stack"})
	want := map[string]string{
		"kubernetes.default":                   "10.43.0.1",
		"dns-target":                           svc.Spec.ClusterIP,
		"www." + kubenode.InternetDomain + ".": lab.InternetIP.String(),
	}
	ok, total := 0, 0
	nodes := map[string]bool{}
	for _, p := range pods {
		// Ask the pod's own resolver, from its node.
		nodeNS := lab.NetNSPath(kc.node(p.Spec.NodeName).NetNS)
		dst := netip.AddrPortFrom(netip.MustParseAddr(p.Status.PodIP), kubenode.WorkloadHTTPPort)
		for name, addr := range want {
			total++
			var got string
			err := kubeletPoll(ctx, 20*time.Second, func() error {
				var err error
				got, err = kubenode.GetPath(ctx, nodeNS, dst, "/resolve?name="+name, 5*time.Second)
				if err == nil && got != "addrs="+addr {
					err = fmt.Errorf("answer %q, want addrs=%s", got, addr)
				}
				return err
			})
			if err != nil {
				t.Errorf("pod %s on %s: resolve %s: %v", p.Name, p.Spec.NodeName, name, err)
				continue
			}
			ok++
			nodes[p.Spec.NodeName] = true
		}
	}
	t.Logf("FIGURE DNS: %d/%d lookups answered (%d names from %d pods on %d nodes; CoreDNS on %s): kubernetes.default, a Service name, an upstream name",
		ok, total, len(want), len(pods), len(nodes), dnsPod.Spec.NodeName)
	if ok != total {
		t.Log(kc.logs())
	}
}

// A pod with a hostPort (the conflist's portmap plugin) on one node,
// reached at that node's address from another node and from a pod on
// another node.
func testHostPort(t *testing.T, kc *kubeletCluster) {
	ctx := t.Context()
	const hostPort = 31999
	target := kc.nodes[1]
	p := kubenode.WorkloadPod("k3s-hostport", target.Name)
	p.Spec.Containers[0].Ports[0].HostPort = hostPort
	if err := kc.createPod(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kc.deletePods(context.Background(), []string{p.Name}) })
	running, err := kc.waitRunning(ctx, []string{p.Name}, 60*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, kc.logs())
	}
	dst := netip.AddrPortFrom(target.Addr, hostPort)
	from := kc.nodes[0]
	client, err := kc.Client.CoreV1().Pods(kubeletPodNS).Get(ctx, "k3s-"+from.Name+"-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []struct{ what, netns string }{
		{"node " + from.Name, lab.NetNSPath(from.NetNS)},
		{"pod " + client.Name + " on " + from.Name, kc.podNS(t, client)},
	} {
		const tries = 5
		ok := 0
		var seen string
		var last error
		for range tries {
			got, err := kubenode.GetPath(ctx, src.netns, dst, "/client", 3*time.Second)
			if err != nil {
				last = err
				continue
			}
			ok++
			seen = got
		}
		t.Logf("FIGURE hostPort: %s -> %s (pod %s %s:%d): %d/%d answered, backend saw %s", src.what, dst, running[0].Name, running[0].Status.PodIP, kubenode.WorkloadHTTPPort, ok, tries, seen)
		if ok != tries {
			t.Errorf("%s -> hostPort %s: %d of %d failed; last: %v", src.what, dst, tries-ok, tries, last)
		}
	}
}

// A pod's traffic to the internet host leaves masqueraded to its node's
// address (the internet host has no route to the pod network).
func testEgress(t *testing.T, kc *kubeletCluster, pods []*corev1.Pod) {
	ctx := t.Context()
	dst := netip.AddrPortFrom(lab.InternetIP, kubenode.WorkloadHTTPPort)
	ok := 0
	for _, k := range kc.nodes {
		p := podNamed(pods, "k3s-"+k.Name+"-1")
		var got string
		err := kubeletPoll(ctx, 15*time.Second, func() error {
			var err error
			got, err = kubenode.GetPath(ctx, kc.podNS(t, p), dst, "/client", 3*time.Second)
			return err
		})
		if err != nil {
			t.Errorf("pod %s on %s -> internet %s: %v", p.Name, k.Name, dst, err)
			continue
		}
		if got != "client="+k.Addr.String() {
			t.Errorf("pod %s (%s) on %s -> internet: the server saw %q, want client=%s (the node's address)", p.Name, p.Status.PodIP, k.Name, got, k.Addr)
			continue
		}
		ok++
		t.Logf("pod %s (%s) on %s -> %s: server saw %s", p.Name, p.Status.PodIP, k.Name, dst, got)
	}
	t.Logf("FIGURE egress: %d/%d pods reached the internet host masqueraded to their node's address", ok, len(kc.nodes))
}
