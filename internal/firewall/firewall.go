// Package firewall owns wgmesh's iptables rules: the chains WGMESH-POSTRTG
// (nat: masquerade pod traffic leaving the cluster) and WGMESH-FORWARD
// (filter: accept forwarded pod traffic), and one jump to each, from
// POSTROUTING and FORWARD. It writes nothing else and never edits a rule
// outside its chains but those two jumps; cleanup removes exactly them.
//
// The masquerade rules follow flannel's reference behaviour. The FORWARD
// jump is appended, not inserted, so that the network policy chains of
// k3s's embedded kube-router (inserted at the top of FORWARD) see pod
// traffic before our ACCEPT does.
//
// Rules are compared before they are written: applying the same rules again
// runs only iptables -S (List) and changes nothing.
//
// Call every method from a thread in the target network namespace.
package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Chain names.
const (
	ChainPostrouting = "WGMESH-POSTRTG"
	ChainForward     = "WGMESH-FORWARD"
)

// KubeProxyMasqMark is the mark kube-proxy sets on traffic it masquerades
// itself; masquerading it again breaks on some kernels (flannel's reason).
const KubeProxyMasqMark = "0x4000/0x4000"

// Rules is what the rules are made from.
type Rules struct {
	// ClusterCIDRs are the whole pod networks (k3s --cluster-cidr), one per family.
	ClusterCIDRs []netip.Prefix
	// PodSubnets are this node's pod subnets.
	PodSubnets []netip.Prefix
	// Masquerade pod traffic leaving the cluster (subnet.env WGMESH_IPMASQ).
	Masquerade bool
}

// Rule is one iptables rule: table, chain and the spec as iptables -S
// prints it after "-A CHAIN".
type Rule struct {
	Table, Chain string
	Spec         []string
}

// String renders the rule as `iptables -S` does.
func (r Rule) String() string { return renderRule(r.Chain, r.Spec) }

// jump is a rule in a built-in chain that sends traffic to ours.
type jump struct {
	Table, From, To string
	insert          bool // at the top (POSTROUTING), else appended (FORWARD)
}

var jumps = []jump{
	{Table: "nat", From: "POSTROUTING", To: ChainPostrouting, insert: true},
	{Table: "filter", From: "FORWARD", To: ChainForward},
}

func (j jump) spec() []string {
	return []string{"-m", "comment", "--comment", "wgmesh: " + strings.ToLower(j.To), "-j", j.To}
}

// DesiredRules returns the rules of our chains for one family (v6 false:
// iptables, true: ip6tables), in order. A chain with no rules is not
// wanted (its jump is removed too).
func DesiredRules(r Rules, v6 bool) map[string][]Rule {
	fam := func(ps []netip.Prefix) []netip.Prefix {
		var out []netip.Prefix
		for _, p := range ps {
			if p.Addr().Is6() == v6 {
				out = append(out, p.Masked())
			}
		}
		return out
	}
	clusters, subnets := fam(r.ClusterCIDRs), fam(r.PodSubnets)
	multicast := "224.0.0.0/4"
	if v6 {
		multicast = "ff00::/8"
	}
	out := map[string][]Rule{}
	add := func(table, chain string, spec ...string) {
		out[chain] = append(out[chain], Rule{Table: table, Chain: chain, Spec: spec})
	}
	for _, c := range clusters {
		cs := c.String()
		add("filter", ChainForward, "-s", cs, "-m", "comment", "--comment", "wgmesh: forward from pods", "-j", "ACCEPT")
		add("filter", ChainForward, "-d", cs, "-m", "comment", "--comment", "wgmesh: forward to pods", "-j", "ACCEPT")
	}
	if r.Masquerade && len(clusters) > 0 {
		add("nat", ChainPostrouting, "-m", "mark", "--mark", KubeProxyMasqMark, "-m", "comment", "--comment", "wgmesh: kube-proxy masquerades it", "-j", "RETURN")
		for _, c := range clusters {
			cs := c.String()
			add("nat", ChainPostrouting, "-s", cs, "-d", cs, "-m", "comment", "--comment", "wgmesh: pod to pod", "-j", "RETURN")
		}
		for _, s := range subnets {
			for _, c := range clusters {
				if c.Contains(s.Addr()) {
					add("nat", ChainPostrouting, "!", "-s", c.String(), "-d", s.String(), "-m", "comment", "--comment", "wgmesh: to our pods from outside", "-j", "RETURN")
				}
			}
		}
		for _, c := range clusters {
			add("nat", ChainPostrouting, "-s", c.String(), "!", "-d", multicast, "-m", "comment", "--comment", "wgmesh: pods leaving the cluster", "-j", "MASQUERADE", "--random-fully")
		}
	}
	return out
}

// renderRule writes "-A CHAIN spec..." quoting as iptables -S does.
func renderRule(chain string, spec []string) string {
	var b strings.Builder
	b.WriteString("-A ")
	b.WriteString(chain)
	for _, s := range spec {
		b.WriteByte(' ')
		if s == "" || strings.ContainsAny(s, " \t\"'") {
			b.WriteString(`"` + strings.ReplaceAll(s, `"`, `\"`) + `"`)
		} else {
			b.WriteString(s)
		}
	}
	return b.String()
}

// Manager applies the rules for IPv4 and, when there is an IPv6 cluster
// CIDR, IPv6.
type Manager struct {
	ipt map[bool]*iptables.IPTables // v6 -> handle, created on first use
}

// New returns a Manager; iptables binaries are looked up on first use.
func New() *Manager { return &Manager{ipt: map[bool]*iptables.IPTables{}} }

func (m *Manager) handle(v6 bool) (*iptables.IPTables, error) {
	if h := m.ipt[v6]; h != nil {
		return h, nil
	}
	proto := iptables.ProtocolIPv4
	if v6 {
		proto = iptables.ProtocolIPv6
	}
	h, err := iptables.NewWithProtocol(proto)
	if err != nil {
		return nil, fmt.Errorf("iptables (ipv6=%t): %w", v6, err)
	}
	m.ipt[v6] = h
	return h, nil
}

func hasFamily(ps []netip.Prefix, v6 bool) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Addr().Is6() == v6 })
}

// Apply makes our chains and jumps match r and returns the number of
// iptables writes it made (0 when everything already matched).
func (m *Manager) Apply(r Rules) (int, error) {
	changed := 0
	var errs []error
	for _, v6 := range []bool{false, true} {
		if !hasFamily(r.ClusterCIDRs, v6) {
			if v6 {
				continue // never require ip6tables on an IPv4-only cluster
			}
		}
		h, err := m.handle(v6)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := applyFamily(h, DesiredRules(r, v6))
		changed += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return changed, errors.Join(errs...)
}

func applyFamily(h *iptables.IPTables, want map[string][]Rule) (int, error) {
	changed := 0
	for _, j := range jumps {
		rules := want[j.To]
		if len(rules) == 0 {
			n, err := removeChain(h, j)
			changed += n
			if err != nil {
				return changed, err
			}
			continue
		}
		n, err := syncChain(h, j.Table, j.To, rules)
		changed += n
		if err != nil {
			return changed, err
		}
		ok, err := hasJump(h, j)
		if err != nil {
			return changed, err
		}
		if ok {
			continue
		}
		if j.insert {
			err = h.Insert(j.Table, j.From, 1, j.spec()...)
		} else {
			err = h.Append(j.Table, j.From, j.spec()...)
		}
		if err != nil {
			return changed, fmt.Errorf("add jump %s -> %s: %w", j.From, j.To, err)
		}
		changed++
	}
	return changed, nil
}

// listChain returns the "-A" lines of chain, and false if it does not exist.
// One iptables -S per chain: a resync that changes nothing costs two per
// jump (our chain, and the built-in chain holding the jump).
func listChain(h *iptables.IPTables, table, chain string) ([]string, bool, error) {
	lines, err := h.List(table, chain)
	var ierr *iptables.Error
	if errors.As(err, &ierr) && (ierr.IsNotExist() || ierr.ExitStatus() == 1) {
		// Exit 1 as go-iptables' ChainExists reads it: iptables-nft in a
		// namespace whose table was never used says "incompatible" there.
		// A real problem shows up when the chain is then written.
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("list chain %s/%s: %w", table, chain, err)
	}
	return chainRules(lines), true, nil
}

func hasJump(h *iptables.IPTables, j jump) (bool, error) {
	lines, _, err := listChain(h, j.Table, j.From)
	if err != nil {
		return false, err
	}
	return slices.Contains(lines, renderRule(j.From, j.spec())), nil
}

// syncChain makes chain hold exactly rules, in order. When what iptables
// lists already equals them, it writes nothing; otherwise it flushes the
// chain and appends the rules (a moment without the chain's rules is
// harmless: the jumps fall through to the built-in chain).
func syncChain(h *iptables.IPTables, table, chain string, rules []Rule) (int, error) {
	cur, exists, err := listChain(h, table, chain)
	if err != nil {
		return 0, err
	}
	if exists {
		want := make([]string, 0, len(rules))
		for _, r := range rules {
			want = append(want, r.String())
		}
		if slices.Equal(cur, want) {
			return 0, nil
		}
	}
	changed := 0
	if err := h.ClearChain(table, chain); err != nil { // creates it if missing
		return 0, fmt.Errorf("create/flush chain %s/%s: %w", table, chain, err)
	}
	changed++
	for _, r := range rules {
		if err := h.Append(table, chain, r.Spec...); err != nil {
			return changed, fmt.Errorf("append to %s/%s %q: %w", table, chain, r.String(), err)
		}
		changed++
	}
	return changed, nil
}

// chainRules drops the "-N CHAIN" / "-P CHAIN" lines of a List output.
func chainRules(lines []string) []string {
	out := lines[:0:0]
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			out = append(out, l)
		}
	}
	return out
}

func removeChain(h *iptables.IPTables, j jump) (int, error) {
	changed := 0
	_, exists, err := listChain(h, j.Table, j.To)
	if err != nil {
		return 0, err
	}
	if !exists {
		return 0, nil // iptables allows no jump to a missing chain
	}
	ok, err := hasJump(h, j)
	if err != nil {
		return 0, err
	}
	if ok {
		if err := h.Delete(j.Table, j.From, j.spec()...); err != nil {
			return 0, fmt.Errorf("delete jump %s -> %s: %w", j.From, j.To, err)
		}
		changed++
	}
	if err := h.ClearAndDeleteChain(j.Table, j.To); err != nil {
		return changed, fmt.Errorf("delete chain %s/%s: %w", j.Table, j.To, err)
	}
	return changed + 1, nil
}

// Cleanup removes our jumps and chains, IPv4 and IPv6 (when ip6tables is
// there), and nothing else.
func (m *Manager) Cleanup() (int, error) {
	changed := 0
	var errs []error
	for _, v6 := range []bool{false, true} {
		h, err := m.handle(v6)
		if err != nil {
			if v6 {
				continue // no ip6tables: nothing of ours there
			}
			errs = append(errs, err)
			continue
		}
		for _, j := range jumps {
			n, err := removeChain(h, j)
			changed += n
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return changed, errors.Join(errs...)
}

// ForwardState is what doctor needs to know about FORWARD.
type ForwardState struct {
	Policy    string // ACCEPT or DROP
	JumpFound bool   // our jump to WGMESH-FORWARD is in FORWARD
}

// ReadForward reads the FORWARD policy and whether our jump is there.
func (m *Manager) ReadForward(v6 bool) (ForwardState, error) {
	h, err := m.handle(v6)
	if err != nil {
		return ForwardState{}, err
	}
	lines, err := h.List("filter", "FORWARD")
	if err != nil {
		return ForwardState{}, fmt.Errorf("list FORWARD: %w", err)
	}
	var st ForwardState
	for _, l := range lines {
		if p, ok := strings.CutPrefix(l, "-P FORWARD "); ok {
			st.Policy = strings.TrimSpace(p)
		}
	}
	st.JumpFound = slices.Contains(chainRules(lines), renderRule("FORWARD", jumps[1].spec()))
	return st, nil
}
