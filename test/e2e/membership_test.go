//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

func TestNodeJoinConvergesAndNodeDeleteRemovesPeerAndRoutes(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()

	start := time.Now()
	n4, err := c.AddNode(ctx, "node4")
	if err != nil {
		t.Fatal(err)
	}
	removed := false
	t.Cleanup(func() {
		if !removed {
			_ = c.RemoveNode(context.Background(), n4)
		}
	})
	if err := c.WaitAgentReady(ctx, n4, 60*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, c.agentLogs())
	}
	pod4, err := c.AddPod(ctx, n4, "node4-a")
	if err != nil {
		t.Fatal(err)
	}

	// Converged: every other node has a handshake with node4 and a pod of
	// every node reaches node4's pod.
	var key4 string
	var cidr4 string
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := func() error {
			n, err := c.Client.CoreV1().Nodes().Get(ctx, "node4", metav1.GetOptions{})
			if err != nil {
				return err
			}
			key4, cidr4 = n.Annotations[mesh.AnnotationPublicKey], n.Spec.PodCIDR
			if key4 == "" || cidr4 == "" {
				return fmt.Errorf("node4 has key %q podCIDR %q", key4, cidr4)
			}
			for _, o := range c.Nodes() {
				if o == n4 {
					continue
				}
				if err := c.podsOn(o.Name)[0].Ping(ctx, pod4.IP, 1); err != nil {
					return fmt.Errorf("%s -> node4 pod: %w", o.Name, err)
				}
				peers, err := o.WGPeers(ctx)
				if err != nil {
					return err
				}
				hs := false
				for _, p := range peers {
					if p.PublicKey == key4 && !p.LatestHandshake.IsZero() {
						hs = true
					}
				}
				if !hs {
					return fmt.Errorf("%s has no handshake with node4", o.Name)
				}
			}
			return nil
		}()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node4 did not converge in 60s: %v\n%s", err, c.agentLogs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	join := time.Since(start)
	figure(t, "join convergence: %s from node4's namespaces+Node object+agent start until every node had a handshake with it and pods on every node reached its pod", join.Round(10*time.Millisecond))
	requireMatrix(t, ctx, c, append(append([]*lab.Pod(nil), c.pods...), pod4))

	// Delete: node4's Node object goes, its peer and routes disappear everywhere.
	start = time.Now()
	if err := c.RemoveNode(ctx, n4); err != nil {
		t.Fatal(err)
	}
	removed = true
	deadline = time.Now().Add(30 * time.Second)
	for {
		left := []string{}
		for _, o := range c.Nodes() {
			peers, err := o.WGPeers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range peers {
				if p.PublicKey == key4 {
					left = append(left, o.Name+": peer "+key4)
				}
			}
			out, err := o.Run(ctx, "ip", "-4", "route", "show", "table", "all")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out, cidr4+" ") {
				left = append(left, o.Name+": route to "+cidr4)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after node4 was deleted: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	figure(t, "delete convergence: %s until no node had node4's peer or route", time.Since(start).Round(10*time.Millisecond))
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// kernelSnapshot is what the agent programs on a node, without counters.
// podVeth matches the host-side veth of a pod ("wgm" + 12 hex digits, named
// by the CNI plugin). The agent never touches these links, but the kernel
// itself adds their IPv6 link-local addresses and local routes seconds after
// a pod starts; those events are not the agent's doing, so the restart
// scenario leaves them out of what it counts as a change.
var podVeth = regexp.MustCompile(`\bwgm[0-9a-f]{12}\b`)

func kernelSnapshot(t *testing.T, ctx context.Context, n *lab.Node) string {
	t.Helper()
	var b strings.Builder
	for _, argv := range [][]string{
		{"ip", "-d", "link", "show", lab.AgentInterface},
		{"ip", "addr", "show", lab.AgentBridge},
		{"ip", "rule"},
		{"ip", "route", "show", "table", "all"},
		{"iptables-save"},
	} {
		out, err := n.Run(ctx, argv...)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "#") || podVeth.MatchString(line) { // iptables-save's timestamps; pod veths
				continue
			}
			if argv[0] == "iptables-save" {
				line = regexp.MustCompile(`\[\d+:\d+\]`).ReplaceAllString(line, "")
			}
			b.WriteString(line + "\n")
		}
	}
	dump, err := n.Run(ctx, "wg", "show", lab.AgentInterface, "dump")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(dump), "\n")
	for i, line := range lines {
		f := strings.Split(line, "\t")
		if len(f) >= 8 { // peer: key, psk, endpoint, allowed-ips, [handshake, rx, tx], keepalive
			f[4], f[5], f[6] = "", "", ""
		}
		lines[i] = strings.Join(f, "\t")
	}
	// The interface line first, then the peers by key: wireguard-go lists
	// its peers in map order, which differs from one dump to the next.
	if len(lines) > 1 {
		slices.Sort(lines[1:])
	}
	b.WriteString(strings.Join(lines, "\n") + "\n")
	return b.String()
}

func TestAgentRestartLosesNoPacketsAndChangesNothing(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()
	nodes := c.Nodes()
	target := nodes[1]
	from := c.podsOn(nodes[0].Name)[0]
	to := c.podsOn(target.Name)[0]
	if err := lab.WaitReachable(ctx, func(ctx context.Context) error { return from.Ping(ctx, to.IP, 1) }, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	before := kernelSnapshot(t, ctx, target)

	// Every netlink change on the node while the agent restarts.
	mon := target.Command(ctx, "ip", "-o", "monitor", "link", "address", "route", "rule")
	var monOut strings.Builder
	mon.Stdout = &monOut
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	// A count (8 s of pings), bounded by -w: with a bare deadline ping stops
	// mid-flight and counts the echo it had just sent as lost.
	ping := from.Node.Command(ctx, "ip", "netns", "exec", from.NetNS, "ping", "-n", "-q", "-i", "0.01", "-c", "800", "-w", "30", "-W", "1", to.IP.String())
	var pingOut strings.Builder
	ping.Stdout, ping.Stderr = &pingOut, &pingOut
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1 * time.Second)
	restart := time.Now()
	if err := c.StartAgent(ctx, target); err != nil { // SIGTERM the running agent, start a new one
		t.Fatal(err)
	}
	if err := c.WaitAgentReady(ctx, target, 20*time.Second); err != nil {
		t.Fatalf("restarted agent not ready: %v\n%s", err, c.agentLogs())
	}
	t.Logf("agent on %s restarted and ready in %s", target.Name, time.Since(restart).Round(time.Millisecond))
	_ = ping.Wait()
	time.Sleep(500 * time.Millisecond)
	_ = mon.Process.Kill()
	_ = mon.Wait()
	after := kernelSnapshot(t, ctx, target)

	m := pingSummary.FindStringSubmatch(pingOut.String())
	if m == nil {
		t.Fatalf("no ping summary in:\n%s", pingOut.String())
	}
	sent, _ := strconv.Atoi(m[1])
	recv, _ := strconv.Atoi(m[2])
	var changes []string
	for _, l := range strings.Split(strings.TrimSpace(monOut.String()), "\n") {
		if l != "" && !podVeth.MatchString(l) {
			changes = append(changes, l)
		}
	}
	figure(t, "agent restart: %d of %d pings lost (10 ms interval, %s -> %s across %s); %d kernel changes (ip monitor link/address/route/rule)",
		sent-recv, sent, from.Name, to.Name, target.Name, len(changes))
	if sent-recv != 0 {
		t.Errorf("%d packets lost during the agent restart", sent-recv)
	}
	if len(changes) != 0 {
		t.Errorf("the restart changed the kernel:\n%s", strings.Join(changes, "\n"))
	}
	if before != after {
		t.Errorf("kernel state differs after the restart:\n%s\n--- before\n%s\n--- after\n%s", lineDiff(before, after), before, after)
	}
}

// lineDiff lists the lines only one of a and b has, "-" for a and "+" for b.
func lineDiff(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if count[l] > 0 {
			out = append(out, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if count[l] < 0 {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}
