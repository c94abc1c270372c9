// Package route owns the routes to peer pod subnets through the WireGuard
// device, and the `ip rule` that selects their table. Every route it makes
// carries protocol mesh.RouteProtocol (87) and lives in its own table;
// it lists, replaces and deletes only routes with that protocol in that
// table, and only its rule (its priority, its table). It never touches
// another route or rule, even one that conflicts: doctor reports those.
//
// Why a dedicated table: in the main table, a route someone else made for
// the same destination (say a wg-quick `10.42.1.0/24 dev wg0`) collides
// with ours (EEXIST on add; a replace would overwrite theirs), and a more
// specific one silently wins by longest prefix. A broader one (wg-quick's
// `10.42.0.0/16 dev wg0`) does not win over our /24 in main, but nothing
// in main protects us from the other two. Like Calico, our routes sit in
// table 87, looked up by a rule at priority DefaultRulePriority (5187),
// before the main table's rule (32766): for a peer subnet our table
// answers first whatever main holds, and nothing we add can collide with
// anyone's main-table route. Why that priority: see DefaultRulePriority.
// Destinations we have no route for fall through to main unchanged.
// Table: 254 (main) is accepted for hosts that want kilo-style main-table
// routes; no rule is made then.
//
// Call every method from a thread in the target network namespace.
package route

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/netconv"
)

// Defaults.
const (
	DefaultTable = 87
	// DefaultRulePriority places our rule where a rule of another tool
	// cannot take peer pod subnets from the mesh without meaning to, and
	// where we take nothing from the tools that must come first. Known
	// neighbours, lowest first:
	//
	//	0            local table (Cilium moves it to 100)
	//	1..112       Cilium (1 WireGuard, 9 proxy, 20 ingress, 110/111 egress, 112 VTEP)
	//	99           Calico's WireGuard rule (wireguardRoutingRulePriority)
	//	10..1536     AWS VPC CNI (10 VLAN, 512 to-pod, 1024 not-to-VPC, 1536 from-pod)
	//	5210..5270   Tailscale (5210/5230/5250 for its own marked packets,
	//	             5270 "lookup 52": tailnet routes, and subnet routes
	//	             accepted with --accept-routes); it restores 5200..5299
	//	32764/32765  wg-quick's full-tunnel pair (first free below main),
	//	             kube-router's DSR and egress-IP fwmark rules
	//	32766/32767  main, default
	//
	// Table 87 holds only this cluster's live peer pod subnets, so a
	// packet it answers for belongs in the tunnel whoever else routes that
	// destination. Before Tailscale: a tailnet route over the pod CIDR
	// (several k3s clusters on one tailnet all use 10.42.0.0/16) must not
	// take pod traffic (issue 15: at 5787, rule 5270 won silently). It
	// costs Tailscale nothing: its marked packets go to underlay
	// endpoints, never into a pod subnet (EndpointInMesh keeps peers'
	// endpoints out of them too). After the CNIs' and cloud plugins'
	// mark and per-pod rules (all below 2000), which redirect traffic on
	// purpose. Coming first covers the way out only: the way back to our
	// own pods is main's cni0 route, at 32766 (docs/dataplane.md).
	// Doctor's RouteCaptured names any rule that still wins, either way.
	// An agent of an older version left its rule at 5787; Apply moves it.
	DefaultRulePriority = 5187
	mainTable           = unix.RT_TABLE_MAIN
)

// Config says where the routes go.
type Config struct {
	// Device is the WireGuard interface the routes point into.
	Device string
	// Table holds our routes; default DefaultTable. 254 = main, no rule.
	Table int
	// RulePriority is the priority of our `ip rule ... lookup Table`; it
	// must be below 32766 (main). Default DefaultRulePriority.
	RulePriority int
}

func (c *Config) setDefaults() error {
	if c.Device == "" {
		return errors.New("route config: no device")
	}
	if c.Table == 0 {
		c.Table = DefaultTable
	}
	if c.RulePriority == 0 {
		c.RulePriority = DefaultRulePriority
	}
	if c.Table != mainTable && (c.RulePriority < 1 || c.RulePriority >= 32766) {
		return fmt.Errorf("route config: rule priority %d must be in 1..32765, before the main table", c.RulePriority)
	}
	switch c.Table {
	case unix.RT_TABLE_LOCAL, unix.RT_TABLE_DEFAULT, unix.RT_TABLE_UNSPEC:
		return fmt.Errorf("route config: table %d is reserved", c.Table)
	}
	return nil
}

// Manager reconciles the routes and the rule.
type Manager struct{ cfg Config }

// Ops counts kernel writes.
type Ops struct {
	RoutesAdded   int // added or replaced
	RoutesDeleted int
	RulesAdded    int
	RulesDeleted  int
}

// New validates cfg.
func New(cfg Config) (*Manager, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg}, nil
}

// Table is the routing table the manager uses.
func (m *Manager) Table() int { return m.cfg.Table }

// RulePriority is the priority of the manager's rule (unused with main).
func (m *Manager) RulePriority() int { return m.cfg.RulePriority }

// List returns our routes (protocol 87 in our table), IPv4 and IPv6, in
// destination order. A route of ours that points to another interface
// comes back with an invalid Src, so that a diff replaces it.
func (m *Manager) List() ([]mesh.Route, error) {
	link, err := netlinksafe.LinkByName(m.cfg.Device)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", m.cfg.Device, err)
	}
	raw, err := m.listRaw()
	if err != nil {
		return nil, err
	}
	out := make([]mesh.Route, 0, len(raw))
	for _, r := range raw {
		if r.Dst == nil {
			continue
		}
		dst, ok := netconv.Prefix(*r.Dst)
		if !ok {
			continue
		}
		var src netip.Addr
		if r.LinkIndex == link.Attrs().Index {
			src, _ = netip.AddrFromSlice(r.Src)
			src = src.Unmap()
		}
		out = append(out, mesh.Route{Dst: dst, Src: src})
	}
	slices.SortFunc(out, func(a, b mesh.Route) int {
		if c := a.Dst.Addr().Compare(b.Dst.Addr()); c != 0 {
			return c
		}
		return a.Dst.Bits() - b.Dst.Bits()
	})
	return out, nil
}

func (m *Manager) listRaw() ([]netlink.Route, error) {
	filter := &netlink.Route{Table: m.cfg.Table, Protocol: mesh.RouteProtocol}
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("list routes of table %d: %w", m.cfg.Table, err)
	}
	return routes, nil
}

// Apply makes our routes exactly desired: it adds missing ones, replaces
// wrong ones (other src or device) and then deletes stale ones, and keeps
// one rule per address family that has routes.
func (m *Manager) Apply(desired []mesh.Route) (Ops, error) {
	var ops Ops
	link, err := netlinksafe.LinkByName(m.cfg.Device)
	if err != nil {
		return ops, fmt.Errorf("look up %s: %w", m.cfg.Device, err)
	}
	current, err := m.List()
	if err != nil {
		return ops, err
	}
	diff := mesh.DiffRoutes(current, desired)
	var errs []error
	for _, r := range diff.Add {
		if err := netlink.RouteReplace(m.netlinkRoute(link.Attrs().Index, r)); err != nil {
			errs = append(errs, fmt.Errorf("add route %s src %s dev %s table %d: %w", r.Dst, r.Src, m.cfg.Device, m.cfg.Table, err))
			continue
		}
		ops.RoutesAdded++
	}
	for _, r := range diff.Delete {
		if err := m.deleteRoute(r.Dst); err != nil {
			if !errors.Is(err, unix.ESRCH) { // gone already: fine, but not our change
				errs = append(errs, err)
			}
			continue
		}
		ops.RoutesDeleted++
	}

	if m.cfg.Table != mainTable {
		want := map[int]bool{}
		for _, r := range desired {
			want[family(r.Dst)] = true
		}
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			added, deleted, err := m.ensureRule(fam, want[fam])
			if err != nil {
				errs = append(errs, err)
			}
			ops.RulesAdded += added
			ops.RulesDeleted += deleted
		}
	}
	return ops, errors.Join(errs...)
}

func (m *Manager) netlinkRoute(linkIndex int, r mesh.Route) *netlink.Route {
	return &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       netconv.IPNet(r.Dst.Masked()),
		Src:       r.Src.AsSlice(),
		Table:     m.cfg.Table,
		Protocol:  mesh.RouteProtocol,
		Scope:     netlink.SCOPE_LINK,
	}
}

// deleteRoute deletes our route to dst, matched by table and protocol so
// that nobody else's route to the same destination can be hit.
func (m *Manager) deleteRoute(dst netip.Prefix) error {
	// Scope "nowhere" matches a route of any scope; the default (universe)
	// would match none of ours, which are link-scoped.
	err := netlink.RouteDel(&netlink.Route{Dst: netconv.IPNet(dst.Masked()), Table: m.cfg.Table, Protocol: mesh.RouteProtocol, Scope: netlink.SCOPE_NOWHERE})
	if err != nil {
		return fmt.Errorf("delete route %s table %d: %w", dst, m.cfg.Table, err)
	}
	return nil
}

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// ourRules lists the rules of family that are ours: our table, and our
// priority (ours) or our protocol at another priority (moved: left by an
// agent with another DefaultRulePriority, 5787 before issue 15).
func (m *Manager) ourRules(fam int) (ours, moved []netlink.Rule, err error) {
	rules, err := netlinksafe.RuleListFiltered(fam, &netlink.Rule{Table: m.cfg.Table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, nil, fmt.Errorf("list rules: %w", err)
	}
	for _, r := range rules {
		switch {
		case r.Table != m.cfg.Table:
		case r.Priority == m.cfg.RulePriority:
			ours = append(ours, r)
		case r.Protocol == mesh.RouteProtocol:
			moved = append(moved, r)
		}
	}
	return ours, moved, nil
}

func (m *Manager) rule(fam, priority int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = fam
	r.Table = m.cfg.Table
	r.Priority = priority
	r.Protocol = mesh.RouteProtocol
	return r
}

// ensureRule makes our rule of family present (want) or absent, and
// removes our rules at other priorities: the new one is added first, so
// that peer subnets are never without a rule in between.
func (m *Manager) ensureRule(fam int, want bool) (added, deleted int, err error) {
	ours, moved, err := m.ourRules(fam)
	if err != nil {
		return 0, 0, err
	}
	if !want {
		moved = append(moved, ours...)
	} else if len(ours) == 0 {
		if err := netlink.RuleAdd(m.rule(fam, m.cfg.RulePriority)); err != nil {
			return 0, 0, fmt.Errorf("add rule priority %d lookup %d: %w", m.cfg.RulePriority, m.cfg.Table, err)
		}
		added = 1
	}
	for _, r := range moved {
		if err := netlink.RuleDel(m.rule(fam, r.Priority)); err != nil && !errors.Is(err, unix.ENOENT) {
			return added, deleted, fmt.Errorf("delete rule priority %d lookup %d: %w", r.Priority, m.cfg.Table, err)
		}
		deleted++
	}
	return added, deleted, nil
}

// Cleanup deletes all our routes and our rules; it works without the
// device (its routes are gone with it).
func (m *Manager) Cleanup() (Ops, error) {
	var ops Ops
	var errs []error
	raw, err := m.listRaw()
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range raw {
		if r.Dst == nil {
			continue
		}
		dst, ok := netconv.Prefix(*r.Dst)
		if !ok {
			continue
		}
		if err := m.deleteRoute(dst); err != nil {
			if !errors.Is(err, unix.ESRCH) {
				errs = append(errs, err)
			}
			continue
		}
		ops.RoutesDeleted++
	}
	if m.cfg.Table != mainTable {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			_, deleted, err := m.ensureRule(fam, false)
			if err != nil {
				errs = append(errs, err)
			}
			ops.RulesDeleted += deleted
		}
	}
	return ops, errors.Join(errs...)
}
