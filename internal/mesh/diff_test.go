package mesh

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// deviceFrom renders desired peers as the device would report them after a
// full apply, so that diff(device(desired), desired) must be empty.
func deviceFrom(ps []Peer) []wgtypes.Peer {
	out := make([]wgtypes.Peer, len(ps))
	for i, p := range ps {
		out[i] = wgtypes.Peer{PublicKey: p.PublicKey, PersistentKeepaliveInterval: p.PersistentKeepalive, AllowedIPs: ipNets(p.AllowedIPs)}
		if p.Endpoint.IsValid() {
			out[i].Endpoint = net.UDPAddrFromAddrPort(p.Endpoint)
		}
	}
	// The device reports peers in its own order, and IPv4 in 16-byte form.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	for i := range out {
		for j := range out[i].AllowedIPs {
			if ip4 := out[i].AllowedIPs[j].IP.To4(); ip4 != nil {
				out[i].AllowedIPs[j].IP = ip4.To16()
				out[i].AllowedIPs[j].Mask = net.CIDRMask(96+maskOnes(out[i].AllowedIPs[j].Mask), 128)
			}
		}
	}
	return out
}

func maskOnes(m net.IPMask) int { o, _ := m.Size(); return o }

func cluster(n int) (Node, []Node) {
	nodes := make([]Node, n)
	for i := range nodes {
		nodes[i] = Node{
			Name:      fmt.Sprintf("node-%05d", i),
			PublicKey: key(i + 1).String(),
			PodCIDRs:  []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(42 + i/256), byte(i % 256), 0}), 24)},
			Endpoint:  fmt.Sprintf("192.168.%d.%d:51820", i/250, i%250+1),
		}
	}
	return nodes[0], nodes
}

func TestDiffPeers(t *testing.T) {
	self, nodes := cluster(5)
	desired, _ := Desired(self, nodes, Options{})

	t.Run("no-op diff is empty", func(t *testing.T) {
		cfg := DiffPeers(deviceFrom(desired.Peers), desired.Peers)
		if len(cfg.Peers) != 0 || cfg.ReplacePeers || cfg.PrivateKey != nil || cfg.ListenPort != nil {
			t.Fatalf("diff of equal states = %+v", cfg)
		}
	})
	t.Run("empty device: every peer added with its AllowedIPs", func(t *testing.T) {
		cfg := DiffPeers(nil, desired.Peers)
		if ops := CountPeerOps(cfg); ops != (PeerOps{Added: 4}) {
			t.Fatalf("ops = %+v", ops)
		}
		p := cfg.Peers[0]
		if !p.ReplaceAllowedIPs || p.UpdateOnly || len(p.AllowedIPs) != 1 || p.Endpoint == nil {
			t.Fatalf("add = %+v", p)
		}
	})
	t.Run("one node's CIDR changes: exactly one update", func(t *testing.T) {
		dev := deviceFrom(desired.Peers)
		nodes2 := append([]Node(nil), nodes...)
		nodes2[2].PodCIDRs = pfx("10.99.0.0/24")
		d2, _ := Desired(self, nodes2, Options{})
		cfg := DiffPeers(dev, d2.Peers)
		if ops := CountPeerOps(cfg); ops != (PeerOps{Updated: 1}) {
			t.Fatalf("ops = %+v", ops)
		}
		p := cfg.Peers[0]
		if !p.ReplaceAllowedIPs || !p.UpdateOnly || p.Endpoint != nil || p.PersistentKeepaliveInterval != nil {
			t.Fatalf("update touches more than AllowedIPs: %+v", p)
		}
		if p.AllowedIPs[0].String() != "10.99.0.0/24" {
			t.Fatalf("allowedIPs = %v", p.AllowedIPs)
		}
	})
	t.Run("endpoint and keepalive change alone", func(t *testing.T) {
		dev := deviceFrom(desired.Peers)
		d2 := append([]Peer(nil), desired.Peers...)
		d2[0].Endpoint = ep("203.0.113.1:1")
		d2[1].PersistentKeepalive = 25 * time.Second
		cfg := DiffPeers(dev, d2)
		if len(cfg.Peers) != 2 {
			t.Fatalf("peers = %+v", cfg.Peers)
		}
		if cfg.Peers[0].Endpoint.String() != "203.0.113.1:1" || cfg.Peers[0].ReplaceAllowedIPs || cfg.Peers[0].PersistentKeepaliveInterval != nil {
			t.Errorf("endpoint update = %+v", cfg.Peers[0])
		}
		if ka := cfg.Peers[1].PersistentKeepaliveInterval; ka == nil || *ka != 25*time.Second || cfg.Peers[1].Endpoint != nil {
			t.Errorf("keepalive update = %+v", cfg.Peers[1])
		}
	})
	t.Run("a live session keeps its learned endpoint; a dead one gets the published", func(t *testing.T) {
		now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
		dev := deviceFrom(desired.Peers)
		for i := range dev {
			if dev[i].PublicKey == desired.Peers[0].PublicKey {
				dev[i].Endpoint = net.UDPAddrFromAddrPort(ep("198.51.100.9:40000")) // learned behind NAT
				dev[i].LastHandshakeTime = now.Add(-time.Minute)
			}
		}
		if cfg := DiffPeersAt(dev, desired.Peers, now); len(cfg.Peers) != 0 {
			t.Fatalf("live session disturbed: %+v", cfg.Peers)
		}
		cfg := DiffPeersAt(dev, desired.Peers, now.Add(SessionLifetime))
		if len(cfg.Peers) != 1 || cfg.Peers[0].Endpoint.String() != desired.Peers[0].Endpoint.String() {
			t.Fatalf("dead session not repaired: %+v", cfg.Peers)
		}
		if cfg := DiffPeers(dev, desired.Peers); len(cfg.Peers) != 1 {
			t.Fatalf("DiffPeers (no clock) should set the endpoint: %+v", cfg.Peers)
		}
	})
	t.Run("no published endpoint keeps the learned one", func(t *testing.T) {
		dev := deviceFrom(desired.Peers)
		d2 := append([]Peer(nil), desired.Peers...)
		d2[0].Endpoint = netip.AddrPort{}
		if cfg := DiffPeers(dev, d2); len(cfg.Peers) != 0 {
			t.Fatalf("diff = %+v", cfg.Peers)
		}
	})
	t.Run("node removed: exactly one remove; stale unknown peers removed too", func(t *testing.T) {
		dev := deviceFrom(desired.Peers)
		dev = append(dev, wgtypes.Peer{PublicKey: key(999)})
		cfg := DiffPeers(dev, desired.Peers[1:])
		if ops := CountPeerOps(cfg); ops != (PeerOps{Removed: 2}) {
			t.Fatalf("ops = %+v", ops)
		}
		for _, p := range cfg.Peers {
			if !p.Remove || len(p.AllowedIPs) != 0 {
				t.Fatalf("remove = %+v", p)
			}
		}
	})
	t.Run("never ReplacePeers", func(t *testing.T) {
		if DiffPeers(deviceFrom(desired.Peers[:1]), desired.Peers[2:]).ReplacePeers {
			t.Fatal("ReplacePeers set")
		}
	})
}

func TestDiffRoutes(t *testing.T) {
	src := netip.MustParseAddr("10.42.0.1")
	r := func(dst string, s netip.Addr) Route { return Route{Dst: netip.MustParsePrefix(dst), Src: s} }
	desired := []Route{r("10.42.1.0/24", src), r("10.42.2.0/24", src), r("10.42.3.0/24", src)}
	for _, tt := range []struct {
		name    string
		current []Route
		desired []Route
		want    RouteDiff
	}{
		{"no-op", desired, desired, RouteDiff{}},
		{"all missing", nil, desired, RouteDiff{Add: desired}},
		{"wrong src replaced", []Route{r("10.42.1.0/24", netip.MustParseAddr("10.0.0.9")), desired[1], desired[2]}, desired,
			RouteDiff{Add: desired[:1]}},
		{"stale deleted", append([]Route{r("10.42.9.0/24", src)}, desired...), desired,
			RouteDiff{Delete: []Route{r("10.42.9.0/24", src)}}},
		{"one node change = one add + one delete", desired, []Route{desired[0], desired[1], r("10.42.4.0/24", src)},
			RouteDiff{Add: []Route{r("10.42.4.0/24", src)}, Delete: []Route{desired[2]}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := DiffRoutes(tt.current, tt.desired)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("diff = %+v\nwant %+v", got, tt.want)
			}
			if got.Empty() != tt.want.Empty() {
				t.Fatal("Empty() wrong")
			}
		})
	}
}

// TestOneNodeChangeOps reports the kernel operations a one-node change
// costs in a 1000-node cluster: 1 peer op + that node's routes.
func TestOneNodeChangeOps(t *testing.T) {
	self, nodes := cluster(1000)
	before, _ := Desired(self, nodes, Options{})
	dev, routes := deviceFrom(before.Peers), before.Routes

	for _, tc := range []struct {
		name   string
		change func([]Node) []Node
		peer   PeerOps
		routes [2]int // adds, deletes
	}{
		{"node joins", func(ns []Node) []Node {
			return append(ns, Node{Name: "zz-new", PublicKey: key(5000).String(), PodCIDRs: pfx("10.250.0.0/24"), Endpoint: "192.168.200.1:51820"})
		}, PeerOps{Added: 1}, [2]int{1, 0}},
		{"node leaves", func(ns []Node) []Node { return ns[:len(ns)-1] }, PeerOps{Removed: 1}, [2]int{0, 1}},
		{"node's endpoint moves", func(ns []Node) []Node { ns[7].Endpoint = "192.168.99.99:51820"; return ns }, PeerOps{Updated: 1}, [2]int{}},
	} {
		after, _ := Desired(self, tc.change(append([]Node(nil), nodes...)), Options{})
		peerOps := CountPeerOps(DiffPeers(dev, after.Peers))
		rd := DiffRoutes(routes, after.Routes)
		t.Logf("%s: peer ops %+v, route adds %d, deletes %d", tc.name, peerOps, len(rd.Add), len(rd.Delete))
		if peerOps != tc.peer || len(rd.Add) != tc.routes[0] || len(rd.Delete) != tc.routes[1] {
			t.Errorf("%s: peer ops %+v routes +%d -%d; want %+v +%d -%d", tc.name, peerOps, len(rd.Add), len(rd.Delete), tc.peer, tc.routes[0], tc.routes[1])
		}
	}
}

func benchmarkDesiredAndDiff(b *testing.B, n int) {
	self, nodes := cluster(n)
	prev, _ := Desired(self, nodes, Options{})
	dev, routes := deviceFrom(prev.Peers), prev.Routes
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s, _ := Desired(self, nodes, Options{})
		if cfg := DiffPeers(dev, s.Peers); len(cfg.Peers) != 0 {
			b.Fatal("non-empty peer diff")
		}
		if d := DiffRoutes(routes, s.Routes); !d.Empty() {
			b.Fatal("non-empty route diff")
		}
	}
}

func BenchmarkDesiredAndDiff100(b *testing.B)  { benchmarkDesiredAndDiff(b, 100) }
func BenchmarkDesiredAndDiff1000(b *testing.B) { benchmarkDesiredAndDiff(b, 1000) }
func BenchmarkDesiredAndDiff5000(b *testing.B) { benchmarkDesiredAndDiff(b, 5000) }
