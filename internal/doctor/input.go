package doctor

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Filter is an iptables filter table as `iptables -S` (or `ip6tables -S`)
// prints it.
type Filter struct {
	// Policies of the built-in chains ("INPUT" -> "DROP").
	Policies map[string]string
	// Rules per chain, each the words after "-A CHAIN", unquoted; a user
	// chain without rules is present with none.
	Rules map[string][][]string
}

// ParseFilter reads `iptables -S` lines (any order of chains).
func ParseFilter(lines []string) Filter {
	f := Filter{Policies: map[string]string{}, Rules: map[string][][]string{}}
	for _, l := range lines {
		w := splitRule(l)
		switch {
		case len(w) == 3 && w[0] == "-P":
			f.Policies[w[1]] = w[2]
			if _, ok := f.Rules[w[1]]; !ok {
				f.Rules[w[1]] = nil
			}
		case len(w) == 2 && w[0] == "-N":
			if _, ok := f.Rules[w[1]]; !ok {
				f.Rules[w[1]] = nil
			}
		case len(w) > 2 && w[0] == "-A":
			f.Rules[w[1]] = append(f.Rules[w[1]], w[2:])
		}
	}
	return f
}

// splitRule splits an `iptables -S` line into words: iptables quotes a
// word with spaces (a comment) in double quotes, with backslash escapes.
func splitRule(l string) []string {
	var out []string
	var cur strings.Builder
	in, quoted := false, false
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case quoted && c == '\\' && i+1 < len(l):
			i++
			cur.WriteByte(l[i])
		case c == '"':
			quoted, in = !quoted, true
		case !quoted && (c == ' ' || c == '\t'):
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// probe is a packet as INPUT sees it.
type probe struct {
	src, dst netip.Addr
	iif      string
	proto    string
	dport    int
	ctstates []string // conntrack states it has (NEW, DNAT)
	mark     uint32   // set by MARK targets on the way (kube-router's 0x20000)
	what     string   // for a person
}

// inputVerdict is where a probe ends in INPUT.
type inputVerdict struct {
	accepted bool
	by       string // "policy DROP of INPUT" or the rule, as iptables -S prints it
	// unsure lists rules skipped because a match in them could not be
	// evaluated (ipsets, marks, rate limits...); any of them might have
	// decided otherwise.
	unsure []string
}

// evalInput follows probe through INPUT and the chains it jumps to.
func (f Filter) evalInput(p probe) inputVerdict {
	var v inputVerdict
	e := &evaluation{f: f, p: &p, unsure: &v.unsure, budget: maxRuleVisits}
	done, accepted, by := e.chain("INPUT", nil)
	if !done {
		pol := f.Policies["INPUT"]
		if pol == "" {
			pol = "ACCEPT"
		}
		accepted, by = pol == "ACCEPT", "policy "+pol+" of INPUT"
	}
	v.accepted, v.by = accepted, by
	return v
}

// maxRuleVisits bounds one evaluation: real tables are a few hundred
// rules; iptables refuses loops, but a table read here is still input.
const maxRuleVisits = 100000

// evaluation is one probe's walk through the filter table.
type evaluation struct {
	f      Filter
	p      *probe
	unsure *[]string
	budget int
}

// chain returns done=false when the probe falls off the end of chain (or
// RETURNs). stack holds the chains being evaluated, to refuse a loop.
func (e *evaluation) chain(chain string, stack []string) (done, accepted bool, by string) {
	f, p, unsure := e.f, e.p, e.unsure
	if slices.Contains(stack, chain) || len(stack) > 32 {
		*unsure = append(*unsure, "a jump loop or nesting deeper than 32 chains at "+chain)
		return false, false, ""
	}
	stack = append(stack, chain)
	for _, r := range f.Rules[chain] {
		if e.budget--; e.budget < 0 {
			if e.budget == -1 {
				*unsure = append(*unsure, fmt.Sprintf("more than %d rule visits: evaluation stopped", maxRuleVisits))
			}
			return false, false, ""
		}
		m, target, known := matchIptRule(r, *p)
		if !m {
			continue // a match it understands fails: the rule does not apply
		}
		rule := "-A " + chain + " " + strings.Join(r, " ")
		if !known {
			// Everything it understands matches; the rest might too.
			switch target {
			case "", "LOG", "NFLOG", "AUDIT", "TRACE":
			default:
				*unsure = append(*unsure, rule)
			}
			continue
		}
		switch target {
		case "ACCEPT":
			return true, true, rule
		case "DROP", "REJECT":
			return true, false, rule
		case "RETURN":
			return false, false, ""
		case "MARK":
			if !setMark(r, p) {
				*unsure = append(*unsure, rule)
			}
			continue
		case "", "LOG", "NFLOG", "AUDIT", "TRACE":
			continue
		}
		if _, ok := f.Rules[target]; ok {
			done, acc, by := e.chain(target, stack)
			if done {
				return true, acc, by
			}
			if slices.Contains(r, "-g") { // goto: falling off ends the calling chain too
				return false, false, ""
			}
			continue
		}
		*unsure = append(*unsure, rule+" (target "+target+" not evaluated)")
	}
	return false, false, ""
}

// matchIptRule evaluates one rule's matches for p. known=false when a match
// is one it does not evaluate; target is the -j/-g target.
func matchIptRule(r []string, p probe) (match bool, target string, known bool) {
	match, known = true, true
	neg := false
	unknown := func() { known, neg = false, false }
	for i := 0; i < len(r); i++ {
		w := r[i]
		arg := func() string {
			if i+1 < len(r) {
				i++
				return r[i]
			}
			return ""
		}
		one := func(ok bool) {
			if ok == neg {
				match = false
			}
			neg = false
		}
		switch w {
		case "!":
			neg = true
		case "-j", "-g":
			target = arg()
			// Target options (--reject-with, --log-prefix, ...) follow.
			i = len(r)
		case "-s", "-d":
			a := p.src
			if w == "-d" {
				a = p.dst
			}
			pfx, err := parsePrefix(arg())
			if err != nil || !a.IsValid() {
				unknown()
				continue
			}
			one(pfx.Contains(a))
		case "-i":
			one(ifaceMatch(arg(), p.iif))
		case "-o":
			arg()
			one(true) // INPUT has no out interface; iptables refuses -o there
		case "-p":
			v := arg()
			one(v == "all" || v == p.proto)
		case "-m":
			switch mod := arg(); mod {
			case "comment", "tcp", "udp", "icmp", "conntrack", "state", "multiport", "addrtype", "mark":
			default:
				unknown()
			}
		case "--comment":
			arg()
		case "--dport", "--destination-port":
			lo, hi, ok := portRange(arg())
			if !ok {
				unknown()
				continue
			}
			one(p.dport >= lo && p.dport <= hi)
		case "--sport", "--source-port", "--sports", "--source-ports", "--icmp-type":
			arg()
			unknown()
		case "--dports", "--destination-ports", "--ports":
			in := false
			for _, part := range strings.Split(arg(), ",") {
				lo, hi, ok := portRange(part)
				if !ok {
					known = false
				}
				in = in || ok && p.dport >= lo && p.dport <= hi
			}
			one(in)
		case "--ctstate", "--state":
			in := false
			for _, s := range strings.Split(arg(), ",") {
				in = in || slices.Contains(p.ctstates, s)
			}
			one(in)
		case "--dst-type", "--src-type":
			v := arg()
			if v != "LOCAL" {
				one(false) // a pod's packet to the node is unicast to a local address
				continue
			}
			one(w == "--dst-type") // to the node: dst is local, a pod's src is not
		case "--tcp-flags":
			arg()
			arg()
			neg = false
		case "--syn":
			one(p.proto == "tcp")
		case "--mark":
			val, mask, ok := markArg(arg())
			if !ok {
				unknown()
				continue
			}
			one(p.mark&mask == val)
		default:
			unknown()
		}
	}
	return match, target, known
}

// setMark applies "-j MARK --set-xmark V/M" (or --set-mark); false when the
// target's options are not those.
func setMark(r []string, p *probe) bool {
	for i := 0; i+1 < len(r); i++ {
		switch r[i] {
		case "--set-xmark", "--set-mark":
			val, mask, ok := markArg(r[i+1])
			if !ok {
				return false
			}
			if r[i] == "--set-mark" {
				p.mark = p.mark&^mask | val
			} else {
				p.mark = p.mark&^mask ^ val
			}
			return true
		}
	}
	return false
}

// markArg parses "V" or "V/M" (hex or decimal).
func markArg(s string) (val, mask uint32, ok bool) {
	v, m, hasMask := strings.Cut(s, "/")
	a, err := strconv.ParseUint(v, 0, 32)
	if err != nil {
		return 0, 0, false
	}
	mask = 0xffffffff
	if hasMask {
		b, err := strconv.ParseUint(m, 0, 32)
		if err != nil {
			return 0, 0, false
		}
		mask = uint32(b)
	}
	return uint32(a), mask, true
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func ifaceMatch(pat, iif string) bool {
	if p, ok := strings.CutSuffix(pat, "+"); ok {
		return strings.HasPrefix(iif, p)
	}
	return pat == iif
}

func portRange(s string) (lo, hi int, ok bool) {
	a, b, isRange := strings.Cut(s, ":")
	lo, err := strconv.Atoi(a)
	if err != nil {
		return 0, 0, false
	}
	if !isRange {
		return lo, lo, true
	}
	hi, err = strconv.Atoi(b)
	return lo, hi, err == nil
}

// firewallTool names the host firewall that owns INPUT, from its chains.
func (f Filter) firewallTool() string {
	switch {
	case f.has("ufw-user-input") || f.has("ufw-before-input") || f.has("ufw6-user-input") || f.has("ufw6-before-input"):
		return "ufw"
	case f.has("INPUT_ZONES") || f.has("INPUT_direct"):
		return "firewalld"
	}
	return ""
}

func (f Filter) has(chain string) bool { _, ok := f.Rules[chain]; return ok }

// inputFindings: traffic from a pod to its own node (CoreDNS to the API
// server through the kubernetes Service on a server, metrics-server to the
// kubelet, a pod to a hostNetwork pod) passes INPUT with the pod's source
// address; a host firewall that drops it there breaks it, while pod
// traffic to other nodes still works. Each family is looked at in its own
// table (iptables, ip6tables): ufw and firewalld write both.
func inputFindings(in Input) []Finding {
	k := in.Kernel
	var out []Finding
	var cidrs []netip.Prefix
	for _, fam := range []struct {
		v6     bool
		filter *Filter
		cmd    string
	}{{false, k.Filter, "iptables"}, {true, k.Filter6, "ip6tables"}} {
		src, dst, cidr, ok := inputProbeAddrs(in, fam.v6)
		if !ok || fam.filter == nil {
			continue
		}
		cidrs = append(cidrs, cidr)
		if f := inputFinding(in, fam.filter, fam.cmd, src, dst, cidr); f != nil {
			out = append(out, *f)
		}
	}
	if len(out) == 0 && len(cidrs) > 0 && slices.Contains(k.NftTables, "inet firewalld") {
		// firewalld's nftables backend (its default): rules iptables
		// does not show and doctor does not evaluate.
		var cmds, names []string
		for _, c := range cidrs {
			cmds = append(cmds, inputFix("firewalld", "", c))
			names = append(names, c.String())
		}
		return []Finding{{ID: "InputFirewalld", Severity: SeverityInfo,
			Message: fmt.Sprintf("firewalld filters this node's INPUT with nftables (table inet firewalld), which doctor cannot evaluate; its zones reject what they do not allow, so pods (%s) reach this node only if a zone accepts them; check with: firewall-cmd --get-zone-of-source=%s", strings.Join(names, ", "), cidrs[0]),
			Fix:     strings.Join(cmds, "\n")}}
	}
	return out
}

// inputProbeAddrs picks, for one family, a pod's address (never the
// gateway), the node's address it connects to and the cluster CIDR: the
// node's endpoint when it is of that family, else its gateway on the
// bridge, also a local address. ok is false when the node has no pods of
// that family.
func inputProbeAddrs(in Input, v6 bool) (src, dst netip.Addr, cidr netip.Prefix, ok bool) {
	for _, s := range in.Desired.Subnets {
		if s.Addr().Is6() == v6 {
			src, dst = s.Addr().Next().Next(), s.Addr().Next()
			break
		}
	}
	for _, c := range in.ClusterCIDRs {
		if c.Addr().Is6() == v6 {
			cidr = c
			if !src.IsValid() {
				src = c.Addr().Next().Next()
			}
			break
		}
	}
	if na := in.Kernel.NodeAddr; na.IsValid() && na.Is6() == v6 {
		dst = na
	}
	if !src.IsValid() || !dst.IsValid() {
		return src, dst, cidr, false
	}
	if !cidr.IsValid() {
		bits := 16
		if v6 {
			bits = 48
		}
		cidr = netip.PrefixFrom(src, bits).Masked()
	}
	return src, dst, cidr, true
}

// inputFinding follows a pod's new connections from src to the node at dst
// through one family's filter table.
func inputFinding(in Input, filter *Filter, cmd string, src, dst netip.Addr, cidr netip.Prefix) *Finding {
	probes := []probe{
		{src: src, dst: dst, iif: in.Bridge, proto: "tcp", dport: 10250, ctstates: []string{"NEW"},
			what: "to the kubelet (TCP 10250)"},
		{src: src, dst: dst, iif: in.Bridge, proto: "tcp", dport: 6443, ctstates: []string{"NEW", "DNAT"},
			what: "to the API server through the kubernetes Service (TCP 6443, on a server)"},
	}
	var dropped []string
	var by string
	var unsure []string
	for _, p := range probes {
		v := filter.evalInput(p)
		if v.accepted {
			continue
		}
		dropped = append(dropped, p.what)
		by = v.by
		for _, u := range v.unsure {
			if !slices.Contains(unsure, u) {
				unsure = append(unsure, u)
			}
		}
	}
	if len(dropped) == 0 {
		return nil
	}
	tool := filter.firewallTool()
	msg := fmt.Sprintf("the host firewall drops new connections from pods (%s, in on %s) to this node (%s): %s; stopped by %q",
		src, cmp.Or(in.Bridge, "the bridge"), dst, strings.Join(dropped, ", "), by)
	if tool != "" {
		msg += " (" + tool + "'s rules)"
	} else {
		msg += " (" + cmd + ")"
	}
	sev := SeverityError
	if len(unsure) > 0 {
		sev = SeverityWarning
		msg += fmt.Sprintf("; unless one of these rules, which doctor cannot evaluate, accepts them first: %s", strings.Join(unsure, "; "))
	}
	return &Finding{ID: "InputDropsPods", Severity: sev, Message: msg, Fix: inputFix(tool, cmd, cidr)}
}

// inputFix is the exact command that lets pods reach their node, for the
// tool that owns the host firewall (k3s documents the same for ufw and
// firewalld, for the cluster and the service CIDR).
//
// cmd is the plain program of the family (iptables, ip6tables).
func inputFix(tool, cmd string, cidr netip.Prefix) string {
	service := "10.43.0.0/16"
	if cidr.Addr().Is6() {
		service = "<the IPv6 service CIDR>"
	}
	switch tool {
	case "ufw":
		return fmt.Sprintf("ufw allow from %s to any   (k3s also allows its service CIDR: ufw allow from %s to any)", cidr, service)
	case "firewalld":
		return fmt.Sprintf("firewall-cmd --permanent --zone=trusted --add-source=%s && firewall-cmd --reload   (k3s also adds its service CIDR, %s)", cidr, service)
	}
	return fmt.Sprintf("%s -I INPUT -s %s -j ACCEPT   (then persist it the way this host saves its firewall)", cmd, cidr)
}
