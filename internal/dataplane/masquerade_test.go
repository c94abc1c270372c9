package dataplane

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// TestMasqueradedTrafficIntoTunnelReachesRemotePods: traffic that is
// masqueraded on its way into the tunnel (kube-proxy does it for a NodePort
// or a node reaching a Service whose backend is on another node) must come
// out with a source inside this node's pod subnet (design rule 7), or the
// peer's WireGuard drops it: AllowedIPs are exactly this node's subnets.
// Node a sends from its underlay address, as a host process whose route to
// a ClusterIP is the default route does, and masquerades what kube-proxy
// would have marked. Both families; node a also has a global IPv6
// underlay address, as a dual-stack host has.
func TestMasqueradedTrafficIntoTunnelReachesRemotePods(t *testing.T) {
	testutil.RequireRoot(t)
	l := newLabStack(t, 2, true)
	a, b := l.nodes[0], l.nodes[1]
	const under6 = "fd99::1"
	mustRun(t, a.netns, "ip", "-6", "addr", "add", under6+"/64", "dev", "eth0", "nodad")
	for _, nd := range l.nodes {
		l.apply(nd, l.nodes)
	}

	addrs := mustRun(t, a.netns, "ip", "-br", "addr", "show", "dev", a.dev)
	for _, want := range []string{"10.42.0.0/32", "fd42::/128"} {
		if !strings.Contains(addrs, want) {
			t.Errorf("%s has no tunnel address %s: %s", a.dev, want, addrs)
		}
	}

	// What kube-proxy's iptables mode does: KUBE-MARK-MASQ in nat OUTPUT
	// (here for the remote pod itself), MASQUERADE in POSTROUTING.
	for _, c := range []struct {
		iptables, dst string
	}{{"iptables", b.podIP.String()}, {"ip6tables", b.podIP6.String()}} {
		mustRun(t, a.netns, c.iptables, "-t", "nat", "-A", "OUTPUT", "-d", c.dst, "-j", "MARK", "--set-xmark", "0x4000/0x4000")
		mustRun(t, a.netns, c.iptables, "-t", "nat", "-A", "POSTROUTING", "-m", "mark", "--mark", "0x4000/0x4000", "-j", "MASQUERADE")
	}
	for _, c := range []struct {
		name     string
		src, dst netip.Addr
	}{
		{"IPv4", a.under, b.podIP},
		{"IPv6", netip.MustParseAddr(under6), b.podIP6},
	} {
		if out, err := testns.Run(a.netns, "ping", "-c", "2", "-W", "3", "-I", c.src.String(), c.dst.String()); err != nil {
			t.Errorf("%s: node a (source %s, masqueraded) -> pod %s on node b: %v\n%s", c.name, c.src, c.dst, err, out)
		}
	}

	// A subnet change moves the address: the stale one goes.
	old := a.subnet
	a.subnet = netip.MustParsePrefix("10.42.100.0/24")
	l.apply(a, l.nodes)
	addrs = mustRun(t, a.netns, "ip", "-br", "addr", "show", "dev", a.dev)
	if !strings.Contains(addrs, "10.42.100.0/32") || strings.Contains(addrs, old.Addr().String()+"/32") {
		t.Errorf("after the subnet moved to %s, %s holds: %s", a.subnet, a.dev, addrs)
	}
	a.subnet = old
	if ch := l.apply(a, l.nodes); ch.LinksChanged == 0 {
		t.Errorf("moving back wrote no link change: %+v", ch)
	}
	if ch := l.apply(a, l.nodes); ch.Total() != 0 {
		t.Errorf("second apply: %+v, want nothing", ch)
	}
}
