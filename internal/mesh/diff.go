package mesh

import (
	"bytes"
	"cmp"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/internal/netconv"
)

// DiffPeers returns the device configuration that turns the peers read from
// the device (current) into desired. It holds only what changes:
//   - a desired peer the device lacks: added with its AllowedIPs, endpoint
//     and keepalive;
//   - a peer whose AllowedIPs, endpoint or keepalive differ: updated
//     (UpdateOnly, ReplaceAllowedIPs), touching only the fields that differ
//     besides AllowedIPs;
//   - a device peer that is not desired: removed. Stale peers are always
//     removed, so the device converges to exactly the desired set
//     (k3s-io/k3s#5216 left tens of thousands behind).
//
// ReplacePeers is never set: a change to one peer never disturbs the
// tunnels of the others. PrivateKey and ListenPort are left nil. A desired
// peer without endpoint keeps whatever endpoint the device learned.
//
// DiffPeers sets a differing endpoint unconditionally; DiffPeersAt spares
// live sessions.
func DiffPeers(current []wgtypes.Peer, desired []Peer) wgtypes.Config {
	return DiffPeersAt(current, desired, time.Time{})
}

// SessionLifetime is WireGuard's Reject-After-Time: a handshake younger
// than this means the session, and so the endpoint it runs on, works.
const SessionLifetime = 180 * time.Second

// DiffPeersAt is DiffPeers, except that an existing peer whose last
// handshake is younger than SessionLifetime at now keeps its current
// endpoint even when the desired one differs. That endpoint works: it is
// the one WireGuard learned from the peer's own packets (a node behind NAT
// publishes an address nobody can reach, and its real one is learned when
// it connects; overwriting it on every resync would cut the tunnel until
// the next keepalive). Once the session dies, the desired endpoint is set.
// A zero now disables this.
func DiffPeersAt(current []wgtypes.Peer, desired []Peer, now time.Time) wgtypes.Config {
	have := make(map[wgtypes.Key]*wgtypes.Peer, len(current))
	for i := range current {
		have[current[i].PublicKey] = &current[i]
	}
	var cfg wgtypes.Config
	want := make(map[wgtypes.Key]bool, len(desired))
	for i := range desired {
		d := &desired[i]
		want[d.PublicKey] = true
		cur, ok := have[d.PublicKey]
		if !ok {
			pc := wgtypes.PeerConfig{
				PublicKey:         d.PublicKey,
				ReplaceAllowedIPs: true,
				AllowedIPs:        ipNets(d.AllowedIPs),
			}
			if d.Endpoint.IsValid() {
				pc.Endpoint = net.UDPAddrFromAddrPort(d.Endpoint)
			}
			if d.PersistentKeepalive != 0 {
				ka := d.PersistentKeepalive
				pc.PersistentKeepaliveInterval = &ka
			}
			cfg.Peers = append(cfg.Peers, pc)
			continue
		}
		pc := wgtypes.PeerConfig{PublicKey: d.PublicKey, UpdateOnly: true}
		changed := false
		if !sameAllowedIPs(cur.AllowedIPs, d.AllowedIPs) {
			pc.ReplaceAllowedIPs = true
			pc.AllowedIPs = ipNets(d.AllowedIPs)
			changed = true
		}
		live := !now.IsZero() && !cur.LastHandshakeTime.IsZero() && now.Sub(cur.LastHandshakeTime) < SessionLifetime
		if d.Endpoint.IsValid() && endpointOf(cur) != d.Endpoint && !live {
			pc.Endpoint = net.UDPAddrFromAddrPort(d.Endpoint)
			changed = true
		}
		if cur.PersistentKeepaliveInterval != d.PersistentKeepalive {
			ka := d.PersistentKeepalive
			pc.PersistentKeepaliveInterval = &ka
			changed = true
		}
		if changed {
			cfg.Peers = append(cfg.Peers, pc)
		}
	}
	var stale []wgtypes.PeerConfig
	for i := range current {
		if !want[current[i].PublicKey] {
			stale = append(stale, wgtypes.PeerConfig{PublicKey: current[i].PublicKey, Remove: true})
		}
	}
	slices.SortFunc(stale, func(a, b wgtypes.PeerConfig) int { return bytes.Compare(a.PublicKey[:], b.PublicKey[:]) })
	cfg.Peers = append(cfg.Peers, stale...)
	return cfg
}

// PeerOps counts the operations in a peer diff.
type PeerOps struct{ Added, Updated, Removed int }

// CountPeerOps classifies the peers of a DiffPeers result.
func CountPeerOps(cfg wgtypes.Config) PeerOps {
	var ops PeerOps
	for _, p := range cfg.Peers {
		switch {
		case p.Remove:
			ops.Removed++
		case p.UpdateOnly:
			ops.Updated++
		default:
			ops.Added++
		}
	}
	return ops
}

func endpointOf(p *wgtypes.Peer) netip.AddrPort {
	if p.Endpoint == nil {
		return netip.AddrPort{}
	}
	ap := p.Endpoint.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func sameAllowedIPs(cur []net.IPNet, want []netip.Prefix) bool {
	if len(cur) != len(want) {
		return false
	}
	got := make([]netip.Prefix, 0, len(cur))
	for _, n := range cur {
		p, ok := netconv.Prefix(n)
		if !ok {
			return false
		}
		got = append(got, p)
	}
	slices.SortFunc(got, comparePrefix)
	// want is sorted by Desired; sort a copy in case a caller built it by hand.
	if !slices.IsSortedFunc(want, comparePrefix) {
		want = slices.SortedFunc(slices.Values(want), comparePrefix)
	}
	return slices.Equal(got, want)
}

func ipNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, len(ps))
	for i, p := range ps {
		out[i] = *netconv.IPNet(p.Masked())
	}
	return out
}

// RouteDiff is what turns the current routes into the desired ones.
// Apply Add (add or replace) before Delete, so that a destination that
// moves never has a moment without a route.
type RouteDiff struct {
	// Add holds routes to add, or to replace when a route to the same
	// destination exists with another source.
	Add []Route
	// Delete holds current routes that are not desired.
	Delete []Route
}

// Empty reports whether the diff changes nothing.
func (d RouteDiff) Empty() bool { return len(d.Add) == 0 && len(d.Delete) == 0 }

// DiffRoutes compares our routes as read from the kernel (current: routes
// with our protocol only; Node may be empty) with the desired ones, by
// destination; a route with the same destination and another source is
// replaced. Output order is by destination.
func DiffRoutes(current, desired []Route) RouteDiff {
	have := make(map[netip.Prefix]netip.Addr, len(current))
	for _, r := range current {
		have[r.Dst.Masked()] = r.Src
	}
	var d RouteDiff
	want := make(map[netip.Prefix]bool, len(desired))
	for _, r := range desired {
		dst := r.Dst.Masked()
		want[dst] = true
		if src, ok := have[dst]; !ok || src != r.Src {
			d.Add = append(d.Add, r)
		}
	}
	for _, r := range current {
		if !want[r.Dst.Masked()] {
			d.Delete = append(d.Delete, r)
		}
	}
	byDst := func(a, b Route) int { return cmp.Or(comparePrefix(a.Dst, b.Dst), a.Src.Compare(b.Src)) }
	slices.SortFunc(d.Add, byDst)
	slices.SortFunc(d.Delete, byDst)
	return d
}
