package dataplane

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// bigCluster is n nodes; node 0 is self (10.42.0.0/24), the others get
// 10.x.y.0/24 subnets and fresh keys.
func bigCluster(tb testing.TB, n int) (mesh.Node, []mesh.Node) {
	nodes := make([]mesh.Node, n)
	for i := range nodes {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			tb.Fatal(err)
		}
		nodes[i] = mesh.Node{
			Name:      fmt.Sprintf("node-%05d", i),
			PublicKey: k.PublicKey().String(),
			PodCIDRs:  []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(42 + i/256), byte(i % 256), 0}), 24)},
			Endpoint:  fmt.Sprintf("192.168.%d.%d:51820", i/250, i%250+1),
		}
	}
	return nodes[0], nodes
}

// benchNode is one namespace with a userspace device and cni0.
func benchNode(tb testing.TB) (ns.NetNS, *Dataplane) {
	n := testns.New(tb)
	key, _ := wgtypes.GeneratePrivateKey()
	dev := "wgb" + testns.Suffix(tb)
	var dp *Dataplane
	if err := n.Do(func(ns.NetNS) error {
		var err error
		dp, err = New(Config{Device: dev, Mode: wireguard.ModeUserspace, PrivateKey: key, MTU: 1420,
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Masquerade: true, Bridge: "cni0"})
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		n.Do(func(ns.NetNS) error { dp.Close(); return nil })
		os.Remove(filepath.Join("/var/run/wireguard", dev+".sock"))
	})
	return n, dp
}

func applyIn(tb testing.TB, n ns.NetNS, dp *Dataplane, s mesh.State) Changes {
	var ch Changes
	if err := n.Do(func(ns.NetNS) error {
		var err error
		ch, err = dp.Apply(tb.Context(), s)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	return ch
}

// TestOneNodeChangeKernelOps: in a 1000-node mesh, one node leaving or
// joining costs exactly one peer operation and one route operation in the
// kernel, and nothing else.
func TestOneNodeChangeKernelOps(t *testing.T) {
	testutil.RequireRoot(t)
	n, dp := benchNode(t)
	self, nodes := bigCluster(t, 1000)
	full, _ := mesh.Desired(self, nodes, mesh.Options{})
	first := applyIn(t, n, dp, full)
	t.Logf("initial apply of 999 peers: %+v", first)
	if first.PeersAdded != 999 || first.RoutesAdded != 999 {
		t.Fatalf("initial apply: %+v", first)
	}
	if ch := applyIn(t, n, dp, full); ch.Total() != 0 {
		t.Fatalf("no-op apply: %+v", ch)
	}
	less, _ := mesh.Desired(self, nodes[:999], mesh.Options{})
	if ch := applyIn(t, n, dp, less); ch != (Changes{PeersRemoved: 1, RoutesDeleted: 1}) {
		t.Fatalf("node leaves: %+v", ch)
	}
	if ch := applyIn(t, n, dp, full); ch != (Changes{PeersAdded: 1, RoutesAdded: 1}) {
		t.Fatalf("node joins: %+v", ch)
	}
	t.Logf("one node leaves: {PeersRemoved:1 RoutesDeleted:1}; joins: {PeersAdded:1 RoutesAdded:1}")
}

// BenchmarkApplyNoop1000 is the cost of a periodic resync of a 1000-node
// mesh when nothing changed: reading the device (999 peers), our routes and
// our iptables chains, and writing nothing.
func BenchmarkApplyNoop1000(b *testing.B) {
	testutil.RequireRoot(b)
	n, dp := benchNode(b)
	self, nodes := bigCluster(b, 1000)
	full, _ := mesh.Desired(self, nodes, mesh.Options{})
	applyIn(b, n, dp, full)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if ch := applyIn(b, n, dp, full); ch.Total() != 0 {
			b.Fatalf("no-op apply changed %+v", ch)
		}
	}
}

// BenchmarkApplyOneNodeChange1000 alternates one node leaving and joining
// a 1000-node mesh; it reports the kernel operations per apply.
func BenchmarkApplyOneNodeChange1000(b *testing.B) {
	testutil.RequireRoot(b)
	n, dp := benchNode(b)
	self, nodes := bigCluster(b, 1000)
	full, _ := mesh.Desired(self, nodes, mesh.Options{})
	less, _ := mesh.Desired(self, nodes[:999], mesh.Options{})
	applyIn(b, n, dp, full)
	ops := 0
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		s := less
		if i%2 == 1 {
			s = full
		}
		i++
		ops += applyIn(b, n, dp, s).Total()
	}
	b.ReportMetric(float64(ops)/float64(i), "kernel-ops/apply")
}
