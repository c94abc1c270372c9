package doctor

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// lookupFindings judges the kernel's own answers (Kernel.Lookups): a
// packet to a peer subnet that does not leave through the WireGuard
// device never reaches the peer, whatever table 87 holds. This is what
// the route list alone cannot show: another tool's ip rule ahead of
// wgmesh's selects its own table, and its route wins.
func lookupFindings(in Input) []Finding {
	// A peer whose own route is missing or wrong is reported as such
	// (RouteMissing, RouteWrongSrc); its lookups only repeat that.
	skip := map[netip.Prefix]bool{}
	if len(in.Kernel.Routes) > 0 {
		ours := ourRoutes(in)
		for _, want := range in.Desired.Routes {
			if got, ok := ours[want.Dst]; !ok || routeWrong(in, want, got) {
				skip[want.Dst] = true
			}
		}
	}
	type key struct {
		prio, table int
		dev, err    string
		route       netip.Prefix
		local       bool
	}
	type group struct {
		first      Lookup
		dsts       []string
		pods, node bool
	}
	groups := map[key]*group{}
	var order []key
	for _, l := range in.Kernel.Lookups {
		want := cmp.Or(l.Want, in.Device)
		if skip[l.Dst] || (l.Err == "" && l.Dev == want) {
			continue
		}
		if l.Err != "" && l.FromPod() && forwardOff(in.Kernel, l.Addr.Is6()) {
			continue // IPForwardOff says why
		}
		k := key{prio: -1, table: l.Table, dev: l.Dev, err: l.Err, route: l.Route, local: l.Local}
		if l.Rule != nil {
			k.prio = l.Rule.Priority
		}
		g := groups[k]
		if g == nil {
			g = &group{first: l}
			groups[k] = g
			order = append(order, k)
		}
		d := l.Dst.String()
		if l.Node != "" {
			d += " (" + l.Node + ")"
		}
		if !slices.Contains(g.dsts, d) {
			g.dsts = append(g.dsts, d)
		}
		g.pods = g.pods || l.FromPod()
		g.node = g.node || !l.FromPod()
	}
	slices.SortStableFunc(order, func(a, b key) int { return cmp.Compare(a.err, b.err) })
	var out []Finding
	for _, k := range order {
		g := groups[k]
		l := g.first
		shown := g.dsts
		if len(shown) > 3 {
			shown = append(shown[:3:3], fmt.Sprintf("and %d more", len(g.dsts)-3))
		}
		who := "from pods"
		switch {
		case l.Local:
			who = "coming out of the tunnel (requests and replies from remote pods)"
		case g.pods && g.node:
			who = "from pods and from the node itself"
		case g.node:
			who = "from the node itself"
		}
		what := fmt.Sprintf("packets to peer subnet(s) %s %s", strings.Join(shown, ", "), who)
		if l.Local {
			what = fmt.Sprintf("packets to this node's pods (%s) %s", strings.Join(shown, ", "), who)
		}
		want := cmp.Or(l.Want, in.Device)
		if l.Err != "" {
			out = append(out, Finding{ID: "RouteRejected", Severity: SeverityError,
				Message: fmt.Sprintf("%s are refused by the kernel (%s, asked as %s): they never reach %s", what, l.Err, l.asked(), want),
				Fix:     fmt.Sprintf("see which rule and route answer: ip rule show; ip route get %s %s; a blackhole, unreachable or prohibit rule or route ahead of wgmesh's rule (priority %d) belongs to another tool", l.Addr, l.getArgs(), in.OurRulePriority)})
			continue
		}
		out = append(out, capturedFinding(in, l, what, want))
	}
	return out
}

// foreignRuleFix is the fix when another tool's ip rule (l.Rule) takes the
// packets: keep that tool off the pod CIDR, and meanwhile delete its route.
func foreignRuleFix(l Lookup, dev string) string {
	fix := fmt.Sprintf("keep the tool that owns ip rule %d and table %s off the pod CIDR", l.Rule.Priority, tableName(l.Table))
	if tailscale(l.Rule) {
		fix += " (this is Tailscale's: a tailnet subnet route that covers the pod CIDR, accepted with --accept-routes; stop advertising it, or run tailscale set --accept-routes=false on this node)"
	}
	if l.Route.IsValid() && l.Table != localTable {
		fix += fmt.Sprintf("; to see it work meanwhile: ip route del %s dev %s table %s (the tool may put it back)", l.Route, dev, tableName(l.Table))
	}
	return fix
}

func capturedFinding(in Input, l Lookup, what, want string) Finding {
	dev := l.Dev
	if dev == "" {
		dev = "no device"
	}
	msg := fmt.Sprintf("%s leave through %s, not %s: they never reach the peers", what, dev, want)
	if l.Local {
		msg = fmt.Sprintf("%s leave through %s, not %s: they never reach the pods", what, dev, want)
	}
	answer := fmt.Sprintf("table %s", tableName(l.Table))
	if l.Route.IsValid() {
		answer = fmt.Sprintf("route %s dev %s in table %s", l.Route, dev, tableName(l.Table))
	}
	ourRule := fmt.Sprintf("wgmesh's rule (priority %d, lookup %d)", in.OurRulePriority, in.OurTable)
	fix := ""
	switch {
	case l.Rule == nil:
		msg += fmt.Sprintf("; the kernel answers with %s, and no ip rule doctor can match selects that table (ip rule show)", answer)
		fix = fmt.Sprintf("find the rule that selects table %s (ip rule show; ip route get %s %s) and keep the tool that owns it off the pod CIDR", tableName(l.Table), l.Addr, l.getArgs())
	case l.Local:
		// Our table has no route to our own pods: main's route to the
		// bridge answers them, at 32766, after every other rule.
		msg += fmt.Sprintf("; ip rule \"%s\" comes before the main table's rule (32766), whose route to %s answers them otherwise, and selects %s", l.Rule, want, answer)
		fix = foreignRuleFix(l, dev)
	case in.OurTable != mainTable && l.Rule.Priority > in.OurRulePriority:
		// Our rule comes first, yet the answer came from later: our
		// rule is missing, or our table has no route for it.
		msg += fmt.Sprintf("; %s did not answer, so ip rule \"%s\" selects %s", ourRule, l.Rule, answer)
		fix = fmt.Sprintf("check ip rule show pref %d and ip route show table %d; the agent restores both on its next resync, restart it if they stay missing", in.OurRulePriority, in.OurTable)
	default:
		msg += fmt.Sprintf("; ip rule \"%s\" comes before %s and selects %s", l.Rule, ourRule, answer)
		fix = foreignRuleFix(l, dev)
	}
	return Finding{ID: "RouteCaptured", Severity: SeverityError, Message: msg, Fix: fix}
}

// tailscale: Tailscale's rules sit at 5210..5270 (it restores anything it
// loses in 5200..5299) and select its table 52.
func tailscale(r *Rule) bool {
	return (r.Priority >= 5200 && r.Priority < 5300) || r.Table == 52
}

// asked says how the packet looked.
func (l Lookup) asked() string {
	if l.Iif != "" {
		return fmt.Sprintf("from %s in on %s", l.Src, l.Iif)
	}
	if l.Src.IsValid() {
		return fmt.Sprintf("from %s, sent by the node", l.Src)
	}
	return "sent by the node"
}

// getArgs are the arguments of `ip route get ADDR ...` that ask the same.
func (l Lookup) getArgs() string {
	switch {
	case l.Iif != "":
		return fmt.Sprintf("from %s iif %s", l.Src, l.Iif)
	case l.Src.IsValid():
		return fmt.Sprintf("from %s", l.Src)
	}
	return ""
}

func forwardOff(k Kernel, v6 bool) bool {
	f := k.IPv4Forward
	if v6 {
		f = k.IPv6Forward
	}
	return f != nil && !*f
}

// captures says whether the kernel's answers show kr winning: some lookup
// left through kr's device from kr's table.
func captures(in Input, kr Route) bool {
	return slices.ContainsFunc(in.Kernel.Lookups, func(l Lookup) bool {
		want := cmp.Or(l.Want, in.Device)
		return l.Err == "" && l.Dev != want && l.Table == kr.Table && l.Dev == kr.Dev && kr.Dst.Contains(l.Addr)
	})
}
