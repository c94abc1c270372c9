//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// The shared cluster: kube-controller-manager allocates pod CIDRs, three
// nodes, two pods each. Scenarios that change it put it back.
var (
	sharedOnce sync.Once
	shared     *cluster
	sharedErr  error
)

type cluster struct {
	*lab.Lab
	pods []*lab.Pod
}

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		lab.Sweep(slog.Default())
	}
	code := m.Run()
	if shared != nil {
		shared.Down()
	}
	writeFigures()
	os.Exit(code)
}

// sharedCluster starts (once) the 3-node cluster with two pods per node.
func sharedCluster(t *testing.T) *cluster {
	t.Helper()
	testutil.RequireRoot(t)
	sharedOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		shared, sharedErr = startCluster(ctx, lab.Config{}, 3, 2)
	})
	if sharedErr != nil {
		t.Fatalf("shared cluster: %v", sharedErr)
	}
	return shared
}

// newCluster starts a cluster of its own for t, removed when t ends.
func newCluster(t *testing.T, cfg lab.Config, nodes, podsPer int) *cluster {
	t.Helper()
	testutil.RequireRoot(t)
	c, err := startCluster(t.Context(), cfg, nodes, podsPer)
	if c != nil {
		t.Cleanup(c.Down)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startCluster(ctx context.Context, cfg lab.Config, nodes, podsPer int) (*cluster, error) {
	dir, err := os.MkdirTemp("", "wgmesh-lab-e2e-")
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	l, err := lab.Start(ctx, cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c := &cluster{Lab: l}
	for i := 1; i <= nodes; i++ {
		if _, err := l.AddNode(ctx, fmt.Sprintf("node%d", i)); err != nil {
			return c, err
		}
	}
	if err := l.WaitMesh(ctx, 90*time.Second); err != nil {
		return c, fmt.Errorf("%w\n%s", err, c.agentLogs())
	}
	for _, n := range l.Nodes() {
		for j := 0; j < podsPer; j++ {
			p, err := l.AddPod(ctx, n, fmt.Sprintf("%s-%c", n.Name, 'a'+j))
			if err != nil {
				return c, err
			}
			c.pods = append(c.pods, p)
		}
	}
	return c, nil
}

// agentLogs is the tail of every agent's log, for failure messages.
func (c *cluster) agentLogs() string {
	s := ""
	for _, n := range c.Nodes() {
		if n.Agent == nil {
			continue
		}
		b, _ := os.ReadFile(n.Agent.Log)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		s += fmt.Sprintf("--- %s agent log (tail)\n%s\n", n.Name, b)
	}
	return s
}

// meshDump is what each node's kernel has of the mesh now (peers with their
// handshakes, wgmesh's routes), for failure messages.
func (c *cluster) meshDump(ctx context.Context) string {
	s := ""
	for _, n := range c.Nodes() {
		wg, err := n.Run(ctx, "wg", "show", lab.AgentInterface)
		if err != nil {
			wg += err.Error()
		}
		routes, err := n.Run(ctx, "ip", "route", "show", "table", "all", "proto", "87")
		if err != nil {
			routes += err.Error()
		}
		s += fmt.Sprintf("--- %s: wg show\n%s\n--- %s: wgmesh routes\n%s\n", n.Name, wg, n.Name, routes)
		// What a one-way loss on the underlay would show: neighbours, UDP
		// socket errors, and which rules packets hit.
		for _, cmd := range [][]string{
			{"ip", "-br", "addr"}, {"ip", "neigh"}, {"ss", "-uanp"},
			{"nstat", "-az", "Udp*", "Ip*Discards", "IpInAddrErrors", "IpInHdrErrors"},
			{"iptables-save", "-c"},
			// wireguard-go's own account of its handshakes (lab agents
			// run it with debug messages on).
			{"tail", "-c", "6000", deviceLog},
		} {
			out, err := n.Run(ctx, cmd...)
			if err != nil {
				out += err.Error()
			}
			s += fmt.Sprintf("--- %s: %s\n%s\n", n.Name, strings.Join(cmd, " "), out)
		}
	}
	return s
}

// podsOn returns the cluster's pods on node.
func (c *cluster) podsOn(node string) []*lab.Pod {
	var ps []*lab.Pod
	for _, p := range c.pods {
		if p.Node.Name == node {
			ps = append(ps, p)
		}
	}
	return ps
}

// requireMatrix fails t unless every pod reaches every other pod.
func requireMatrix(t *testing.T, ctx context.Context, c *cluster, pods []*lab.Pod) {
	t.Helper()
	cells := c.Matrix(ctx, pods)
	bad := 0
	for _, r := range cells {
		if r.ICMP != nil {
			bad++
			t.Errorf("ICMP %s/%s -> %s/%s (%s): %v", r.From.Node.Name, r.From.Name, r.To.Node.Name, r.To.Name, r.To.IP, r.ICMP)
		}
		if r.TCP != nil {
			bad++
			t.Errorf("TCP %s/%s -> %s/%s (%s): %v", r.From.Node.Name, r.From.Name, r.To.Node.Name, r.To.Name, r.To.IP, r.TCP)
		}
	}
	t.Logf("reachability (%d pairs):\n%s", len(cells), lab.FormatMatrix(pods, cells))
	if bad > 0 {
		t.Log(c.meshDump(ctx))
		t.Log(c.agentLogs())
	}
}
