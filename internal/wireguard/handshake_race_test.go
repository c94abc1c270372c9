package wireguard

import (
	"bytes"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// pairEnd is one of two userspace devices joined by a veth underlay:
// underlay 192.0.2.x/24, tunnel address 10.99.0.x/24 on the device.
type pairEnd struct {
	ns     ns.NetNS
	cfg    Config
	dev    *Device
	pid    int
	tunnel string      // this end's tunnel address
	toPeer []mesh.Peer // the other end, as this end programs it
}

// newPair makes two namespaces joined by a veth, each with a userspace
// device (not yet knowing the other), and the peer each would program.
func newPair(t *testing.T) (a, b *pairEnd) {
	t.Helper()
	a, b = &pairEnd{ns: testns.New(t), tunnel: "10.99.0.1"}, &pairEnd{ns: testns.New(t), tunnel: "10.99.0.2"}
	veth := uniqueName(t)
	testns.Do(t, a.ns, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: veth}, PeerName: veth + "p"}); err != nil {
			return err
		}
		peer, err := netlink.LinkByName(veth + "p")
		if err != nil {
			return err
		}
		return netlink.LinkSetNsFd(peer, int(b.ns.Fd()))
	})
	testns.Do(t, a.ns, func() error { return addrUp(veth, "192.0.2.1/24") })
	testns.Do(t, b.ns, func() error { return addrUp(veth+"p", "192.0.2.2/24") })
	for _, e := range []*pairEnd{a, b} {
		e.cfg = Config{Name: uniqueName(t), Mode: ModeUserspace, PrivateKey: key(t), ListenPort: 51820}
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

func (e *pairEnd) apply(t *testing.T, peers []mesh.Peer) {
	t.Helper()
	testns.Do(t, e.ns, func() error { _, err := e.dev.Apply(peers); return err })
}

func (e *pairEnd) peer(t *testing.T) (p wgtypes.Peer) {
	t.Helper()
	testns.Do(t, e.ns, func() error {
		dev, err := e.dev.Read()
		if err == nil && len(dev.Peers) == 1 {
			p = dev.Peers[0]
		}
		return err
	})
	return p
}

// TestProgrammedPairOpensItsSessionWithoutTraffic: with no packet to send,
// the pair has a session soon after both ends programmed each other,
// whichever programmed first (mesh.Openings), and no keepalive is left on. Before, the
// first packet opened it.
func TestProgrammedPairOpensItsSessionWithoutTraffic(t *testing.T) {
	testutil.RequireRoot(t)
	a, b := newPair(t)
	start := time.Now()
	a.apply(t, a.toPeer)
	b.apply(t, b.toPeer)
	deadline := time.Now().Add(10 * time.Second)
	for a.peer(t).LastHandshakeTime.IsZero() || b.peer(t).LastHandshakeTime.IsZero() {
		if time.Now().After(deadline) {
			t.Fatalf("no session 10s after both ends programmed each other without traffic: a %+v, b %+v", a.peer(t), b.peer(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, e := range []*pairEnd{a, b} {
		if ka := e.peer(t).PersistentKeepaliveInterval; ka != 0 {
			t.Errorf("%s: keepalive %s left on after opening", e.cfg.Name, ka)
		}
	}
	ka, kb := a.cfg.PrivateKey.PublicKey(), b.cfg.PrivateKey.PublicKey()
	t.Logf("session after %s; the end that programmed first has the lower key: %v", time.Since(start), bytes.Compare(ka[:], kb[:]) < 0)
}

// TestFirstPacketsBothWaysFindASession is issue 19: both ends program each
// other moments apart (as agents do when a cluster starts) and a little
// later send their first packets at the same instant. Without openings,
// each end initiates, answers the other's initiation and drops the answer
// to its own, and neither has a session until WireGuard retries after 5 to
// 20 s (7 to 15 rounds in 100 here). Every round must reach both ways well
// before Rekey-Timeout (5 s).
//
// The packets go 2 s after the second end programmed, once the openings
// (mesh.OpenFirstDelay, mesh.OpenSecondDelay) are done: a packet sent while
// an opening is on its way can still cross it.
func TestFirstPacketsBothWaysFindASession(t *testing.T) {
	testutil.RequireRoot(t)
	a, b := newPair(t)
	const rounds = 40
	stalled := 0
	for r := range rounds {
		a.apply(t, nil) // a new pair: no peer, no session
		b.apply(t, nil)
		a.apply(t, a.toPeer)
		time.Sleep(10 * time.Millisecond)
		b.apply(t, b.toPeer)
		time.Sleep(2 * time.Second)
		var wg sync.WaitGroup
		took := make([]time.Duration, 2)
		errs := make([]error, 2)
		for i, e := range [][2]*pairEnd{{a, b}, {b, a}} {
			wg.Go(func() {
				start := time.Now()
				_, errs[i] = pingFrom(e[0].ns, "-n", "-q", "-c", "1", "-i", "0.05", "-w", "30", e[1].tunnel)
				took[i] = time.Since(start)
			})
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil || max(took[0], took[1]) > 3*time.Second {
			stalled++
			t.Errorf("round %d: first reply a->b after %s (%v), b->a after %s (%v)", r, took[0], errs[0], took[1], errs[1])
		}
	}
	t.Logf("%d of %d rounds stalled", stalled, rounds)
}
