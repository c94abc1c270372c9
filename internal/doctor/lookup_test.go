package doctor

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestMatchRule(t *testing.T) {
	rule := func(prio, table int, f func(r *netlink.Rule)) netlink.Rule {
		r := *netlink.NewRule()
		r.Priority, r.Table = prio, table
		if f != nil {
			f(&r)
		}
		return r
	}
	mask := func(m uint32) *uint32 { return &m }
	cidr := func(s string) *net.IPNet {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// A node with Tailscale, wgmesh and a wg-quick full tunnel, in the
	// order `ip rule` lists them.
	rules := []netlink.Rule{
		rule(0, 255, nil),
		rule(5187, 87, nil),
		rule(5210, 254, func(r *netlink.Rule) { r.Mark, r.Mask = 0x80000, mask(0xff0000) }),
		rule(5230, 253, func(r *netlink.Rule) { r.Mark, r.Mask = 0x80000, mask(0xff0000) }),
		rule(5250, 0, func(r *netlink.Rule) { r.Mark, r.Mask = 0x80000, mask(0xff0000) }), // unreachable
		rule(5270, 52, nil),
		rule(5300, 300, func(r *netlink.Rule) { r.IifName = "cni0" }),
		rule(5400, 400, func(r *netlink.Rule) { r.Src = cidr("10.42.0.0/24") }),
		rule(5500, 500, func(r *netlink.Rule) { r.Dst = cidr("10.42.9.0/24") }),
		rule(32764, 254, func(r *netlink.Rule) { r.SuppressPrefixlen = 0 }),
		rule(32765, 51820, func(r *netlink.Rule) { r.Mark, r.Invert = 0xca6c, true }),
		rule(32766, 254, nil),
	}
	pod := packet{src: netip.MustParseAddr("10.42.0.2"), dst: netip.MustParseAddr("10.42.1.1"), iif: "cni0", routeBits: 24}
	node := packet{src: netip.MustParseAddr("10.42.0.1"), dst: netip.MustParseAddr("10.42.1.1"), iif: "lo", local: true, routeBits: 24}
	other := packet{src: netip.MustParseAddr("192.168.1.5"), dst: netip.MustParseAddr("10.42.1.1"), iif: "lo", local: true, routeBits: 0}
	tests := []struct {
		name  string
		table int
		pkt   packet
		want  string // Rule.String(), "" for none
	}{
		{"Tailscale's table", 52, pod, "5270: from all lookup 52"},
		{"ours", 87, node, "5187: from all lookup 87"},
		{"iif matches the pod's packet", 300, pod, "5300: from all iif cni0 lookup 300"},
		{"iif does not match the node's", 300, node, ""},
		{"from matches the pod subnet", 400, node, "5400: from 10.42.0.0/24 lookup 400"},
		{"from does not match another source", 400, other, ""},
		{"to another subnet does not match", 500, pod, ""},
		{"main with a /24: wg-quick's suppress rule lets it", 254, node, "32764: from all lookup main suppress_prefixlength 0"},
		{"main with the default route: suppressed, the main rule", 254, other, "32766: from all lookup main"},
		{"not fwmark: unmarked packets match", 51820, pod, "32765: not from all fwmark 0xca6c lookup 51820"},
		{"no rule selects the table", 999, pod, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if r := matchRule(rules, tt.table, tt.pkt); r != nil {
				got = r.String()
			}
			if got != tt.want {
				t.Errorf("matchRule(table %d) = %q, want %q", tt.table, got, tt.want)
			}
		})
	}
}
