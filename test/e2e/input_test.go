//go:build e2e

package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// A node whose host firewall drops what it does not know (INPUT policy
// DROP; the guide's UDP 51820 and the node's own replies allowed, as ufw
// and firewalld do): pods still reach every other pod, but not their own
// node. `wgmesh-agent doctor` reports InputDropsPods with a command; after
// running exactly that command, the pod reaches its node and doctor exits 0.
func TestDoctorReportsAnInputFirewallDroppingPodsAndItsFixWorks(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()
	n := c.Nodes()[0]
	pod := c.podsOn(n.Name)[0]
	ipt := func(ctx context.Context, args ...string) error {
		_, err := n.Run(ctx, append([]string{"iptables", "-w"}, args...)...)
		return err
	}
	// The test's rules live in a chain of its own, so cleanup removes
	// exactly them, and the fix doctor prints, whatever happened.
	t.Cleanup(func() {
		bg := context.Background()
		_ = ipt(bg, "-P", "INPUT", "ACCEPT")
		_ = ipt(bg, "-D", "INPUT", "-j", "E2E-HOSTFW")
		_ = ipt(bg, "-F", "E2E-HOSTFW")
		_ = ipt(bg, "-X", "E2E-HOSTFW")
		_ = ipt(bg, "-D", "INPUT", "-s", lab.ClusterCIDR, "-j", "ACCEPT")
	})
	for _, r := range [][]string{
		{"-N", "E2E-HOSTFW"},
		{"-A", "E2E-HOSTFW", "-i", "lo", "-j", "ACCEPT"},
		{"-A", "E2E-HOSTFW", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-A", "E2E-HOSTFW", "-p", "udp", "-m", "udp", "--dport", "51820", "-j", "ACCEPT"},
		{"-A", "INPUT", "-j", "E2E-HOSTFW"},
		{"-P", "INPUT", "DROP"},
	} {
		if err := ipt(ctx, r...); err != nil {
			t.Fatal(err)
		}
	}
	if err := pod.Ping(ctx, n.Addr, 1); err == nil {
		t.Fatalf("%s still reaches its node %s through INPUT policy DROP: the setup does not show the problem", pod.Name, n.Addr)
	}
	requireMatrix(t, ctx, c, c.pods) // the mesh itself is not affected

	out, err := n.Run(ctx, c.AgentCommand(n, "doctor")...)
	t.Logf("wgmesh-agent doctor with INPUT policy DROP (err=%v):\n%s", err, out)
	if !strings.Contains(out, "InputDropsPods") || !strings.Contains(out, `stopped by "policy DROP of INPUT"`) {
		t.Errorf("doctor does not report InputDropsPods by the INPUT policy")
	}
	fix := regexp.MustCompile(`iptables -I INPUT -s \S+ -j ACCEPT`).FindString(out)
	if fix == "" {
		t.Fatal("doctor gives no 'iptables -I INPUT -s ... -j ACCEPT' fix")
	}
	if _, err := n.Run(ctx, strings.Fields(fix)...); err != nil {
		t.Fatalf("doctor's fix %q: %v", fix, err)
	}
	out, err = n.Run(ctx, c.AgentCommand(n, "doctor")...)
	t.Logf("wgmesh-agent doctor after the fix (err=%v):\n%s", err, out)
	if strings.Contains(out, "InputDropsPods") {
		t.Error("doctor still reports InputDropsPods after its fix")
	}
	if err != nil {
		t.Errorf("doctor fails after the fix: %v", err)
	}
	if err := pod.Ping(ctx, n.Addr, 1); err != nil {
		t.Errorf("%s does not reach its node %s after the fix: %v", pod.Name, n.Addr, err)
	}
}
