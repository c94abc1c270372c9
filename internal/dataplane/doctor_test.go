package dataplane

import (
	"slices"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/doctor"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// TestDoctorFindsPodTrafficCapturedByAnotherRule reproduces issue 15's
// lab node: another tool's ip rule at priority 5270 (Tailscale's) looks
// up a table that routes the whole cluster CIDR into its own device.
// With wgmesh's rule behind it (5787, the priority before issue 15),
// pods on that node lose every packet to other nodes, IPv4 and IPv6, and
// doctor must say so: an error naming the rule and the table. Without
// the rule, doctor finds no error and pods reach each other again. With
// wgmesh's rule at today's default (5187, ahead of Tailscale's range),
// the same rule takes nothing: the agent moves its old rule on restart,
// pods reach each other and doctor finds no error.
func TestDoctorFindsPodTrafficCapturedByAnotherRule(t *testing.T) {
	testutil.RequireRoot(t)
	l := newLabStack(t, 2, true)
	a, b := l.nodes[0], l.nodes[1]
	for _, nd := range l.nodes {
		l.apply(nd, l.nodes)
	}
	// Node a runs an agent from before issue 15.
	l.restart(a, 5787)
	if ch := l.apply(a, l.nodes); ch.RulesChanged == 0 {
		t.Fatalf("rule not moved to 5787: %+v", ch)
	}
	pings := func() (v4, v6 error) { return l.ping(a, b), l.ping6(a, b) }
	if v4, v6 := pings(); v4 != nil || v6 != nil {
		t.Fatalf("ping before the rule: %v, %v", v4, v6)
	}

	// The other tool's device: a TUN nobody reads, so what it routes
	// there is lost (the lab kernel has no dummy links).
	mustRun(t, a.netns, "ip", "tuntap", "add", "ts0", "mode", "tun")
	t.Cleanup(func() { testns.Run(a.netns, "ip", "link", "del", "ts0") })
	for _, cmd := range [][]string{
		{"ip", "link", "set", "ts0", "up"},
		{"ip", "route", "add", "10.42.0.0/16", "dev", "ts0", "table", "52"},
		{"ip", "-6", "route", "add", "fd42::/48", "dev", "ts0", "table", "52"},
	} {
		mustRun(t, a.netns, cmd[0], cmd[1:]...)
	}
	addRule := func() {
		mustRun(t, a.netns, "ip", "rule", "add", "pref", "5270", "lookup", "52")
		mustRun(t, a.netns, "ip", "-6", "rule", "add", "pref", "5270", "lookup", "52")
		t.Logf("node a's rules:\n%s%s", mustRun(t, a.netns, "ip", "rule"), mustRun(t, a.netns, "ip", "-6", "rule"))
	}
	noErrors := func(findings []doctor.Finding) {
		t.Helper()
		for _, f := range findings {
			if f.Severity == doctor.SeverityError {
				t.Errorf("error: %s", f)
			}
		}
		// Table 52's routes are still there: reported, as routes that do not win.
		if !slices.ContainsFunc(findings, func(f doctor.Finding) bool {
			return f.ID == "ShadowingRoute" && strings.Contains(f.Message, "10.42.0.0/16 dev ts0 table 52") &&
				strings.Contains(f.Message, "the kernel's own route lookups go to "+a.dev+" today")
		}) {
			t.Errorf("no ShadowingRoute warning for table 52's route")
		}
		if v4, v6 := pings(); v4 != nil || v6 != nil {
			t.Errorf("ping a -> b: %v; ping6: %v", v4, v6)
		}
	}

	t.Run("behind the rule: pods cut off, doctor errors naming rule 5270 and table 52", func(t *testing.T) {
		addRule()
		if v4, v6 := pings(); v4 == nil || v6 == nil {
			t.Errorf("ping a -> b works with the capturing rule in place (v4 err %v, v6 err %v): the test does not reproduce the issue", v4, v6)
		}
		findings := l.doctor(a, l.nodes)
		for _, dst := range []string{b.subnet.String(), b.subnet6.String()} {
			if !slices.ContainsFunc(findings, func(f doctor.Finding) bool {
				return f.ID == "RouteCaptured" && f.Severity == doctor.SeverityError &&
					strings.Contains(f.Message, "peer subnet(s) "+dst+" (node-1) from pods and from the node itself leave through ts0, not "+a.dev) &&
					strings.Contains(f.Message, `ip rule "5270: from all lookup 52" comes before wgmesh's rule (priority 5787, lookup 87)`) &&
					strings.Contains(f.Message, "in table 52") && strings.Contains(f.Fix, "ip rule 5270 and table 52")
			}) {
				t.Errorf("no RouteCaptured error for %s naming rule 5270 and table 52", dst)
			}
		}
		if slices.ContainsFunc(findings, func(f doctor.Finding) bool { return f.ID == "ShadowingRoute" }) {
			t.Errorf("ShadowingRoute reported for a route that wins (RouteCaptured says it)")
		}
	})

	t.Run("rule removed: no error, pods reach each other", func(t *testing.T) {
		mustRun(t, a.netns, "ip", "rule", "del", "pref", "5270")
		mustRun(t, a.netns, "ip", "-6", "rule", "del", "pref", "5270")
		noErrors(l.doctor(a, l.nodes))
	})

	t.Run("today's priority comes first: peer subnets stay in the tunnel, the way back to our pods does not", func(t *testing.T) {
		addRule()
		l.restart(a, 0)
		if ch := l.apply(a, l.nodes); ch.RulesChanged == 0 {
			t.Fatalf("rule not moved back to the default: %+v", ch)
		}
		rules := mustRun(t, a.netns, "ip", "rule") + mustRun(t, a.netns, "ip", "-6", "rule")
		if strings.Contains(rules, "5787:") || strings.Count(rules, "5187:\tfrom all lookup 87 proto 87") != 2 {
			t.Errorf("want our rule at 5187 only, both families:\n%s", rules)
		}
		// Table 52's /16 also covers node a's own pods, whose route is
		// main's (32766): replies from b's pods are lost in ts0. Doctor
		// says exactly that, and nothing about the peer subnets.
		findings := l.doctor(a, l.nodes)
		for _, dst := range []string{a.subnet.String(), a.subnet6.String()} {
			if !slices.ContainsFunc(findings, func(f doctor.Finding) bool {
				return f.ID == "RouteCaptured" && strings.Contains(f.Message, "packets to this node's pods ("+dst+") coming out of the tunnel") &&
					strings.Contains(f.Message, "leave through ts0, not cni0") && strings.Contains(f.Message, `ip rule "5270: from all lookup 52"`)
			}) {
				t.Errorf("no RouteCaptured error for the way back to %s", dst)
			}
		}
		if slices.ContainsFunc(findings, func(f doctor.Finding) bool {
			return strings.Contains(f.Message, "peer subnet(s)") && f.Severity == doctor.SeverityError
		}) {
			t.Errorf("an error about peer subnets: wgmesh's rule comes first now")
		}
		if v4, v6 := pings(); v4 == nil || v6 == nil {
			t.Errorf("ping a -> b works although the replies go to ts0 (v4 err %v, v6 err %v)", v4, v6)
		}
	})

	t.Run("today's priority comes first: a route over peer subnets only takes nothing", func(t *testing.T) {
		// A tailnet route to b's subnets only (say, another cluster with
		// the same CIDR): behind 5787 it took them, behind 5187 it does not.
		for _, cmd := range [][]string{
			{"ip", "route", "del", "10.42.0.0/16", "dev", "ts0", "table", "52"},
			{"ip", "-6", "route", "del", "fd42::/48", "dev", "ts0", "table", "52"},
			{"ip", "route", "add", b.subnet.String(), "dev", "ts0", "table", "52"},
			{"ip", "-6", "route", "add", b.subnet6.String(), "dev", "ts0", "table", "52"},
		} {
			mustRun(t, a.netns, cmd[0], cmd[1:]...)
		}
		findings := l.doctor(a, l.nodes)
		for _, f := range findings {
			if f.Severity == doctor.SeverityError {
				t.Errorf("error: %s", f)
			}
		}
		if !slices.ContainsFunc(findings, func(f doctor.Finding) bool {
			return f.ID == "ShadowingRoute" && strings.Contains(f.Message, b.subnet.String()+" dev ts0 table 52") &&
				strings.Contains(f.Message, "the kernel's own route lookups go to "+a.dev+" today")
		}) {
			t.Errorf("no ShadowingRoute warning for table 52's route")
		}
		if v4, v6 := pings(); v4 != nil || v6 != nil {
			t.Errorf("ping a -> b: %v; ping6: %v", v4, v6)
		}
	})
}
