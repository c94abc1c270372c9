package wireguard

import (
	"log/slog"
	"net/netip"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// pairEnd is one of two userspace devices joined by a veth underlay:
// underlay 192.0.2.x/24, tunnel address 10.99.0.x/24 on the device.
type pairEnd struct {
	ns         ns.NetNS
	cfg        Config
	dev        *Device
	pid        int
	tunnel     string      // this end's tunnel address
	toPeer     []mesh.Peer // the other end, as this end programs it
	log        *testutil.LockedBuffer
	startOvers whyCounts // sessions the device started over
}

// whyCounts counts Config.OnStartOver's calls by why.
type whyCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *whyCounts) add(why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[why]++
}

func (c *whyCounts) get(why string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[why]
}

// newPair makes two namespaces joined by a veth, each with a userspace
// device (not yet knowing the other), and the peer each would program.
// with, if given, changes each device's Config before it is made.
func newPair(t testing.TB, with ...func(*Config)) (a, b *pairEnd) {
	t.Helper()
	a, b = &pairEnd{ns: testns.New(t), tunnel: "10.99.0.1"}, &pairEnd{ns: testns.New(t), tunnel: "10.99.0.2"}
	joinByVeth(t, a.ns, b.ns, "192.0.2.1/24", "192.0.2.2/24")
	for _, e := range []*pairEnd{a, b} {
		e.log = &testutil.LockedBuffer{}
		e.cfg = Config{Name: uniqueName(t), Mode: ModeUserspace, PrivateKey: key(t), ListenPort: 51820,
			Logger: slog.New(slog.NewTextHandler(e.log, nil)), OnStartOver: e.startOvers.add}
		for _, f := range with {
			f(&e.cfg)
		}
		e.dev, e.pid = ensureUserspace(t, e.ns, e.cfg)
		testns.Do(t, e.ns, func() error { return addrUp(e.cfg.Name, e.tunnel+"/24") })
	}
	for _, e := range [][2]*pairEnd{{a, b}, {b, a}} {
		self, other := e[0], e[1]
		underlay := map[*pairEnd]string{a: "192.0.2.1", b: "192.0.2.2"}[other]
		self.toPeer = []mesh.Peer{{Node: other.tunnel, PublicKey: other.cfg.PrivateKey.PublicKey(),
			Endpoint:   netip.AddrPortFrom(netip.MustParseAddr(underlay), 51820),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr(other.tunnel), 32)}}}
	}
	return a, b
}

// joinByVeth joins namespaces a and b by a veth with addresses addrA and
// addrB, up.
func joinByVeth(t testing.TB, a, b ns.NetNS, addrA, addrB string) {
	t.Helper()
	veth := uniqueName(t)
	testns.Do(t, a, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: veth}, PeerName: veth + "p"}); err != nil {
			return err
		}
		peer, err := netlink.LinkByName(veth + "p")
		if err != nil {
			return err
		}
		return netlink.LinkSetNsFd(peer, int(b.Fd()))
	})
	testns.Do(t, a, func() error { return addrUp(veth, addrA) })
	testns.Do(t, b, func() error { return addrUp(veth+"p", addrB) })
}

func (e *pairEnd) apply(t testing.TB, peers []mesh.Peer) {
	t.Helper()
	testns.Do(t, e.ns, func() error { _, err := e.dev.Apply(peers); return err })
}
