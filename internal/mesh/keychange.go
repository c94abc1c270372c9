package mesh

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PeerIdentity is what decides who receives a peer's traffic: the key its
// packets must be encrypted to, and where they are sent.
type PeerIdentity struct {
	PublicKey wgtypes.Key
	// Endpoint is the zero value when none is programmed.
	Endpoint netip.AddrPort
}

// Identities is the identity of every peer of s, by node name.
func Identities(s State) map[string]PeerIdentity {
	out := make(map[string]PeerIdentity, len(s.Peers))
	for _, p := range s.Peers {
		out[p.Node] = PeerIdentity{PublicKey: p.PublicKey, Endpoint: p.Endpoint}
	}
	return out
}

// KeyChanges compares the peers programmed before (prev) with the ones
// about to be programmed (cur) and reports, as ReasonKeyAndEndpointChanged,
// every node whose public key and endpoint both changed at once: what a
// stolen agent token rewriting another Node's annotations looks like, and
// also what a reinstalled node that came back on another address looks
// like. It only warns; the caller still programs the peer (docs/security.md).
//
// A node in only one of the maps (new, gone, or first seen after an agent
// restart) is not a change. A key change alone (a node reinstalled behind
// the same address) and an endpoint change alone (NAT roaming, a new DHCP
// lease) are ordinary and not reported. An endpoint that appears or
// disappears counts as a change. Problems are sorted by node name.
func KeyChanges(prev, cur map[string]PeerIdentity) []Problem {
	var out []Problem
	for _, node := range slices.Sorted(maps.Keys(cur)) {
		was, ok := prev[node]
		now := cur[node]
		if !ok || was.PublicKey == (wgtypes.Key{}) || was.PublicKey == now.PublicKey || was.Endpoint == now.Endpoint {
			continue
		}
		out = append(out, Problem{
			Node:   node,
			Reason: ReasonKeyAndEndpointChanged,
			Message: fmt.Sprintf("public key changed from %s to %s together with the endpoint (%s to %s); still programmed as a peer: verify the node was reinstalled and its agent token is not stolen",
				was.PublicKey, now.PublicKey, endpointOrNone(was.Endpoint), endpointOrNone(now.Endpoint)),
		})
	}
	return out
}

func endpointOrNone(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return "none"
	}
	return ap.String()
}
