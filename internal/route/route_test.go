package route

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// hostNS makes a namespace with a stand-in device "wgx" (a bridge: the
// route code does not care about the link type), a cni0 holding the
// gateways, and another link "other0" for other people's routes.
func hostNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); testutils.UnmountNS(n) })
	// ns.Do runs the closure on another goroutine, where t.Fatal must not be
	// called: errors come back out and fail the test here.
	err = n.Do(func(ns.NetNS) error {
		for _, name := range []string{"wgx", "cni0", "other0"} {
			if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
				return fmt.Errorf("add %s: %w", name, err)
			}
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return fmt.Errorf("set %s up: %w", name, err)
			}
		}
		cni0, err := netlink.LinkByName("cni0")
		if err != nil {
			return err
		}
		for _, a := range []string{"10.42.0.1/24", "10.42.0.200/24", "fd42::1/64"} {
			p := netip.MustParsePrefix(a)
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}
			if err := netlink.AddrAdd(cni0, addr); err != nil {
				return fmt.Errorf("add %s to cni0: %w", a, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// inNS runs f in n. f must not call t.Fatal (ns.Do runs it on another
// goroutine): it sets variables that the test checks afterwards.
func inNS(t *testing.T, n ns.NetNS, f func()) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { f(); return nil }); err != nil {
		t.Fatal(err)
	}
}

func sh(t *testing.T, n ns.NetNS, args ...string) string {
	t.Helper()
	var out []byte
	var err error
	inNS(t, n, func() { out, err = exec.Command(args[0], args[1:]...).CombinedOutput() })
	if err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
	return string(out)
}

var (
	gw4 = netip.MustParseAddr("10.42.0.1")
	gw6 = netip.MustParseAddr("fd42::1")
)

func desired() []mesh.Route {
	return []mesh.Route{
		{Node: "b", Dst: netip.MustParsePrefix("10.42.1.0/24"), Src: gw4},
		{Node: "c", Dst: netip.MustParsePrefix("10.42.2.0/24"), Src: gw4},
		{Node: "b", Dst: netip.MustParsePrefix("fd42:0:0:1::/64"), Src: gw6},
	}
}

func TestApplyIsIdempotentAndOwnsOnlyItsRoutes(t *testing.T) {
	testutil.RequireRoot(t)
	n := hostNS(t)
	// Someone else's routes: an equal /24 in main (a wg-quick peer), a
	// broad /16, and a route in our table with another protocol.
	sh(t, n, "ip", "route", "add", "10.42.1.0/24", "dev", "other0")
	sh(t, n, "ip", "route", "add", "10.42.0.0/16", "dev", "other0")
	sh(t, n, "ip", "route", "add", "192.0.2.0/24", "dev", "other0", "table", "87")

	m, err := New(Config{Device: "wgx"})
	if err != nil {
		t.Fatal(err)
	}
	var ops Ops
	inNS(t, n, func() { ops, err = m.Apply(desired()) })
	if err != nil {
		t.Fatal(err)
	}
	if ops != (Ops{RoutesAdded: 3, RulesAdded: 2}) {
		t.Fatalf("first apply ops = %+v", ops)
	}
	routes := sh(t, n, "ip", "route", "show", "table", "87", "proto", "87")
	t.Logf("ip route show table 87 proto 87:\n%s%s", routes, sh(t, n, "ip", "-6", "route", "show", "table", "87", "proto", "87"))
	for _, want := range []string{"10.42.1.0/24 dev wgx scope link src 10.42.0.1", "10.42.2.0/24 dev wgx scope link src 10.42.0.1"} {
		if !strings.Contains(routes, want) {
			t.Errorf("missing %q in\n%s", want, routes)
		}
	}
	rules := sh(t, n, "ip", "rule") + sh(t, n, "ip", "-6", "rule")
	t.Logf("ip rule:\n%s", rules)
	if strings.Count(rules, "5187:\tfrom all lookup 87 proto 87") != 2 {
		t.Errorf("want one rule per family:\n%s", rules)
	}
	// Our route wins over the equal and the broader route in main.
	for _, dst := range []string{"10.42.1.7", "10.42.2.7"} {
		if got := sh(t, n, "ip", "route", "get", dst); !strings.Contains(got, "dev wgx") || !strings.Contains(got, "src 10.42.0.1") {
			t.Errorf("ip route get %s = %q, want dev wgx src 10.42.0.1", dst, got)
		}
	}

	before := sh(t, n, "ip", "route", "show", "table", "all")
	inNS(t, n, func() { ops, err = m.Apply(desired()) })
	if err != nil || ops != (Ops{}) {
		t.Fatalf("second apply: ops %+v, err %v", ops, err)
	}
	if after := sh(t, n, "ip", "route", "show", "table", "all"); after != before {
		t.Fatalf("no-op apply changed routes:\n%s\n---\n%s", before, after)
	}

	// Wrong source: replaced. Stale route of ours: deleted. Ours on another link: replaced.
	sh(t, n, "ip", "route", "replace", "10.42.1.0/24", "dev", "wgx", "src", "10.42.0.200", "table", "87", "proto", "87")
	sh(t, n, "ip", "route", "replace", "10.42.2.0/24", "dev", "other0", "table", "87", "proto", "87")
	sh(t, n, "ip", "route", "add", "10.42.9.0/24", "dev", "wgx", "table", "87", "proto", "87")
	inNS(t, n, func() { ops, err = m.Apply(desired()) })
	if err != nil || ops != (Ops{RoutesAdded: 2, RoutesDeleted: 1}) {
		t.Fatalf("repair apply: ops %+v, err %v", ops, err)
	}
	var got []mesh.Route
	inNS(t, n, func() { got, err = m.List() })
	if err != nil || len(got) != 3 || got[0].Src != gw4 || got[1].Src != gw4 {
		t.Fatalf("after repair: %+v, %v", got, err)
	}

	// Cleanup: ours gone, theirs intact.
	inNS(t, n, func() { ops, err = m.Cleanup() })
	if err != nil || ops != (Ops{RoutesDeleted: 3, RulesDeleted: 2}) {
		t.Fatalf("cleanup: ops %+v, err %v", ops, err)
	}
	if out := sh(t, n, "ip", "route", "show", "table", "all", "proto", "87"); strings.TrimSpace(out) != "" {
		t.Errorf("routes of ours left:\n%s", out)
	}
	if out := sh(t, n, "ip", "rule"); strings.Contains(out, "lookup 87") {
		t.Errorf("rule left:\n%s", out)
	}
	all := sh(t, n, "ip", "route", "show", "table", "all")
	for _, theirs := range []string{"10.42.1.0/24 dev other0", "10.42.0.0/16 dev other0", "192.0.2.0/24 dev other0 table 87"} {
		if !strings.Contains(all, theirs) {
			t.Errorf("cleanup removed someone else's route %q:\n%s", theirs, all)
		}
	}
}

// TestApplyMovesOurRuleFromAnOlderPriority: an agent from before issue 15
// left its rule at 5787, behind Tailscale's 5270. Apply adds the rule at
// the new priority and deletes the old one (ours: table 87, protocol 87);
// a rule of someone else that also looks up table 87 stays.
func TestApplyMovesOurRuleFromAnOlderPriority(t *testing.T) {
	testutil.RequireRoot(t)
	n := hostNS(t)
	sh(t, n, "ip", "rule", "add", "pref", "5787", "lookup", "87", "proto", "87")
	sh(t, n, "ip", "-6", "rule", "add", "pref", "5787", "lookup", "87", "proto", "87")
	sh(t, n, "ip", "rule", "add", "pref", "6000", "from", "192.0.2.0/24", "lookup", "87")
	m, err := New(Config{Device: "wgx"})
	if err != nil {
		t.Fatal(err)
	}
	var ops Ops
	inNS(t, n, func() { ops, err = m.Apply(desired()) })
	if err != nil || ops != (Ops{RoutesAdded: 3, RulesAdded: 2, RulesDeleted: 2}) {
		t.Fatalf("apply: ops %+v, err %v", ops, err)
	}
	rules := sh(t, n, "ip", "rule") + sh(t, n, "ip", "-6", "rule")
	t.Logf("ip rule:\n%s", rules)
	if strings.Contains(rules, "5787:") || strings.Count(rules, "5187:\tfrom all lookup 87 proto 87") != 2 ||
		!strings.Contains(rules, "6000:\tfrom 192.0.2.0/24 lookup 87") {
		t.Errorf("want our rule moved to 5187 in both families and the other rule kept:\n%s", rules)
	}
	inNS(t, n, func() { ops, err = m.Apply(desired()) })
	if err != nil || ops != (Ops{}) {
		t.Fatalf("second apply: ops %+v, err %v", ops, err)
	}
}

func TestMainTableModeMakesNoRule(t *testing.T) {
	testutil.RequireRoot(t)
	n := hostNS(t)
	m, err := New(Config{Device: "wgx", Table: 254})
	if err != nil {
		t.Fatal(err)
	}
	var ops Ops
	inNS(t, n, func() { ops, err = m.Apply(desired()[:2]) })
	if err != nil || ops != (Ops{RoutesAdded: 2}) {
		t.Fatalf("ops %+v, err %v", ops, err)
	}
	if out := sh(t, n, "ip", "route", "show", "proto", "87"); strings.Count(out, "dev wgx") != 2 {
		t.Fatalf("main table routes:\n%s", out)
	}
	inNS(t, n, func() { ops, err = m.Apply(nil) })
	if err != nil || ops != (Ops{RoutesDeleted: 2}) {
		t.Fatalf("ops %+v, err %v", ops, err)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{{}, {Device: "x", Table: 255}, {Device: "x", RulePriority: 32766}} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}
