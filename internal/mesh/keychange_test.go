package mesh

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestKeyChanges(t *testing.T) {
	k1, k2 := key(1), key(2)
	ep1 := netip.MustParseAddrPort("192.168.0.2:51820")
	ep2 := netip.MustParseAddrPort("203.0.113.9:51820")
	id := func(k wgtypes.Key, ep netip.AddrPort) PeerIdentity { return PeerIdentity{PublicKey: k, Endpoint: ep} }
	for _, tc := range []struct {
		name      string
		prev, cur map[string]PeerIdentity
		want      []string // nodes reported
	}{
		{"nothing", nil, nil, nil},
		{"unchanged", map[string]PeerIdentity{"b": id(k1, ep1)}, map[string]PeerIdentity{"b": id(k1, ep1)}, nil},
		{"first sight (new node, or agent restarted)", nil, map[string]PeerIdentity{"b": id(k1, ep1)}, nil},
		{"gone", map[string]PeerIdentity{"b": id(k1, ep1)}, nil, nil},
		{"endpoint only: NAT roaming", map[string]PeerIdentity{"b": id(k1, ep1)}, map[string]PeerIdentity{"b": id(k1, ep2)}, nil},
		{"key only: reinstalled behind the same address", map[string]PeerIdentity{"b": id(k1, ep1)}, map[string]PeerIdentity{"b": id(k2, ep1)}, nil},
		{"key only, no endpoint either time", map[string]PeerIdentity{"b": id(k1, netip.AddrPort{})}, map[string]PeerIdentity{"b": id(k2, netip.AddrPort{})}, nil},
		{"key and endpoint", map[string]PeerIdentity{"b": id(k1, ep1)}, map[string]PeerIdentity{"b": id(k2, ep2)}, []string{"b"}},
		{"key and endpoint appears", map[string]PeerIdentity{"b": id(k1, netip.AddrPort{})}, map[string]PeerIdentity{"b": id(k2, ep2)}, []string{"b"}},
		{"key and endpoint disappears", map[string]PeerIdentity{"b": id(k1, ep1)}, map[string]PeerIdentity{"b": id(k2, netip.AddrPort{})}, []string{"b"}},
		{"no key before", map[string]PeerIdentity{"b": id(wgtypes.Key{}, ep1)}, map[string]PeerIdentity{"b": id(k2, ep2)}, nil},
		{"several, sorted, only the changed ones",
			map[string]PeerIdentity{"d": id(k1, ep1), "b": id(k1, ep1), "c": id(k1, ep1)},
			map[string]PeerIdentity{"d": id(k2, ep2), "b": id(k2, ep2), "c": id(k1, ep2)},
			[]string{"b", "d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := KeyChanges(tc.prev, tc.cur)
			var nodes []string
			for _, p := range got {
				nodes = append(nodes, p.Node)
				if p.Reason != ReasonKeyAndEndpointChanged {
					t.Errorf("reason %q", p.Reason)
				}
				was, now := tc.prev[p.Node], tc.cur[p.Node]
				for _, s := range []string{was.PublicKey.String(), now.PublicKey.String(), endpointOrNone(was.Endpoint), endpointOrNone(now.Endpoint)} {
					if !strings.Contains(p.Message, s) {
						t.Errorf("message %q lacks %q", p.Message, s)
					}
				}
			}
			if !reflect.DeepEqual(nodes, tc.want) {
				t.Errorf("reported %v, want %v", nodes, tc.want)
			}
		})
	}
}

func TestIdentities(t *testing.T) {
	ep := netip.MustParseAddrPort("192.168.0.2:51820")
	s := State{Peers: []Peer{{Node: "b", PublicKey: key(1), Endpoint: ep}, {Node: "c", PublicKey: key(2)}}}
	want := map[string]PeerIdentity{"b": {key(1), ep}, "c": {key(2), netip.AddrPort{}}}
	if got := Identities(s); !reflect.DeepEqual(got, want) {
		t.Errorf("Identities = %v, want %v", got, want)
	}
}
