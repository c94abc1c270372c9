package wireguard

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// odEnd is a userspace device with on-demand peers, run in this process so
// that the test can see which peers wireguard-go has.
type odEnd struct {
	ns     ns.NetNS
	name   string
	key    wgtypes.Key
	u      *userspace
	under  string // underlay address
	tunnel string // tunnel address, a /32 the other end routes to it
}

// newOnDemandPair makes two namespaces joined by a veth, each with a
// userspace device programming peers on demand after idle, each knowing
// the other and `extra` peers that do not exist (endpoints nobody
// answers), as most of a large mesh is from one node.
func newOnDemandPair(t *testing.T, idleA, idleB time.Duration, extra int) (a, b *odEnd) {
	t.Helper()
	a = &odEnd{ns: testns.New(t), name: uniqueName(t), key: key(t), under: "192.0.2.1", tunnel: "10.99.0.1"}
	b = &odEnd{ns: testns.New(t), name: uniqueName(t), key: key(t), under: "192.0.2.2", tunnel: "10.99.0.2"}
	joinByVeth(t, a.ns, b.ns, a.under+"/24", b.under+"/24")
	log := slog.New(slog.NewTextHandler(&testutil.LockedBuffer{}, nil))
	for _, e := range []struct {
		self, other *odEnd
		idle        time.Duration
	}{{a, b, idleA}, {b, a, idleB}} {
		self, other := e.self, e.other
		testns.Do(t, self.ns, func() error {
			var err error
			if self.u, err = startUserspace(self.name, 1420, e.idle, log); err != nil {
				return err
			}
			t.Cleanup(func() { self.u.close() })
			port := 51820
			cfg := wgtypes.Config{PrivateKey: &self.key, ListenPort: &port}
			ep := &net.UDPAddr{IP: net.ParseIP(other.under), Port: 51820}
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: other.key.PublicKey(), Endpoint: ep,
				ReplaceAllowedIPs: true, AllowedIPs: []net.IPNet{{IP: net.ParseIP(other.tunnel), Mask: net.CIDRMask(32, 32)}}})
			for i := range extra {
				k := key(t)
				cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: k.PublicKey(),
					Endpoint:   &net.UDPAddr{IP: net.IPv4(198, 51, 100, byte(i+1)), Port: 51820},
					AllowedIPs: []net.IPNet{{IP: net.IPv4(10, 98, byte(i), 0), Mask: net.CIDRMask(24, 32)}}})
			}
			if err := configure(self.name, cfg); err != nil {
				return err
			}
			return addrUp(self.name, self.tunnel+"/24")
		})
	}
	return a, b
}

func configure(name string, cfg wgtypes.Config) error {
	c, err := wgctrl.New()
	if err != nil {
		return err
	}
	defer c.Close()
	return c.ConfigureDevice(name, cfg)
}

// programmed are the peers wireguard-go has, and configured those `wg`
// and wgctrl see.
func (e *odEnd) programmed() int {
	e.u.od.mu.Lock()
	defer e.u.od.mu.Unlock()
	return len(e.u.od.programmed)
}

func (e *odEnd) configured(t *testing.T) []wgtypes.Peer {
	t.Helper()
	var peers []wgtypes.Peer
	testns.Do(t, e.ns, func() error {
		c, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer c.Close()
		d, err := c.Device(e.name)
		if err != nil {
			return err
		}
		peers = d.Peers
		return nil
	})
	return peers
}

func (e *odEnd) peer(t *testing.T, k wgtypes.Key) wgtypes.Peer {
	t.Helper()
	for _, p := range e.configured(t) {
		if p.PublicKey == k {
			return p
		}
	}
	t.Fatalf("%s: no peer %s", e.name, k)
	return wgtypes.Peer{}
}

// TestOnDemandPeers: only peers that carry traffic are in wireguard-go;
// the first packet each way gets through (nothing lost while its peer is
// programmed), an idle peer is removed and comes back with the next
// packet, and `wg`/wgctrl see every peer as configured throughout.
func TestOnDemandPeers(t *testing.T) {
	testutil.RequireRoot(t)
	const extra = 30
	a, b := newOnDemandPair(t, time.Second, time.Second, extra)

	if got := len(a.configured(t)); got != extra+1 {
		t.Fatalf("wgctrl sees %d peers on %s, want %d", got, a.name, extra+1)
	}
	if a.programmed() != 0 || b.programmed() != 0 {
		t.Fatalf("before any traffic: %d and %d peers programmed, want none", a.programmed(), b.programmed())
	}

	// One echo request, one chance: the packet that programs the peer is
	// itself sent, and the handshake it starts is answered by a device
	// that programs its own peer on the handshake.
	if out, err := pingFrom(a.ns, "-c", "1", "-W", "5", b.tunnel); err != nil {
		t.Fatalf("first ping lost: %v\n%s", err, out)
	}
	if a.programmed() != 1 || b.programmed() != 1 {
		t.Errorf("after one ping: %d and %d peers programmed, want 1 and 1", a.programmed(), b.programmed())
	}
	if n := a.u.od.Activations.Load(); n != 1 {
		t.Errorf("%d activations on %s, want 1", n, a.name)
	}
	hs := a.peer(t, b.key.PublicKey()).LastHandshakeTime

	// Idle: both remove the peer; its last handshake and configuration stay.
	waitUntil(t, 5*time.Second, func() error {
		if a.programmed()+b.programmed() != 0 {
			return fmt.Errorf("%d and %d peers still programmed", a.programmed(), b.programmed())
		}
		return nil
	})
	p := a.peer(t, b.key.PublicKey())
	if hs.IsZero() || !p.LastHandshakeTime.Equal(hs) || p.Endpoint.String() != b.under+":51820" || len(p.AllowedIPs) != 1 {
		t.Errorf("trimmed peer reads %+v; want its handshake %v, endpoint and subnet kept", p, hs)
	}
	if len(a.configured(t)) != extra+1 {
		t.Errorf("wgctrl sees %d peers after the trim, want %d", len(a.configured(t)), extra+1)
	}
	if out, err := pingFrom(b.ns, "-c", "1", "-W", "5", a.tunnel); err != nil {
		t.Fatalf("ping after the trim lost: %v\n%s", err, out)
	}

	// A configuration change reaches a parked peer and a programmed one.
	testns.Do(t, a.ns, func() error {
		ka := 0 * time.Second
		return configure(a.name, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: b.key.PublicKey(), UpdateOnly: true,
			Endpoint: &net.UDPAddr{IP: net.ParseIP(b.under), Port: 51820}, PersistentKeepaliveInterval: &ka}}})
	})
	// Removing a peer removes it everywhere.
	testns.Do(t, a.ns, func() error {
		return configure(a.name, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: b.key.PublicKey(), Remove: true}}})
	})
	if len(a.configured(t)) != extra || a.programmed() != 0 {
		t.Errorf("after removing the peer: %d configured, %d programmed; want %d and 0", len(a.configured(t)), a.programmed(), extra)
	}
}

// TestOnDemandPeerSendingDataIsAnswered: a device that removed an idle
// peer while that peer kept its session (here: a longer idle time there)
// receives data it cannot decrypt. It programs the peer and starts a
// handshake at once, so the pair talks again within a second instead of
// after the peer's 15 s without an answer.
func TestOnDemandPeerSendingDataIsAnswered(t *testing.T) {
	testutil.RequireRoot(t)
	a, b := newOnDemandPair(t, time.Second, time.Hour, 0)
	if out, err := pingFrom(a.ns, "-c", "1", "-W", "5", b.tunnel); err != nil {
		t.Fatalf("first ping lost: %v\n%s", err, out)
	}
	waitUntil(t, 5*time.Second, func() error {
		if a.programmed() != 0 {
			return fmt.Errorf("%s still has its peer", a.name)
		}
		return nil
	})
	if b.programmed() != 1 {
		t.Fatalf("%s has %d peers programmed, want its session kept", b.name, b.programmed())
	}
	start := time.Now()
	for {
		if _, err := pingFrom(b.ns, "-c", "1", "-W", "1", a.tunnel); err == nil {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("no answer for 20 s")
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the pair talked again after %v, want within about a second", took.Round(time.Millisecond))
	}
}

// TestOnDemandUAPIRefusesBadInput: a set the device would refuse is
// refused with its errno and changes nothing.
func TestOnDemandUAPIRefusesBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	a, _ := newOnDemandPair(t, time.Minute, time.Minute, 2)
	before := len(a.configured(t))
	for req, want := range map[string]string{
		"set=1\npublic_key=zz\n\n": "errno=-22",
		"set=1\nnonsense\n\n":      "errno=-71",
		"set=1\npublic_key=" + strings.Repeat("1", 64) + "\nallowed_ip=10.0.0.0/99\n\n": "errno=-22",
		"get=1\nx": "errno=-22",
	} {
		c, err := net.Dial("unix", socketPath(a.name))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(c, req)
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if strings.TrimSpace(line) != want || err != nil {
			t.Errorf("%q: answered %q (%v), want %s", req, line, err, want)
		}
	}
	if after := len(a.configured(t)); after != before {
		t.Errorf("%d peers after the refused sets, want %d", after, before)
	}
}

// TestOnDemandDeviceProcess: Config.OnDemandIdle reaches the device
// process the agent spawns; the pair talks at once, and the device process
// removes the idle peer (its log says so) and programs it again.
func TestOnDemandDeviceProcess(t *testing.T) {
	testutil.RequireRoot(t)
	a, b := newPair(t, func(c *Config) { c.OnDemandIdle = time.Second })
	a.apply(t, a.toPeer)
	b.apply(t, b.toPeer)
	if out, err := pingFrom(a.ns, "-c", "1", "-W", "5", b.tunnel); err != nil {
		t.Fatalf("first ping lost: %v\n%s", err, out)
	}
	waitUntil(t, 5*time.Second, func() error {
		log, err := os.ReadFile(logPath(a.cfg.Name))
		if err != nil {
			return err
		}
		if !strings.Contains(string(log), "idle peers removed from wireguard-go") {
			return fmt.Errorf("device log of %s says no trim yet:\n%s", a.cfg.Name, log)
		}
		return nil
	})
	if out, err := pingFrom(a.ns, "-c", "1", "-W", "5", b.tunnel); err != nil {
		t.Fatalf("ping after the trim lost: %v\n%s", err, out)
	}
}
