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
// lab node: another tool's ip rule at priority 5270 (Tailscale's range)
// looks up a table that routes the whole cluster CIDR into its own device.
// Pods on that node lose every packet to other nodes, IPv4 and IPv6, and
// doctor must say so (an error naming the rule and the table), not that
// wgmesh's table wins. Without the rule, doctor finds no error and pods
// reach each other again.
func TestDoctorFindsPodTrafficCapturedByAnotherRule(t *testing.T) {
	testutil.RequireRoot(t)
	l := newLabStack(t, 2, true)
	a, b := l.nodes[0], l.nodes[1]
	for _, nd := range l.nodes {
		l.apply(nd, l.nodes)
	}
	if err := l.ping(a, b); err != nil {
		t.Fatalf("ping before the rule: %v", err)
	}

	// The other tool's device: a TUN nobody reads, so what it routes
	// there is lost (the lab kernel has no dummy links).
	mustRun(t, a.netns, "ip", "tuntap", "add", "ts0", "mode", "tun")
	t.Cleanup(func() { testns.Run(a.netns, "ip", "link", "del", "ts0") })
	for _, cmd := range [][]string{
		{"ip", "link", "set", "ts0", "up"},
		{"ip", "route", "add", "10.42.0.0/16", "dev", "ts0", "table", "52"},
		{"ip", "-6", "route", "add", "fd42::/48", "dev", "ts0", "table", "52"},
		{"ip", "rule", "add", "pref", "5270", "lookup", "52"},
		{"ip", "-6", "rule", "add", "pref", "5270", "lookup", "52"},
	} {
		mustRun(t, a.netns, cmd[0], cmd[1:]...)
	}
	t.Logf("node a's rules:\n%s%s", mustRun(t, a.netns, "ip", "rule"), mustRun(t, a.netns, "ip", "-6", "rule"))

	if err := l.ping(a, b); err == nil {
		t.Errorf("ping a -> b succeeds with the capturing rule in place: the test does not reproduce the issue")
	}
	if err := l.ping6(a, b); err == nil {
		t.Errorf("ping6 a -> b succeeds with the capturing rule in place")
	}
	findings := l.doctor(a, l.nodes)
	for _, dst := range []string{b.subnet.String(), b.subnet6.String()} {
		found := slices.ContainsFunc(findings, func(f doctor.Finding) bool {
			return f.ID == "RouteCaptured" && f.Severity == doctor.SeverityError &&
				strings.Contains(f.Message, "peer subnet(s) "+dst+" (node-1) from pods and from the node itself leave through ts0, not "+a.dev) &&
				strings.Contains(f.Message, `ip rule "5270: from all lookup 52" comes before wgmesh's rule`) &&
				strings.Contains(f.Message, "in table 52") &&
				strings.Contains(f.Fix, "ip rule 5270 and table 52")
		})
		if !found {
			t.Errorf("no RouteCaptured error for %s naming rule 5270 and table 52", dst)
		}
	}
	if slices.ContainsFunc(findings, func(f doctor.Finding) bool { return f.ID == "ShadowingRoute" }) {
		t.Errorf("ShadowingRoute reported for a route that wins (RouteCaptured says it)")
	}

	mustRun(t, a.netns, "ip", "rule", "del", "pref", "5270")
	mustRun(t, a.netns, "ip", "-6", "rule", "del", "pref", "5270")
	findings = l.doctor(a, l.nodes)
	for _, f := range findings {
		if f.Severity == doctor.SeverityError {
			t.Errorf("error without the rule: %s", f)
		}
	}
	// Its routes stay in table 52: reported, but as routes that do not win.
	if !slices.ContainsFunc(findings, func(f doctor.Finding) bool {
		return f.ID == "ShadowingRoute" && strings.Contains(f.Message, "10.42.0.0/16 dev ts0 table 52") &&
			strings.Contains(f.Message, "the kernel's own route lookups go to "+a.dev+" today")
	}) {
		t.Errorf("no ShadowingRoute warning for table 52's route once the rule is gone")
	}
	if err := l.ping(a, b); err != nil {
		t.Errorf("ping a -> b without the rule: %v", err)
	}
	if err := l.ping6(a, b); err != nil {
		t.Errorf("ping6 a -> b without the rule: %v", err)
	}
}
