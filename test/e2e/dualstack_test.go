//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/test/e2e/kubenode"
	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// dualStackNodeCount is how many kubelet nodes the dual-stack scenario
// runs: three, so that a NodePort request can cross the tunnel to a third
// node, as in the IPv4 scenario.
const dualStackNodeCount = 3

// TestDualStackServicesThroughKubeProxy is issue 17's table of Service
// paths over IPv6 (and IPv4 on the same lab): a dual-stack kubelet lab
// (pod network 10.42.0.0/16,fd42::/56, Services 10.43.0.0/16,fd43::/112,
// an IPv6 underlay, kubelet --node-ip of both families), real kube-proxy in
// iptables then nftables mode with --cluster-cidr of both families, and
// RequireDualStack ClusterIP and NodePort Services. kube-proxy masquerades
// IPv6 Service traffic from outside the pod network, and IPv6 NodePort
// traffic, into wgmesh0 as it does IPv4: the source must be the device's
// IPv6 address, inside the node's IPv6 pod subnet.
func TestDualStackServicesThroughKubeProxy(t *testing.T) {
	kc := startKubeletClusterWith(t, dualStackNodeCount, lab.Config{DualStack: true})
	ctx := t.Context()
	if err := kc.waitDefaultServiceAccount(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range kc.nodes {
		if err := kubenode.StartAgentAndWait(ctx, kc.Lab, k, 90*time.Second); err != nil {
			t.Fatalf("%v\n%s", err, kc.logs())
		}
	}
	var pods []*corev1.Pod
	if !t.Run("PodsGetAddressesOfBothFamilies", func(t *testing.T) { pods = testDualStackPodAddresses(t, kc) }) {
		t.FailNow()
	}
	if !t.Run("TunnelHoldsAnAddressPerFamily", func(t *testing.T) { testDualStackTunnelAddrs(t, kc) }) {
		t.FailNow()
	}
	t.Run("ServicesThroughKubeProxy", func(t *testing.T) { testServicesThroughKubeProxy(t, kc, pods) })
}

// nodePodCIDRs are the Node's spec.podCIDRs: one per family in a
// dual-stack lab, IPv4 first.
func (kc *kubeletCluster) nodePodCIDRs(t *testing.T, name string) []netip.Prefix {
	t.Helper()
	node, err := kc.Client.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cidrs []netip.Prefix
	for _, s := range node.Spec.PodCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			t.Fatalf("node %s podCIDRs %v: %v", name, node.Spec.PodCIDRs, err)
		}
		cidrs = append(cidrs, p)
	}
	if len(cidrs) != 2 || !cidrs[0].Addr().Is4() || !cidrs[1].Addr().Is6() {
		t.Fatalf("node %s has podCIDRs %v, want an IPv4 and an IPv6 one", name, node.Spec.PodCIDRs)
	}
	return cidrs
}

// Two pods per node; each gets an IPv4 and an IPv6 address, each inside
// its node's pod CIDR of that family (the IPv4 checks are the IPv4
// scenario's, testPodsGetNodeSubnetAddresses).
func testDualStackPodAddresses(t *testing.T, kc *kubeletCluster) []*corev1.Pod {
	pods := testPodsGetNodeSubnetAddresses(t, kc)
	for _, p := range pods {
		v6 := kc.nodePodCIDRs(t, p.Spec.NodeName)[1]
		var got []string
		ok := false
		for _, ip := range p.Status.PodIPs {
			got = append(got, ip.IP)
			if a, err := netip.ParseAddr(ip.IP); err == nil && v6.Contains(a) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("pod %s on %s has %v: none inside the node's IPv6 podCIDR %s", p.Name, p.Spec.NodeName, got, v6)
		}
	}
	return pods
}

// Every node's wgmesh0 holds the network address of its pod subnet of
// each family (mesh.State.TunnelAddrs): the source kube-proxy's
// masquerade gives traffic into the tunnel.
func testDualStackTunnelAddrs(t *testing.T, kc *kubeletCluster) {
	ctx := t.Context()
	for _, k := range kc.nodes {
		var want []string
		for _, c := range kc.nodePodCIDRs(t, k.Name) {
			want = append(want, netip.PrefixFrom(c.Addr(), c.Addr().BitLen()).String())
		}
		err := kubeletPoll(ctx, 30*time.Second, func() error {
			out, err := k.Run(ctx, "ip", "-br", "addr", "show", "dev", lab.AgentInterface)
			if err != nil {
				return err
			}
			for _, w := range want {
				if !slices.Contains(strings.Fields(out), w) {
					return fmt.Errorf("%s %s is %q, want %v on it", k.Name, lab.AgentInterface, out, want)
				}
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
}
