package doctor

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/mesh"
)

func ptr[T any](v T) *T { return &v }

func TestCheck(t *testing.T) {
	gw := netip.MustParseAddr("10.42.0.1")
	desired := mesh.State{
		Subnets:     []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")},
		TunnelAddrs: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/32")},
		Routes: []mesh.Route{
			{Node: "b", Dst: netip.MustParsePrefix("10.42.1.0/24"), Src: gw},
			{Node: "c", Dst: netip.MustParsePrefix("10.42.2.0/24"), Src: gw},
		},
	}
	ours := func(dst string, src netip.Addr) Route {
		return Route{Table: 87, Protocol: mesh.RouteProtocol, Type: "unicast", Dst: netip.MustParsePrefix(dst), Dev: "wgmesh0", Src: src}
	}
	good := []Route{
		ours("10.42.1.0/24", gw), ours("10.42.2.0/24", gw),
		{Table: 254, Protocol: 2, Type: "unicast", Dst: netip.MustParsePrefix("10.42.0.0/24"), Dev: "cni0"},      // our own subnet
		{Table: 254, Protocol: 3, Type: "unicast", Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "eth0"},         // default
		{Table: 255, Protocol: 2, Type: "local", Dst: netip.MustParsePrefix("10.42.0.1/32"), Dev: "cni0"},        // local
		{Table: 255, Protocol: 2, Type: "local", Dst: netip.MustParsePrefix("10.42.0.0/32"), Dev: "wgmesh0"},     // tunnel address
		{Table: 254, Protocol: 2, Type: "unicast", Dst: netip.MustParsePrefix("192.168.1.0/24"), Dev: "eth0"},    // underlay
		{Table: 100, Protocol: 3, Type: "unicast", Dst: netip.MustParsePrefix("172.16.0.0/12"), Dev: "somevpn0"}, // unrelated
	}
	ours87 := &Rule{Priority: 5187, Table: 87, Selector: "from all", SuppressPrefixlen: -1}
	// The kernel's answers on a healthy node: every peer subnet, as a pod
	// and as the node, leaves through wgmesh0 from table 87.
	var lookups []Lookup
	for _, r := range desired.Routes {
		addr := r.Dst.Addr().Next()
		lookups = append(lookups,
			Lookup{Dst: r.Dst, Node: r.Node, Addr: addr, Src: gw.Next(), Iif: "cni0", Dev: "wgmesh0", Table: 87, Route: r.Dst, Rule: ours87},
			Lookup{Dst: r.Dst, Node: r.Node, Addr: addr, Src: gw, Dev: "wgmesh0", Table: 87, Route: r.Dst, Rule: ours87})
	}
	healthy := Kernel{
		Routes: good, IPv4Forward: ptr(true), ForwardPolicy: "DROP", ForwardJump: true,
		RPFilterAll: ptr(2), RPFilterDevice: ptr(0), DeviceMTU: 1420, UnderlayMTU: 1500, UnderlayDev: "eth0",
		Lookups: lookups, BridgeNFCallIPTables: ptr(true), BridgeNFCallIP6Tables: ptr(false),
	}
	with := func(f func(k *Kernel)) Kernel {
		k := healthy
		k.Routes = slices.Clone(healthy.Routes)
		k.Lookups = slices.Clone(healthy.Lookups)
		f(&k)
		return k
	}
	// capture makes the lookups to dst answer like Tailscale's table 52
	// with a subnet route over the whole cluster CIDR.
	capture := func(k *Kernel, dst string, rule *Rule, table int, dev, route string) {
		for i := range k.Lookups {
			if k.Lookups[i].Dst == netip.MustParsePrefix(dst) {
				k.Lookups[i].Dev, k.Lookups[i].Table, k.Lookups[i].Rule = dev, table, rule
				k.Lookups[i].Route = netip.MustParsePrefix(route)
			}
		}
	}
	tailscale52 := &Rule{Priority: 5270, Table: 52, Selector: "from all", SuppressPrefixlen: -1}
	tests := []struct {
		name     string
		in       Input
		want     []string // finding IDs, in order
		contains string   // in the first finding's message+fix
	}{
		{name: "healthy node: nothing", in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: healthy}},
		{
			name: "a device without an address in our subnet: masqueraded traffic would carry the underlay source",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.Routes = slices.DeleteFunc(k.Routes, func(r Route) bool { return r.Dev == "wgmesh0" && r.Type == "local" })
				// An address outside our subnets does not count.
				k.Routes = append(k.Routes, Route{Table: 255, Protocol: 2, Type: "local", Dst: netip.MustParsePrefix("172.31.0.11/32"), Dev: "wgmesh0"})
			})},
			want:     []string{"TunnelSourceOutsideSubnet"},
			contains: "adds 10.42.0.0/32 to wgmesh0",
		},
		{
			name: "wg-quick broad route in main",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.Routes = append(k.Routes, Route{Table: 254, Protocol: 3, Type: "unicast", Dst: netip.MustParsePrefix("10.42.0.0/16"), Dev: "wg0"})
			})},
			want:     []string{"ShadowingRoute"},
			contains: "ip route del 10.42.0.0/16 dev wg0, and drop 10.42.0.0/16 from wg0's AllowedIPs (wg-quick: Table=off",
		},
		{
			name: "equal route made by someone else with our table = main is an error",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 254, Kernel: with(func(k *Kernel) {
				for i := range k.Routes {
					if k.Routes[i].Table == 87 {
						k.Routes[i].Table = 254
					}
				}
				k.Routes = append(k.Routes, Route{Table: 254, Protocol: 4, Type: "unicast", Dst: netip.MustParsePrefix("10.42.2.0/25"), Dev: "eth1"})
			})},
			want:     []string{"ShadowingRoute"},
			contains: "is inside peer subnet(s) 10.42.2.0/24 (c)",
		},
		{
			name: "another tool's rule ahead of ours (an agent from before issue 15, rule at 5787) captures a peer subnet: error naming the rule and the table, no ShadowingRoute",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, OurRulePriority: 5787, Kernel: with(func(k *Kernel) {
				k.Routes = append(k.Routes, Route{Table: 52, Protocol: 3, Type: "unicast", Dst: netip.MustParsePrefix("10.42.0.0/16"), Dev: "tailscale0"})
				capture(k, "10.42.1.0/24", tailscale52, 52, "tailscale0", "10.42.0.0/16")
			})},
			want:     []string{"RouteCaptured"},
			contains: `packets to peer subnet(s) 10.42.1.0/24 (b) from pods and from the node itself leave through tailscale0, not wgmesh0: they never reach the peers; ip rule "5270: from all lookup 52" comes before wgmesh's rule (priority 5787, lookup 87) and selects route 10.42.0.0/16 dev tailscale0 in table 52`,
		},
		{
			name: "the capture's fix names the tool and the route",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, OurRulePriority: 5787, Kernel: with(func(k *Kernel) {
				capture(k, "10.42.1.0/24", tailscale52, 52, "tailscale0", "10.42.0.0/16")
			})},
			want:     []string{"RouteCaptured"},
			contains: "tailscale set --accept-routes=false on this node); to see it work meanwhile: ip route del 10.42.0.0/16 dev tailscale0 table 52",
		},
		{
			name: "Tailscale's rule behind ours answers: ours did not",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				capture(k, "10.42.1.0/24", tailscale52, 52, "tailscale0", "10.42.0.0/16")
			})},
			want:     []string{"RouteCaptured"},
			contains: `wgmesh's rule (priority 5187, lookup 87) did not answer, so ip rule "5270: from all lookup 52" selects route 10.42.0.0/16 dev tailscale0 in table 52`,
		},
		{
			name: "the way back: packets out of the tunnel to our own pods taken by a rule ahead of main",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.Lookups = append(k.Lookups, Lookup{Dst: desired.Subnets[0], Addr: gw.Next(), Local: true, Src: netip.MustParseAddr("10.42.1.2"), Iif: "wgmesh0", Want: "cni0",
					Dev: "tailscale0", Table: 52, Route: netip.MustParsePrefix("10.42.0.0/16"), Rule: tailscale52})
			})},
			want:     []string{"RouteCaptured"},
			contains: `packets to this node's pods (10.42.0.0/24) coming out of the tunnel (requests and replies from remote pods) leave through tailscale0, not cni0: they never reach the pods; ip rule "5270: from all lookup 52" comes before the main table's rule (32766)`,
		},
		{
			name: "the way back answered by the bridge: nothing",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.Lookups = append(k.Lookups, Lookup{Dst: desired.Subnets[0], Addr: gw.Next(), Local: true, Src: netip.MustParseAddr("10.42.1.2"), Iif: "wgmesh0", Want: "cni0",
					Dev: "cni0", Table: 254, Route: desired.Subnets[0]})
			})},
		},
		{
			name: "a rule of another tool at another priority and table",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, OurRulePriority: 5187, Kernel: with(func(k *Kernel) {
				capture(k, "10.42.2.0/24", &Rule{Priority: 1000, Table: 100, Selector: "from 10.42.0.0/16", SuppressPrefixlen: -1}, 100, "vpn0", "10.42.2.0/24")
			})},
			want:     []string{"RouteCaptured"},
			contains: `ip rule "1000: from 10.42.0.0/16 lookup 100" comes before wgmesh's rule (priority 5187, lookup 87)`,
		},
		{
			name: "our rule gone: main answers through the default route",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				main := &Rule{Priority: 32766, Table: 254, Selector: "from all", SuppressPrefixlen: -1}
				capture(k, "10.42.1.0/24", main, 254, "eth0", "0.0.0.0/0")
				capture(k, "10.42.2.0/24", main, 254, "eth0", "0.0.0.0/0")
			})},
			want:     []string{"RouteCaptured"},
			contains: "10.42.1.0/24 (b), 10.42.2.0/24 (c) from pods and from the node itself leave through eth0, not wgmesh0: they never reach the peers; wgmesh's rule (priority 5187, lookup 87) did not answer",
		},
		{
			name: "the kernel refuses a peer subnet",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				for i := range k.Lookups {
					if k.Lookups[i].Dst == netip.MustParsePrefix("10.42.2.0/24") && k.Lookups[i].FromPod() {
						k.Lookups[i].Err = "network is unreachable"
					}
				}
			})},
			want:     []string{"RouteRejected"},
			contains: "10.42.2.0/24 (c) from pods are refused by the kernel (network is unreachable, asked as from 10.42.0.2 in on cni0)",
		},
		{
			name: "forwarding off: the refused pod lookups are IPForwardOff's",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.IPv4Forward = ptr(false)
				for i := range k.Lookups {
					if k.Lookups[i].FromPod() {
						k.Lookups[i].Err = "network is unreachable"
					}
				}
			})},
			want: []string{"IPForwardOff"},
		},
		{
			name: "a missing route is RouteMissing, not also a capture",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.Routes = slices.Delete(k.Routes, 1, 2)
				capture(k, "10.42.2.0/24", &Rule{Priority: 32766, Table: 254, Selector: "from all", SuppressPrefixlen: -1}, 254, "eth0", "0.0.0.0/0")
			})},
			want: []string{"RouteMissing"},
		},
		{
			name: "another table's route that does not win, kernel not asked: the claim is hedged",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.Lookups = nil
				k.Routes = append(k.Routes, Route{Table: 52, Protocol: 3, Type: "unicast", Dst: netip.MustParsePrefix("10.42.0.0/16"), Dev: "tailscale0"})
			})},
			want:     []string{"ShadowingRoute"},
			contains: "it does not win while wgmesh's rule (priority 5187, table 87) comes before every rule that selects table 52",
		},
		{
			name: "another table's route that the kernel's lookups show not winning",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.Routes = append(k.Routes, Route{Table: 52, Protocol: 3, Type: "unicast", Dst: netip.MustParsePrefix("10.42.0.0/16"), Dev: "tailscale0"})
			})},
			want:     []string{"ShadowingRoute"},
			contains: "the kernel's own route lookups go to wgmesh0 today",
		},
		{
			name: "route without the gateway as source, and a missing one",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.Routes[0].Src = netip.Addr{}
				k.Routes = slices.Delete(k.Routes, 1, 2)
			})},
			want:     []string{"RouteWrongSrc", "RouteMissing"},
			contains: "src 10.42.0.1",
		},
		{
			name: "forwarding off, FORWARD drop without our jump, strict rp_filter",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.IPv4Forward = ptr(false)
				k.ForwardJump = false
				k.RPFilterAll, k.RPFilterDevice = ptr(0), ptr(1)
			})},
			want: []string{"IPForwardOff", "ForwardDrop", "RPFilterStrict"},
		},
		{
			name: "bridged traffic bypasses iptables: the sysctl names the fix",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.BridgeNFCallIPTables = ptr(false)
			})},
			want:     []string{"BridgeNetfilterOff"},
			contains: "sysctl -w net.bridge.bridge-nf-call-iptables=1",
		},
		{
			name: "br_netfilter not loaded: the fix loads it and keeps it loaded",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.BridgeNetfilterMissing = true
				k.BridgeNFCallIPTables, k.BridgeNFCallIP6Tables = nil, nil
			})},
			want:     []string{"BridgeNetfilterOff"},
			contains: "modprobe br_netfilter && echo br_netfilter > /etc/modules-load.d/br_netfilter.conf",
		},
		{
			name: "rp_filter: the larger of all and device decides",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.RPFilterAll, k.RPFilterDevice = ptr(1), ptr(2)
			})},
		},
		{
			name: "MTU too large for an IPv6 underlay",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: with(func(k *Kernel) {
				k.UnderlayIPv6 = true
				k.DeviceMTU = 1440
			})},
			want:     []string{"MTUTooLarge"},
			contains: "at most 1420",
		},
		{
			name: "mesh problems are findings",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: healthy, Problems: []mesh.Problem{
				{Node: "d", Reason: mesh.ReasonOverlappingPodCIDR, Message: "prefix 10.42.3.0/24 overlaps 10.42.3.0/24 of node e"},
				{Node: "f", Reason: mesh.ReasonInvalidEndpoint, Message: "bad"},
				{Node: "g", Reason: mesh.ReasonDuplicatePublicKey, Message: "shared"},
			}},
			want:     []string{"OverlappingPodCIDR", "DuplicatePublicKey", "InvalidEndpoint"},
			contains: "distinct spec.podCIDR",
		},
		{
			name: "an endpoint inside the mesh is an error with the annotation to set",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: healthy, Problems: []mesh.Problem{
				{Node: "h", Reason: mesh.ReasonEndpointInMesh, Message: "10.42.1.9 is inside 10.42.1.0/24"},
			}},
			want:     []string{"EndpointInMesh"},
			contains: "wgmesh.io/force-endpoint=IP:51820",
		},
		{
			name: "a pod CIDR outside the cluster CIDR is an error naming the setting",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: healthy, Problems: []mesh.Problem{
				{Node: "f", Reason: mesh.ReasonInvalidEndpoint, Message: "bad"},
				{Node: "i", Reason: mesh.ReasonPodCIDROutsideCluster, Message: "pod CIDR 10.52.1.0/24 is outside the cluster CIDR 10.42.0.0/16 (--cluster-cidr)"},
			}},
			want:     []string{"PodCIDROutsideCluster", "InvalidEndpoint"},
			contains: "--cluster-cidr (env WGMESH_CLUSTER_CIDR in the wgmesh DaemonSet: deploy/base/daemonset.yaml",
		},
		{
			name: "a key changed together with the endpoint is a warning that asks to verify the node",
			in: Input{Device: "wgmesh0", Desired: desired, OurTable: 87, Kernel: healthy, Problems: []mesh.Problem{
				{Node: "b", Reason: mesh.ReasonKeyAndEndpointChanged, Message: "public key changed from X to Y together with the endpoint"},
			}},
			want:     []string{"KeyAndEndpointChanged"},
			contains: "wg show wgmesh0 public-key",
		},
		{
			name: "unknown facts are skipped",
			in:   Input{Device: "wgmesh0", Desired: desired, OurTable: 87},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := Check(t.Context(), tt.in)
			var ids []string
			for _, f := range fs {
				ids = append(ids, f.ID)
				if f.Message == "" || f.Fix == "" {
					t.Errorf("finding without message or fix: %+v", f)
				}
			}
			if !slices.Equal(ids, tt.want) {
				t.Fatalf("findings = %v, want %v\n%v", ids, tt.want, fs)
			}
			if tt.contains != "" && !strings.Contains(fs[0].Message+" "+fs[0].Fix, tt.contains) {
				t.Errorf("first finding lacks %q:\n%s", tt.contains, fs[0])
			}
		})
	}
}

func TestIsolationFindingsNameTheMode(t *testing.T) {
	for _, tc := range []struct {
		iso  *Isolation
		id   string
		sev  Severity
		text string
	}{
		{nil, "", "", ""},
		{&Isolation{NodeClaim: "node1", Enforced: true}, "NodeIsolation", SeverityInfo, "bound to node node1 and the API server enforces"},
		{&Isolation{NodeClaim: "node1"}, "NodeIsolationOff", SeverityWarning, "does not enforce"},
		{&Isolation{}, "NoNodeClaim", SeverityWarning, "carries no node claim"},
		{&Isolation{NodeClaim: "node1", Unknown: "timeout"}, "NodeIsolationUnknown", SeverityInfo, "timeout"},
	} {
		fs := Check(t.Context(), Input{Device: "wgmesh0", Isolation: tc.iso})
		var got []Finding
		for _, f := range fs {
			if strings.Contains(f.ID, "Isolation") || f.ID == "NoNodeClaim" {
				got = append(got, f)
			}
		}
		if tc.iso == nil {
			if len(got) != 0 {
				t.Errorf("nil isolation: %v", got)
			}
			continue
		}
		if len(got) != 1 || got[0].ID != tc.id || got[0].Severity != tc.sev || !strings.Contains(got[0].Message, tc.text) {
			t.Errorf("%+v: got %v, want one %s %s saying %q", tc.iso, got, tc.sev, tc.id, tc.text)
		}
		if tc.sev == SeverityWarning && got[0].Fix == "" {
			t.Errorf("%s has no fix", tc.id)
		}
	}
}
