package doctor

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/internal/mesh"
)

// Lookup is the kernel's own answer (RTM_GETROUTE) to "where does this
// packet go", for one packet to a peer subnet. Reading the routes and
// reasoning about them is not enough: an ip rule of another tool (say
// Tailscale's `5270: from all lookup 52`) can select its table before
// wgmesh's, and then its route wins whatever table 87 holds.
type Lookup struct {
	// Dst is the peer subnet, Node its node; Addr the address looked up
	// in it (the peer's gateway). For Local lookups Dst is this node's
	// pod subnet and Addr a pod address in it.
	Dst  netip.Prefix
	Node string
	Addr netip.Addr
	// Local: a packet to one of this node's own pods, coming out of the
	// tunnel (a remote pod's request or reply).
	Local bool
	// Src is the packet's source; Iif the device it comes in on: the
	// bridge for a pod's packet, the WireGuard device for one from the
	// tunnel, "" for one the node itself sends.
	Src netip.Addr
	Iif string
	// Want is the device the packet must leave through.
	Want string
	// The answer: output device and the table it came from; Route is the
	// matched route's destination (invalid when unknown); Rule is the ip
	// rule that selected Table (nil when none could be matched).
	Dev   string
	Table int
	Route netip.Prefix
	Rule  *Rule
	// Err is the kernel's refusal to route the packet ("no route to
	// host", "invalid argument" for a blackhole, ...); "" when answered.
	Err string
}

// FromPod says whether the packet is one a local pod sends.
func (l Lookup) FromPod() bool { return l.Iif != "" && !l.Local }

// Rule is an ip rule as `ip rule` prints it.
type Rule struct {
	Priority int
	Table    int
	// Selector is the part between the priority and the action, as
	// `ip rule` shows it ("from all", "not from all fwmark 0xca6c").
	Selector string
	// SuppressPrefixlen is the rule's suppress_prefixlength; -1 none.
	SuppressPrefixlen int
}

func (r Rule) String() string {
	s := fmt.Sprintf("%d: %s lookup %s", r.Priority, r.Selector, tableName(r.Table))
	if r.SuppressPrefixlen >= 0 {
		s += fmt.Sprintf(" suppress_prefixlength %d", r.SuppressPrefixlen)
	}
	return s
}

func tableName(t int) string {
	switch t {
	case mainTable:
		return "main"
	case localTable:
		return "local"
	case 253:
		return "default"
	}
	return fmt.Sprint(t)
}

// readLookups asks the kernel, for every route in cfg.Routes, where a
// packet to the peer subnet goes: once as a pod sends it (source: the
// first pod address after the gateway, coming in on the bridge; the
// gateway itself would be refused as a martian source, it is local) and
// once as the node sends it (source: the gateway, the route's src).
func readLookups(cfg ReadConfig, names map[int]string) ([]Lookup, error) {
	if len(cfg.Routes) == 0 {
		return nil, nil
	}
	var errs []error
	rules := map[int][]netlink.Rule{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlinksafe.RuleList(fam)
		if err != nil {
			errs = append(errs, fmt.Errorf("list rules: %w", err))
			continue
		}
		slices.SortStableFunc(rs, func(a, b netlink.Rule) int { return a.Priority - b.Priority })
		rules[fam] = rs
	}
	bridge := 0
	if cfg.Bridge != "" {
		if l, err := netlinksafe.LinkByName(cfg.Bridge); err != nil {
			errs = append(errs, fmt.Errorf("look up bridge %s (lookups as a pod skipped): %w", cfg.Bridge, err))
		} else {
			bridge = l.Attrs().Index
		}
	}
	device := 0
	if l, err := netlinksafe.LinkByName(cfg.Device); err == nil {
		device = l.Attrs().Index
	}
	var out []Lookup
	inbound := map[netip.Addr]bool{}
	for _, r := range cfg.Routes {
		fam := netlink.FAMILY_V4
		if r.Dst.Addr().Is6() {
			fam = netlink.FAMILY_V6
		}
		l := Lookup{Dst: r.Dst, Node: r.Node, Addr: hostIn(r.Dst), Want: cfg.Device}
		if bridge != 0 && r.Src.IsValid() {
			pod := l
			pod.Src, pod.Iif = r.Src.Next(), cfg.Bridge
			out = append(out, lookup(pod, bridge, rules[fam], names))
		}
		self := l
		self.Src = r.Src
		out = append(out, lookup(self, 0, rules[fam], names))
		// The way back: a packet out of the tunnel to one of our pods
		// must leave through the bridge. Main's route for our subnet is
		// looked up last (32766): a rule ahead of it whose table covers
		// the cluster CIDR takes these too, also when wgmesh's rule
		// comes first. Once per family (per gateway).
		if bridge != 0 && device != 0 && r.Src.IsValid() && !inbound[r.Src] {
			inbound[r.Src] = true
			dst := netip.PrefixFrom(r.Src.Next(), r.Src.BitLen())
			for _, s := range cfg.Subnets {
				if s.Contains(r.Src) {
					dst = s
				}
			}
			in := Lookup{Dst: dst, Addr: r.Src.Next(), Local: true, Src: l.Addr.Next(), Iif: cfg.Device, Want: cfg.Bridge}
			out = append(out, lookup(in, device, rules[fam], names))
		}
	}
	return out, errors.Join(errs...)
}

// hostIn is the address looked up in a peer subnet: its gateway, the
// first address after the subnet's own (a /32 or /128: that address).
func hostIn(p netip.Prefix) netip.Addr {
	if p.Bits() == p.Addr().BitLen() {
		return p.Addr()
	}
	return mesh.Gateway(p)
}

func lookup(l Lookup, iif int, rules []netlink.Rule, names map[int]string) Lookup {
	opts := &netlink.RouteGetOptions{IifIndex: iif}
	if l.Src.IsValid() {
		opts.SrcAddr = l.Src.AsSlice()
	}
	rs, err := netlink.RouteGetWithOptions(l.Addr.AsSlice(), opts)
	if err == nil && len(rs) == 0 {
		err = errors.New("empty answer")
	}
	if err != nil {
		l.Err = err.Error()
		return l
	}
	l.Dev, l.Table = names[rs[0].LinkIndex], rs[0].Table
	// The same question with "fib match" answers with the route itself:
	// its prefix names it in a finding, and a rule with
	// suppress_prefixlength can only be told apart with it.
	opts.FIBMatch = true
	if fm, err := netlink.RouteGetWithOptions(l.Addr.AsSlice(), opts); err == nil && len(fm) > 0 {
		if fm[0].Dst == nil {
			l.Route = netip.PrefixFrom(l.Addr, 0).Masked() // a default route
		} else if p, ok := prefixOf(fm[0]); ok {
			l.Route = p
		}
	}
	pkt := packet{src: l.Src, dst: l.Addr, iif: l.Iif, routeBits: -1}
	if pkt.iif == "" {
		pkt.iif = "lo" // the kernel matches a locally sent packet's rules with iif lo
		pkt.local = true
	}
	if l.Route.IsValid() {
		pkt.routeBits = l.Route.Bits()
	}
	l.Rule = matchRule(rules, l.Table, pkt)
	return l
}

// packet is what rule matching looks at.
type packet struct {
	src, dst netip.Addr
	iif      string
	local    bool // sent by the node (by root: doctor's uid)
	// routeBits is the prefix length of the route the table answered
	// with; -1 unknown.
	routeBits int
}

// matchRule finds the rule that selected table for pkt: the first rule,
// in priority order, whose selector matches the packet and that looks up
// table (the kernel's answer carries the table, not the rule). Earlier
// matching rules that look up other tables found no route there. nil when
// no rule fits (a goto, or a selector doctor does not model).
func matchRule(rules []netlink.Rule, table int, pkt packet) *Rule {
	for _, r := range rules {
		if r.Table != table || table == 0 || !ruleMatches(r, pkt) {
			continue
		}
		// suppress_prefixlength N rejects answers of prefix length <= N
		// (wg-quick's "lookup main suppress_prefixlength 0" skips the
		// default route): that rule did not select this answer.
		if r.SuppressPrefixlen >= 0 && (pkt.routeBits < 0 || pkt.routeBits <= r.SuppressPrefixlen) {
			continue
		}
		return &Rule{Priority: r.Priority, Table: r.Table, Selector: selector(r), SuppressPrefixlen: r.SuppressPrefixlen}
	}
	return nil
}

// ruleMatches mirrors the kernel's fib_rule_match for the packets doctor
// asks about: no mark, no TOS, no transport protocol or ports.
func ruleMatches(r netlink.Rule, pkt packet) bool {
	m := func() bool {
		if r.Src != nil && !ipNetContains(r.Src, pkt.src) {
			return false
		}
		if r.Dst != nil && !ipNetContains(r.Dst, pkt.dst) {
			return false
		}
		if r.IifName != "" && r.IifName != pkt.iif {
			return false
		}
		if r.OifName != "" { // only lookups bound to an output device match
			return false
		}
		mask := uint32(0)
		if r.Mask != nil {
			mask = *r.Mask
		} else if r.Mark != 0 {
			mask = 0xffffffff
		}
		if r.Mark&mask != 0 { // the packet's mark is 0
			return false
		}
		if r.Tos != 0 || r.TunID != 0 || r.IPProto != 0 || r.Sport != nil || r.Dport != nil {
			return false
		}
		if r.UIDRange != nil && (!pkt.local || r.UIDRange.Start > 0) {
			return false // forwarded packets have no uid; doctor runs as root (0)
		}
		return true
	}()
	return m != r.Invert
}

func ipNetContains(n *net.IPNet, a netip.Addr) bool {
	return a.IsValid() && n.Contains(a.AsSlice())
}

func selector(r netlink.Rule) string {
	var b strings.Builder
	if r.Invert {
		b.WriteString("not ")
	}
	b.WriteString("from ")
	if r.Src != nil {
		b.WriteString(r.Src.String())
	} else {
		b.WriteString("all")
	}
	if r.Dst != nil {
		b.WriteString(" to " + r.Dst.String())
	}
	if r.IifName != "" {
		b.WriteString(" iif " + r.IifName)
	}
	if r.Mark != 0 || r.Mask != nil {
		fmt.Fprintf(&b, " fwmark %#x", r.Mark)
		if r.Mask != nil && *r.Mask != 0xffffffff {
			fmt.Fprintf(&b, "/%#x", *r.Mask)
		}
	}
	if r.UIDRange != nil {
		fmt.Fprintf(&b, " uidrange %d-%d", r.UIDRange.Start, r.UIDRange.End)
	}
	return b.String()
}
