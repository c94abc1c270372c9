//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

func TestSubnetReservationWithoutControllerAllocation(t *testing.T) {
	c := newCluster(t, lab.Config{NoCIDRAllocation: true}, 3, 1)
	ctx := t.Context()
	seen := map[netip.Prefix]string{}
	cluster := netip.MustParsePrefix(lab.ClusterCIDR)
	for _, n := range c.Nodes() {
		if pc, err := c.PodCIDR(ctx, n.Name); err != nil || pc.IsValid() {
			t.Errorf("%s: spec.podCIDR = %v (%v), want empty (no --allocate-node-cidrs)", n.Name, pc, err)
		}
		out, err := n.Run(ctx, "cat", lab.AgentSubnetFile)
		if err != nil {
			t.Fatal(err)
		}
		var subnet netip.Prefix
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, "WGMESH_SUBNET="); ok {
				p, err := netip.ParsePrefix(v)
				if err != nil {
					t.Fatalf("%s: %s: %v", n.Name, line, err)
				}
				subnet = p.Masked()
			}
		}
		if !subnet.IsValid() || subnet.Bits() != lab.NodeCIDRMaskSize || !cluster.Contains(subnet.Addr()) {
			t.Errorf("%s: reserved subnet %v, want a /%d inside %s", n.Name, subnet, lab.NodeCIDRMaskSize, cluster)
		}
		if other, dup := seen[subnet]; dup {
			t.Errorf("%s and %s reserved the same subnet %s", n.Name, other, subnet)
		}
		seen[subnet] = n.Name
	}
	leases, err := c.Client.CoordinationV1().Leases(lab.AgentNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range leases.Items {
		if strings.HasPrefix(l.Name, "wgmesh-subnet-") {
			names = append(names, l.Name)
		}
	}
	t.Logf("reserved: %v; leases: %v", seen, names)
	if len(names) != len(c.Nodes()) {
		t.Errorf("%d wgmesh subnet Leases, want one per node (%d)", len(names), len(c.Nodes()))
	}
	requireMatrix(t, ctx, c, c.pods)
}

func TestDoctorReportsBroadWgQuickRouteAndMeshWorksAfterFix(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()
	n := c.Nodes()[2]
	// What wg-quick leaves behind for AllowedIPs = 10.42.0.0/16 on its own
	// device (a userspace WireGuard device is a TUN device).
	if _, err := n.Run(ctx, "ip", "tuntap", "add", "wg0", "mode", "tun"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = n.Run(context.Background(), "ip", "link", "del", "wg0") })
	if _, err := n.Run(ctx, "ip", "link", "set", "wg0", "up"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Run(ctx, "ip", "route", "add", lab.ClusterCIDR, "dev", "wg0"); err != nil {
		t.Fatal(err)
	}
	// The route was there first: the agent starts on a node that has it.
	if err := c.StartAgent(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitAgentReady(ctx, n, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitMesh(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	doctor := func() (string, error) {
		return n.Run(ctx, c.AgentCommand(n, "doctor")...)
	}
	out, err := doctor()
	t.Logf("wgmesh-agent doctor with the broad route (err=%v):\n%s", err, out)
	if !strings.Contains(out, "ShadowingRoute") || !strings.Contains(out, lab.ClusterCIDR+" dev wg0") {
		t.Errorf("doctor does not report the route %s dev wg0 as ShadowingRoute", lab.ClusterCIDR)
	}
	fix := regexp.MustCompile(`ip route del \S+ dev wg0`).FindString(out)
	if fix == "" {
		t.Fatalf("doctor gives no 'ip route del ... dev wg0' fix")
	}
	// wgmesh's own table is looked up first, so the trap does not break
	// the mesh even before the fix (it broke flannel's).
	requireMatrix(t, ctx, c, c.pods)

	// Apply the fix exactly as doctor printed it.
	if _, err := n.Run(ctx, strings.Fields(fix)...); err != nil {
		t.Fatalf("doctor's fix %q: %v", fix, err)
	}
	out, err = doctor()
	t.Logf("wgmesh-agent doctor after the fix (err=%v):\n%s", err, out)
	if strings.Contains(out, "wg0") {
		t.Errorf("doctor still reports wg0 after the route was removed")
	}
	if err != nil {
		t.Errorf("doctor fails after the fix: %v", err)
	}
	requireMatrix(t, ctx, c, c.pods)
}

func TestInvalidNodesAreNotProgrammedAndAreReported(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()
	facts := apiNodes(t, ctx, c)
	victim := c.Nodes()[2]
	goodKey, _ := wgtypes.GeneratePrivateKey()

	badKey := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bad-key",
		Annotations: map[string]string{mesh.AnnotationPublicKey: "not-a-wireguard-key", mesh.AnnotationEndpoint: "172.31.0.250:51820"}}}
	overlap := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "overlapping-cidr",
		Annotations: map[string]string{mesh.AnnotationPublicKey: goodKey.PublicKey().String(), mesh.AnnotationEndpoint: "172.31.0.251:51820"}},
		Spec: corev1.NodeSpec{PodCIDR: facts[victim.Name].PodCIDR.String(), PodCIDRs: []string{facts[victim.Name].PodCIDR.String()}}}
	for _, n := range []*corev1.Node{badKey, overlap} {
		if _, err := c.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		name := n.Name
		t.Cleanup(func() { _ = c.DeleteNodeObject(context.Background(), name) })
	}

	// Reported: an Event about each bad node with the problem's reason.
	want := map[string]string{"bad-key": "InvalidPublicKey", "overlapping-cidr": "OverlappingPodCIDR"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, err := c.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		missing := []string{}
		for node, reason := range want {
			found := false
			for _, e := range evs.Items {
				if e.InvolvedObject.Name == node && e.Reason == reason {
					found = true
				}
			}
			if !found {
				missing = append(missing, node+":"+reason)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, e := range evs.Items {
				seen = append(seen, fmt.Sprintf("%s %s/%s: %s", e.Reason, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message))
			}
			t.Fatalf("no Event for %v after 30s; events:\n%s", missing, strings.Join(seen, "\n"))
		}
		time.Sleep(250 * time.Millisecond)
	}

	// Not programmed anywhere: no peer with the bad nodes' keys or endpoints,
	// and (design rule 1 in docs/dataplane.md) neither of the overlapping pair is a peer on the others.
	// The Event can come before the data plane is applied: poll.
	var wrong []string
	deadline = time.Now().Add(20 * time.Second)
	for {
		wrong = wrong[:0]
		for _, n := range c.Nodes() {
			peers, err := n.WGPeers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range peers {
				if p.PublicKey == goodKey.PublicKey().String() || strings.HasPrefix(p.Endpoint, "172.31.0.25") {
					wrong = append(wrong, fmt.Sprintf("%s: a bad node is programmed: %+v", n.Name, p))
				}
				if n != victim && p.PublicKey == facts[victim.Name].PublicKey {
					wrong = append(wrong, fmt.Sprintf("%s: %s is still a peer while overlapping-cidr claims its pod CIDR %s", n.Name, victim.Name, facts[victim.Name].PodCIDR))
				}
			}
		}
		if len(wrong) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, w := range wrong {
		t.Error(w)
	}
	// The agent's status names the problems too.
	out, _ := c.Nodes()[0].Run(ctx, c.AgentCommand(c.Nodes()[0], "status")...)
	t.Logf("wgmesh-agent status on %s with bad nodes:\n%s", c.Nodes()[0].Name, out)

	// Once the bad nodes are gone, the mesh heals.
	for node := range want {
		if err := c.DeleteNodeObject(ctx, node); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitMesh(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	requireMatrix(t, ctx, c, c.pods)
}
