package mesh

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// key returns a deterministic valid public key for seed.
func key(seed int) wgtypes.Key {
	var k wgtypes.Key
	k[0], k[1], k[2] = byte(seed), byte(seed>>8), 0xAA
	return k
}

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func node(name string, seed int, cidrs ...string) Node {
	return Node{Name: name, PublicKey: key(seed).String(), PodCIDRs: pfx(cidrs...), Endpoint: fmt.Sprintf("192.168.0.%d:51820", seed)}
}

func ep(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func reasons(ps []Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Node+":"+p.Reason)
	}
	return out
}

func peerNames(s State) []string {
	var out []string
	for _, p := range s.Peers {
		out = append(out, p.Node)
	}
	return out
}

func TestDesired(t *testing.T) {
	self := node("a", 1, "10.42.0.0/24")
	tests := []struct {
		name      string
		self      Node
		nodes     []Node
		opts      Options
		wantPeers []string
		want      func(t *testing.T, s State)
		problems  []string
	}{
		{
			name:      "self excluded, peers sorted, routes with gateway src",
			self:      self,
			nodes:     []Node{node("c", 3, "10.42.2.0/24"), self, node("b", 2, "10.42.1.0/24")},
			wantPeers: []string{"b", "c"},
			want: func(t *testing.T, s State) {
				wantRoutes := []Route{
					{Node: "b", Dst: netip.MustParsePrefix("10.42.1.0/24"), Src: netip.MustParseAddr("10.42.0.1")},
					{Node: "c", Dst: netip.MustParsePrefix("10.42.2.0/24"), Src: netip.MustParseAddr("10.42.0.1")},
				}
				if !reflect.DeepEqual(s.Routes, wantRoutes) {
					t.Errorf("routes = %+v, want %+v", s.Routes, wantRoutes)
				}
				if !reflect.DeepEqual(s.Subnets, pfx("10.42.0.0/24")) {
					t.Errorf("subnets = %v", s.Subnets)
				}
				if got := s.Peers[0].AllowedIPs; !reflect.DeepEqual(got, pfx("10.42.1.0/24")) {
					t.Errorf("allowedIPs = %v", got)
				}
			},
		},
		{
			name: "missing and invalid keys are problems, not peers",
			self: self,
			nodes: []Node{
				{Name: "b", PodCIDRs: pfx("10.42.1.0/24")},
				{Name: "c", PodCIDRs: pfx("10.42.2.0/24"), PublicKey: "not-a-key"},
				node("d", 4, "10.42.3.0/24"),
			},
			wantPeers: []string{"d"},
			problems:  []string{"b:MissingPublicKey", "c:InvalidPublicKey"},
		},
		{
			name:      "node without pod CIDR is not a peer",
			self:      self,
			nodes:     []Node{{Name: "b", PublicKey: key(2).String()}},
			wantPeers: nil,
			problems:  []string{"b:NoPodCIDR"},
		},
		{
			name:      "overlapping pod CIDRs: neither node programmed",
			self:      self,
			nodes:     []Node{node("b", 2, "10.42.1.0/24"), node("c", 3, "10.42.1.0/25"), node("d", 4, "10.42.3.0/24")},
			wantPeers: []string{"d"},
			problems:  []string{"b:OverlappingPodCIDR", "c:OverlappingPodCIDR"},
		},
		{
			name:      "equal pod CIDRs: neither node programmed",
			self:      self,
			nodes:     []Node{node("b", 2, "10.42.1.0/24"), node("c", 3, "10.42.1.0/24")},
			wantPeers: nil,
			problems:  []string{"b:OverlappingPodCIDR", "c:OverlappingPodCIDR"},
		},
		{
			name:      "overlap with this node's own subnet",
			self:      self,
			nodes:     []Node{node("b", 2, "10.42.0.0/16"), node("c", 3, "10.43.0.0/24")},
			wantPeers: []string{"c"},
			problems:  []string{"a:OverlappingPodCIDR", "b:OverlappingPodCIDR"},
		},
		{
			name:      "overlap via a node without key still excludes the other",
			self:      self,
			nodes:     []Node{{Name: "b", PodCIDRs: pfx("10.42.1.0/24")}, node("c", 3, "10.42.1.0/24")},
			wantPeers: nil,
			problems:  []string{"b:MissingPublicKey", "b:OverlappingPodCIDR", "c:OverlappingPodCIDR"},
		},
		{
			name:      "duplicate key: both out",
			self:      self,
			nodes:     []Node{node("b", 2, "10.42.1.0/24"), node("c", 2, "10.42.2.0/24"), node("d", 4, "10.42.3.0/24")},
			wantPeers: []string{"d"},
			problems:  []string{"b:DuplicatePublicKey", "c:DuplicatePublicKey"},
		},
		{
			name:      "a node with our own key is a problem",
			self:      self,
			nodes:     []Node{node("b", 1, "10.42.1.0/24")},
			wantPeers: nil,
			problems:  []string{"b:DuplicatePublicKey"},
		},
		{
			name:      "dual-stack: one route per family with that family's gateway",
			self:      node("a", 1, "10.42.0.0/24", "fd42::/64"),
			nodes:     []Node{node("b", 2, "fd42:0:0:1::/64", "10.42.1.0/24")},
			wantPeers: []string{"b"},
			want: func(t *testing.T, s State) {
				wantRoutes := []Route{
					{Node: "b", Dst: netip.MustParsePrefix("10.42.1.0/24"), Src: netip.MustParseAddr("10.42.0.1")},
					{Node: "b", Dst: netip.MustParsePrefix("fd42:0:0:1::/64"), Src: netip.MustParseAddr("fd42::1")},
				}
				if !reflect.DeepEqual(s.Routes, wantRoutes) {
					t.Errorf("routes = %+v", s.Routes)
				}
				if got := s.Peers[0].AllowedIPs; !reflect.DeepEqual(got, pfx("10.42.1.0/24", "fd42:0:0:1::/64")) {
					t.Errorf("allowedIPs = %v (want sorted)", got)
				}
				// Rule 7: one tunnel address per family, inside our own subnets.
				if got := s.TunnelAddrs; !reflect.DeepEqual(got, pfx("10.42.0.0/32", "fd42::/128")) {
					t.Errorf("tunnel addresses = %v, want 10.42.0.0/32 fd42::/128", got)
				}
			},
		},
		{
			name:      "tunnel address: the first subnet of a family only, none for one too small",
			self:      node("a", 1, "10.42.0.31/31", "10.42.8.0/24", "10.42.9.0/24"),
			nodes:     []Node{node("b", 2, "10.42.1.0/24")},
			wantPeers: []string{"b"},
			problems:  []string{"a:InvalidPodCIDR"},
			want: func(t *testing.T, s State) {
				if got := s.TunnelAddrs; !reflect.DeepEqual(got, pfx("10.42.8.0/32")) {
					t.Errorf("tunnel addresses = %v, want 10.42.8.0/32 (the subnet holding the gateway)", got)
				}
			},
		},
		{
			name:      "peer of a family we lack: peer kept, no route, problem on self",
			self:      self,
			nodes:     []Node{node("b", 2, "10.42.1.0/24", "fd42:0:0:1::/64")},
			wantPeers: []string{"b"},
			problems:  []string{"a:NoGateway"},
			want: func(t *testing.T, s State) {
				if len(s.Routes) != 1 || s.Routes[0].Dst.Addr().Is6() {
					t.Errorf("routes = %+v, want only the IPv4 one", s.Routes)
				}
			},
		},
		{
			name:      "self without pod CIDR: no routes",
			self:      Node{Name: "a", PublicKey: key(1).String()},
			nodes:     []Node{node("b", 2, "10.42.1.0/24")},
			wantPeers: []string{"b"},
			problems:  []string{"a:NoGateway", "a:NoPodCIDR"},
			want: func(t *testing.T, s State) {
				if len(s.Routes) != 0 {
					t.Errorf("routes = %+v", s.Routes)
				}
			},
		},
		{
			name: "endpoint: force beats published, default port, hostname invalid",
			self: self,
			nodes: []Node{
				func() Node { n := node("b", 2, "10.42.1.0/24"); n.ForceEndpoint = "203.0.113.7:4000"; return n }(),
				func() Node { n := node("c", 3, "10.42.2.0/24"); n.Endpoint = "192.168.0.3"; return n }(),
				func() Node { n := node("d", 4, "10.42.3.0/24"); n.Endpoint = "node-d.example:51820"; return n }(),
				func() Node { n := node("e", 5, "10.42.4.0/24"); n.Endpoint = "[fd00::5]:51821"; return n }(),
				func() Node {
					n := node("f", 6, "10.42.5.0/24")
					n.ForceEndpoint = "nat.example:1"
					return n
				}(),
				func() Node { n := node("g", 7, "10.42.6.0/24"); n.Endpoint = ""; return n }(),
			},
			opts:      Options{ListenPort: 51999},
			wantPeers: []string{"b", "c", "d", "e", "f", "g"},
			problems:  []string{"d:InvalidEndpoint", "f:InvalidEndpoint"},
			want: func(t *testing.T, s State) {
				want := map[string]netip.AddrPort{
					"b": ep("203.0.113.7:4000"), "c": ep("192.168.0.3:51999"), "d": {},
					"e": ep("[fd00::5]:51821"), "f": ep("192.168.0.6:51820"), "g": {},
				}
				for _, p := range s.Peers {
					if p.Endpoint != want[p.Node] {
						t.Errorf("%s endpoint = %v, want %v", p.Node, p.Endpoint, want[p.Node])
					}
				}
			},
		},
		{
			name: "endpoint inside a routed prefix is refused: the tunnel would carry itself",
			self: self,
			nodes: []Node{
				// Published endpoint inside another peer's pod CIDR: none.
				func() Node { n := node("b", 2, "10.42.1.0/24"); n.Endpoint = "10.42.2.9:51820"; return n }(),
				// Force-endpoint inside our own subnet: the published one is used.
				func() Node { n := node("c", 3, "10.42.2.0/24"); n.ForceEndpoint = "10.42.0.77:51820"; return n }(),
				// Inside its own pod CIDR, at the subnet's first address.
				func() Node { n := node("d", 4, "10.42.3.0/24"); n.Endpoint = "10.42.3.0:51820"; return n }(),
				// Just outside every pod CIDR.
				func() Node { n := node("e", 5, "10.42.4.0/24"); n.Endpoint = "10.42.5.0:51820"; return n }(),
				// Inside a vouched extra prefix.
				func() Node { n := node("f", 6, "10.42.6.0/24"); n.Endpoint = "192.168.7.1:51820"; return n }(),
			},
			opts:      Options{ExtraPrefixes: map[string][]netip.Prefix{"f": pfx("192.168.7.0/24")}},
			wantPeers: []string{"b", "c", "d", "e", "f"},
			problems:  []string{"b:EndpointInMesh", "c:EndpointInMesh", "d:EndpointInMesh", "f:EndpointInMesh"},
			want: func(t *testing.T, s State) {
				want := map[string]netip.AddrPort{"b": {}, "c": ep("192.168.0.3:51820"), "d": {}, "e": ep("10.42.5.0:51820"), "f": {}}
				for _, p := range s.Peers {
					if p.Endpoint != want[p.Node] {
						t.Errorf("%s endpoint = %v, want %v", p.Node, p.Endpoint, want[p.Node])
					}
				}
			},
		},
		{
			name: "keepalive: peer's own, and self's for all",
			self: func() Node { n := self; n.PersistentKeepalive = "30"; return n }(),
			nodes: []Node{
				func() Node { n := node("b", 2, "10.42.1.0/24"); n.PersistentKeepalive = "25s"; return n }(),
				node("c", 3, "10.42.2.0/24"),
				func() Node { n := node("d", 4, "10.42.3.0/24"); n.PersistentKeepalive = "often"; return n }(),
			},
			wantPeers: []string{"b", "c", "d"},
			problems:  []string{"d:InvalidKeepalive"},
			want: func(t *testing.T, s State) {
				want := map[string]time.Duration{"b": 25 * time.Second, "c": 30 * time.Second, "d": 30 * time.Second}
				for _, p := range s.Peers {
					if p.PersistentKeepalive != want[p.Node] {
						t.Errorf("%s keepalive = %v, want %v", p.Node, p.PersistentKeepalive, want[p.Node])
					}
				}
			},
		},
		{
			name: "keepalive only on the peer",
			self: self,
			nodes: []Node{
				func() Node { n := node("b", 2, "10.42.1.0/24"); n.PersistentKeepalive = "25"; return n }(),
				node("c", 3, "10.42.2.0/24"),
			},
			wantPeers: []string{"b", "c"},
			want: func(t *testing.T, s State) {
				if s.Peers[0].PersistentKeepalive != 25*time.Second || s.Peers[1].PersistentKeepalive != 0 {
					t.Errorf("keepalives = %v, %v", s.Peers[0].PersistentKeepalive, s.Peers[1].PersistentKeepalive)
				}
			},
		},
		{
			name: "extra prefixes vouched by the control plane join AllowedIPs and routes",
			self: self,
			// b's internal IP goes through the mesh; its endpoint is its
			// public address (an endpoint inside the extra prefix would loop).
			nodes:     []Node{func() Node { n := node("b", 2, "10.42.1.0/24"); n.Endpoint = "203.0.113.2:51820"; return n }()},
			opts:      Options{ExtraPrefixes: map[string][]netip.Prefix{"b": pfx("192.168.0.2/32")}},
			wantPeers: []string{"b"},
			want: func(t *testing.T, s State) {
				if got := s.Peers[0].AllowedIPs; !reflect.DeepEqual(got, pfx("10.42.1.0/24", "192.168.0.2/32")) {
					t.Errorf("allowedIPs = %v", got)
				}
				if len(s.Routes) != 2 {
					t.Errorf("routes = %+v", s.Routes)
				}
			},
		},
		{
			name:      "AllowedIPs never come from an annotation: only pod CIDRs",
			self:      self,
			nodes:     []Node{func() Node { n := node("b", 2, "10.42.1.0/24"); n.Endpoint = "10.42.0.5:51820"; return n }()},
			wantPeers: []string{"b"},
			problems:  []string{"b:EndpointInMesh"},
			want: func(t *testing.T, s State) {
				if got := s.Peers[0].AllowedIPs; !reflect.DeepEqual(got, pfx("10.42.1.0/24")) {
					t.Errorf("allowedIPs = %v", got)
				}
				if s.Peers[0].Endpoint.IsValid() {
					t.Errorf("endpoint = %v inside our subnet, want none", s.Peers[0].Endpoint)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, probs := Desired(tt.self, tt.nodes, tt.opts)
			if got := peerNames(s); !slices.Equal(got, tt.wantPeers) {
				t.Errorf("peers = %v, want %v", got, tt.wantPeers)
			}
			if got := reasons(probs); !slices.Equal(got, tt.problems) {
				t.Errorf("problems = %v, want %v\n%+v", got, tt.problems, probs)
			}
			if tt.want != nil {
				tt.want(t, s)
			}
			// Deterministic: the same input in another order gives the same answer.
			rev := slices.Clone(tt.nodes)
			slices.Reverse(rev)
			s2, probs2 := Desired(tt.self, rev, tt.opts)
			if !reflect.DeepEqual(s, s2) || !reflect.DeepEqual(probs, probs2) {
				t.Errorf("result depends on input order")
			}
		})
	}
}

func TestDesiredReportsPodCIDROutsideClusterCIDR(t *testing.T) {
	cluster := Options{ClusterCIDRs: pfx("10.42.0.0/16")}
	dual := Options{ClusterCIDRs: pfx("10.42.0.0/16", "fd42::/56")}
	tests := []struct {
		name      string
		self      Node
		nodes     []Node
		opts      Options
		wantPeers []string
		problems  []string
		message   string // in the first problem's message
	}{
		{
			name:      "every pod CIDR inside: no problem",
			self:      node("a", 1, "10.42.0.0/24"),
			nodes:     []Node{node("b", 2, "10.42.1.0/24")},
			opts:      cluster,
			wantPeers: []string{"b"},
		},
		{
			name:      "no cluster CIDRs given: not checked",
			self:      node("a", 1, "10.52.0.0/24"),
			nodes:     []Node{node("b", 2, "10.52.1.0/24")},
			wantPeers: []string{"b"},
		},
		{
			name:      "a peer outside is reported and still programmed",
			self:      node("a", 1, "10.42.0.0/24"),
			nodes:     []Node{node("b", 2, "10.52.1.0/24"), node("c", 3, "10.42.2.0/24")},
			opts:      cluster,
			wantPeers: []string{"b", "c"},
			problems:  []string{"b:PodCIDROutsideCluster"},
			message:   "pod CIDR 10.52.1.0/24 is outside the cluster CIDR 10.42.0.0/16 (--cluster-cidr): the node is still a peer",
		},
		{
			name:      "this node outside: reported on this node, peers still programmed",
			self:      node("a", 1, "10.52.0.0/24"),
			nodes:     []Node{node("b", 2, "10.52.1.0/24")},
			opts:      cluster,
			wantPeers: []string{"b"},
			problems:  []string{"a:PodCIDROutsideCluster", "b:PodCIDROutsideCluster"},
			message:   "this node's pod CIDR 10.52.0.0/24 is outside the cluster CIDR 10.42.0.0/16 (--cluster-cidr): wgmesh's FORWARD and masquerade rules",
		},
		{
			name:      "a pod CIDR broader than the cluster CIDR is not inside it",
			self:      node("a", 1, "10.42.0.0/24"),
			nodes:     []Node{node("b", 2, "10.0.0.0/8")},
			opts:      Options{ClusterCIDRs: pfx("10.43.0.0/16")},
			wantPeers: nil, // b's /8 overlaps a's /24: that keeps it out, not the cluster CIDR
			problems:  []string{"a:OverlappingPodCIDR", "a:PodCIDROutsideCluster", "b:OverlappingPodCIDR", "b:PodCIDROutsideCluster"},
		},
		{
			name:      "an IPv6 pod CIDR with only an IPv4 cluster CIDR",
			self:      node("a", 1, "10.42.0.0/24", "fd42::/64"),
			nodes:     []Node{node("b", 2, "10.42.1.0/24", "fd42:0:0:1::/64")},
			opts:      cluster,
			wantPeers: []string{"b"},
			problems:  []string{"a:PodCIDROutsideCluster", "b:PodCIDROutsideCluster"},
			message:   "this node's pod CIDR fd42::/64 is IPv6, but there is no IPv6 cluster CIDR (--cluster-cidr)",
		},
		{
			name:      "dual-stack: each family against its own cluster CIDR",
			self:      node("a", 1, "10.42.0.0/24", "fd42::/64"),
			nodes:     []Node{node("b", 2, "10.42.1.0/24", "fd43::/64")},
			opts:      dual,
			wantPeers: []string{"b"},
			problems:  []string{"b:PodCIDROutsideCluster"},
			message:   "pod CIDR fd43::/64 is outside the cluster CIDR fd42::/56",
		},
		{
			name:      "a peer without a key is still named as outside",
			self:      node("a", 1, "10.42.0.0/24"),
			nodes:     []Node{{Name: "b", PodCIDRs: pfx("192.168.5.0/24")}},
			opts:      cluster,
			wantPeers: nil,
			problems:  []string{"b:MissingPublicKey", "b:PodCIDROutsideCluster"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, probs := Desired(tt.self, tt.nodes, tt.opts)
			if got := peerNames(s); !slices.Equal(got, tt.wantPeers) {
				t.Errorf("peers = %v, want %v", got, tt.wantPeers)
			}
			if got := reasons(probs); !slices.Equal(got, tt.problems) {
				t.Errorf("problems = %v, want %v\n%+v", got, tt.problems, probs)
			}
			if tt.message != "" && (len(probs) == 0 || !strings.Contains(probs[0].Message, tt.message)) {
				t.Errorf("first problem = %+v, want a message with %q", probs, tt.message)
			}
			// The routes of a peer outside the cluster CIDR are programmed
			// like any other's.
			for _, p := range s.Peers {
				for _, dst := range p.AllowedIPs {
					if !slices.ContainsFunc(s.Routes, func(r Route) bool { return r.Dst == dst }) {
						t.Errorf("peer %s's %s has no route", p.Node, dst)
					}
				}
			}
		})
	}
}

// TestDesiredReportsSelfOverlapOnThisNode: an overlap with this node's own
// subnet is reported on the other node and, as one problem listing every
// overlap, on this node, so that the agent's Events, `status` and `doctor`
// show it on both sides.
func TestDesiredReportsSelfOverlapOnThisNode(t *testing.T) {
	self := node("a", 1, "10.42.0.0/24", "fd42::/64")
	for _, tc := range []struct {
		name  string
		nodes []Node
		opts  Options
		want  string // this node's problem message; "" = none
	}{
		{name: "disjoint", nodes: []Node{node("b", 2, "10.42.1.0/24")}},
		{name: "no pod CIDR", nodes: []Node{{Name: "b", PublicKey: key(2).String()}}},
		{name: "same", nodes: []Node{node("b", 2, "10.42.0.0/24")},
			want: "this node's pod CIDR 10.42.0.0/24 overlaps 10.42.0.0/24 of node b; those nodes are not peers of this one (are subnets allocated both by the controller manager and by wgmesh Leases?)"},
		{name: "a peer without a key counts", nodes: []Node{{Name: "b", PodCIDRs: pfx("10.42.0.0/24")}},
			want: "this node's pod CIDR 10.42.0.0/24 overlaps 10.42.0.0/24 of node b;"},
		{name: "two peers, both families, in one problem", nodes: []Node{
			node("c", 3, "10.42.9.0/24", "fd42::/56"),
			node("b", 2, "10.42.0.128/25"),
		}, want: "this node's pod CIDR 10.42.0.0/24 overlaps 10.42.0.128/25 of node b; fd42::/64 overlaps fd42::/56 of node c;"},
		{name: "a vouched extra prefix counts like a pod CIDR", nodes: []Node{node("b", 2, "10.42.1.0/24")},
			opts: Options{ExtraPrefixes: map[string][]netip.Prefix{"b": pfx("10.42.0.7/32")}},
			want: "this node's pod CIDR 10.42.0.0/24 overlaps 10.42.0.7/32 of node b;"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, probs := Desired(self, append([]Node{self}, tc.nodes...), tc.opts)
			var mine []Problem
			for _, p := range probs {
				if p.Node == "a" {
					mine = append(mine, p)
				}
			}
			if tc.want == "" {
				if len(mine) != 0 {
					t.Errorf("problems on this node: %+v", mine)
				}
				return
			}
			if len(mine) != 1 || mine[0].Reason != ReasonOverlappingPodCIDR || !strings.Contains(mine[0].Message, tc.want) {
				t.Fatalf("problems on this node = %+v, want one %s with %q", mine, ReasonOverlappingPodCIDR, tc.want)
			}
			if len(s.Peers) != 0 {
				t.Errorf("overlapping peers programmed: %v", peerNames(s))
			}
			for _, n := range tc.nodes {
				if !slices.ContainsFunc(probs, func(p Problem) bool { return p.Node == n.Name && p.Reason == ReasonOverlappingPodCIDR }) {
					t.Errorf("no %s on node %s: %+v", ReasonOverlappingPodCIDR, n.Name, probs)
				}
			}
		})
	}
}

func TestDesiredNodeRemovalDropsExactlyItsPeerAndRoutes(t *testing.T) {
	self := node("a", 1, "10.42.0.0/24")
	nodes := []Node{self, node("b", 2, "10.42.1.0/24"), node("c", 3, "10.42.2.0/24", "10.43.2.0/24")}
	before, _ := Desired(self, nodes, Options{})
	after, _ := Desired(self, nodes[:2], Options{})
	if got := peerNames(after); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("peers after removal = %v", got)
	}
	if len(before.Routes)-len(after.Routes) != 2 {
		t.Fatalf("routes before %d after %d, want 2 fewer", len(before.Routes), len(after.Routes))
	}
}

func TestParseEndpoint(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		err      string
	}{
		{"10.0.0.1:51820", "10.0.0.1:51820", ""},
		{"10.0.0.1", "10.0.0.1:51820", ""},
		{" 10.0.0.1 ", "10.0.0.1:51820", ""},
		{"[fd00::1]:1", "[fd00::1]:1", ""},
		{"[fd00::1]", "[fd00::1]:51820", ""},
		{"fd00::1", "[fd00::1]:51820", ""},
		{"[::ffff:10.0.0.1]:5", "10.0.0.1:5", ""},
		{"10.0.0.1:0", "", "port 0"},
		{"host:51820", "", "hostnames"},
		{"", "", "hostnames"},
		{"[fe80::1%eth0]:1", "", "zone"},
	} {
		got, err := ParseEndpoint(tt.in, 51820)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseEndpoint(%q) err = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("ParseEndpoint(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestParseKeepalive(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, true}, {"25", 25 * time.Second, true}, {"25s", 25 * time.Second, true}, {"1m", time.Minute, true},
		{"0", 0, true}, {"65535", 65535 * time.Second, true}, {"65536", 0, false}, {"-1s", 0, false},
		{"1.5s", 0, false}, {"x", 0, false},
	} {
		got, err := ParseKeepalive(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseKeepalive(%q) = %v, %v", tt.in, got, err)
		}
	}
}

func TestPodMTU(t *testing.T) {
	for _, tt := range []struct {
		explicit, underlay int
		v6                 bool
		want               int
	}{
		{0, 1500, false, 1440}, {0, 1500, true, 1420}, {0, 9001, false, 8941}, {1380, 1500, false, 1380},
	} {
		if got := PodMTU(tt.explicit, tt.underlay, tt.v6); got != tt.want {
			t.Errorf("PodMTU(%d, %d, %t) = %d, want %d", tt.explicit, tt.underlay, tt.v6, got, tt.want)
		}
	}
}

func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"10.0.0.1:51820", "[fd00::1]:1", "fd00::1", "host:1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseEndpoint(s, 51820)
		if err != nil {
			return
		}
		if !ap.IsValid() || ap.Port() == 0 || ap.Addr().Is4In6() || ap.Addr().Zone() != "" {
			t.Fatalf("ParseEndpoint(%q) = %v: invalid result without error", s, ap)
		}
	})
}

func FuzzParseKeepalive(f *testing.F) {
	for _, s := range []string{"25", "25s", "1m", "", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseKeepalive(s)
		if err == nil && (d < 0 || d > maxKeepalive || d%time.Second != 0) {
			t.Fatalf("ParseKeepalive(%q) = %v without error", s, d)
		}
	})
}

// FuzzDesired builds a cluster from fuzz bytes (small address space, so
// overlaps, duplicate keys and bad values are frequent) and checks the
// invariants the data plane relies on.
func FuzzDesired(f *testing.F) {
	f.Add([]byte{0, 1, 24, 1, 1, 2, 24, 2, 2, 2, 25, 3})
	f.Add([]byte{0, 0, 16, 0, 1, 0, 24, 1, 2, 9, 0, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		var nodes []Node
		for i := 0; i+3 < len(data) && len(nodes) < 64; i += 4 {
			n := Node{Name: fmt.Sprintf("n%d", data[i]%16)}
			bits := int(data[i+2] % 33)
			n.PodCIDRs = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, data[i+1] % 8, 0}), bits)}
			if data[i+3]%7 != 0 {
				n.PublicKey = key(int(data[i+3] % 12)).String()
			}
			switch data[i+3] % 5 {
			case 1:
				n.Endpoint = fmt.Sprintf("192.168.0.%d", data[i+1])
			case 2:
				n.ForceEndpoint = "host.example:1"
			case 3:
				n.PersistentKeepalive = fmt.Sprintf("%d", data[i+1])
			}
			nodes = append(nodes, n)
		}
		if len(nodes) == 0 {
			return
		}
		self := nodes[0]
		s, _ := Desired(self, nodes, Options{})
		// The cluster CIDR check reports; it never changes what is programmed.
		if sc, _ := Desired(self, nodes, Options{ClusterCIDRs: pfx("10.42.2.0/23")}); !reflect.DeepEqual(s, sc) {
			t.Fatalf("cluster CIDRs changed the state:\n%+v\n%+v", s, sc)
		}
		seen := map[wgtypes.Key]bool{}
		var all []netip.Prefix
		for _, p := range s.Peers {
			if p.Node == self.Name {
				t.Fatalf("self %s is a peer", self.Name)
			}
			if seen[p.PublicKey] {
				t.Fatalf("key %s programmed twice", p.PublicKey)
			}
			seen[p.PublicKey] = true
			all = append(all, p.AllowedIPs...)
		}
		for _, own := range s.Subnets {
			for _, a := range all {
				if a.Overlaps(own) {
					t.Fatalf("peer AllowedIPs %s overlap our subnet %s", a, own)
				}
			}
		}
		for i := range all {
			for j := i + 1; j < len(all); j++ {
				if all[i].Overlaps(all[j]) {
					t.Fatalf("AllowedIPs %s and %s overlap", all[i], all[j])
				}
			}
		}
		for _, r := range s.Routes {
			if !slices.ContainsFunc(s.Subnets, func(p netip.Prefix) bool { return p.Contains(r.Src) }) {
				t.Fatalf("route %s src %s not in our subnets %v", r.Dst, r.Src, s.Subnets)
			}
		}
	})
}
