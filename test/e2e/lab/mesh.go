package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WGPeer is one line of `wg show <dev> dump` for a peer.
type WGPeer struct {
	PublicKey       string
	Endpoint        string
	AllowedIPs      []netip.Prefix
	LatestHandshake time.Time
}

// WGPeers reads the node's WireGuard peers with the real `wg` tool.
func (n *Node) WGPeers(ctx context.Context) ([]WGPeer, error) {
	out, err := n.Run(ctx, "wg", "show", AgentInterface, "dump")
	if err != nil {
		return nil, err
	}
	var peers []WGPeer
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if i == 0 {
			continue // the interface line
		}
		f := strings.Split(line, "\t")
		if len(f) < 8 {
			continue
		}
		p := WGPeer{PublicKey: f[0], Endpoint: f[2]}
		if f[3] != "(none)" {
			for _, s := range strings.Split(f[3], ",") {
				if pr, err := netip.ParsePrefix(s); err == nil {
					p.AllowedIPs = append(p.AllowedIPs, pr)
				}
			}
		}
		if ts, _ := strconv.ParseInt(f[4], 10, 64); ts > 0 {
			p.LatestHandshake = time.Unix(ts, 0)
		}
		peers = append(peers, p)
	}
	return peers, nil
}

// Route is a route of the node's main table, from `ip -j route`.
type Route struct {
	Dst      string `json:"dst"`
	Dev      string `json:"dev"`
	Protocol string `json:"protocol"`
	PrefSrc  string `json:"prefsrc"`
	Gateway  string `json:"gateway"`
	Table    string `json:"table"` // empty for main
	Type     string `json:"type"`  // empty for unicast
}

// Prefix is the route's destination (default = 0.0.0.0/0).
func (r Route) Prefix() (netip.Prefix, bool) {
	if r.Dst == "default" {
		return netip.MustParsePrefix("0.0.0.0/0"), true
	}
	if p, err := netip.ParsePrefix(r.Dst); err == nil {
		return p, true
	}
	if a, err := netip.ParseAddr(r.Dst); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

// Routes lists the node's IPv4 routes of every table.
func (n *Node) Routes(ctx context.Context) ([]Route, error) {
	out, err := n.Run(ctx, "ip", "-4", "-j", "route", "show", "table", "all")
	if err != nil {
		return nil, err
	}
	var rs []Route
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		return nil, fmt.Errorf("parse ip -j route: %w", err)
	}
	return rs, nil
}

// PodCIDR is the node's spec.podCIDR (empty when none).
func (l *Lab) PodCIDR(ctx context.Context, name string) (netip.Prefix, error) {
	node, err := l.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return netip.Prefix{}, err
	}
	if node.Spec.PodCIDR == "" {
		return netip.Prefix{}, nil
	}
	return netip.ParsePrefix(node.Spec.PodCIDR)
}

// WaitMesh waits until every node's device has exactly one peer per other
// node. It returns the last observed problem on timeout.
func (l *Lab) WaitMesh(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := l.meshComplete(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("lab: mesh incomplete after %s: %w", timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (l *Lab) meshComplete(ctx context.Context) error {
	nodes := l.Nodes()
	for _, n := range nodes {
		peers, err := n.WGPeers(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		if len(peers) != len(nodes)-1 {
			return fmt.Errorf("%s has %d peers, want %d", n.Name, len(peers), len(nodes)-1)
		}
		for _, p := range peers {
			if len(p.AllowedIPs) == 0 {
				return fmt.Errorf("%s: peer %s has no AllowedIPs yet", n.Name, p.PublicKey)
			}
		}
		if _, err := n.Run(ctx, "test", "-s", AgentSubnetFile); err != nil {
			return fmt.Errorf("%s: no %s yet", n.Name, AgentSubnetFile)
		}
	}
	return nil
}

// Reach is one cell of a reachability matrix.
type Reach struct {
	From, To *Pod
	ICMP     error
	TCP      error
}

// Matrix checks every pod against every other pod (ICMP and TCP), in parallel.
func (l *Lab) Matrix(ctx context.Context, pods []*Pod) []Reach {
	var out []Reach
	for _, a := range pods {
		for _, b := range pods {
			if a != b {
				out = append(out, Reach{From: a, To: b})
			}
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range out {
		wg.Add(1)
		go func(r *Reach) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r.ICMP = WaitReachable(ctx, func(ctx context.Context) error { return r.From.Ping(ctx, r.To.IP, 1) }, 5*time.Second)
			r.TCP = WaitReachable(ctx, func(ctx context.Context) error {
				return r.From.ProbeTCP(ctx, r.To.IP, "hello from "+r.From.Name)
			}, 5*time.Second)
		}(&out[i])
	}
	wg.Wait()
	return out
}

// FormatMatrix renders a matrix as a table: "ok" or "ICMP"/"TCP"/"--" for failures.
func FormatMatrix(pods []*Pod, cells []Reach) string {
	idx := map[[2]*Pod]Reach{}
	for _, c := range cells {
		idx[[2]*Pod{c.From, c.To}] = c
	}
	var b strings.Builder
	label := func(p *Pod) string { return fmt.Sprintf("%s/%s", p.Node.Name, p.Name) }
	w := 0
	for _, p := range pods {
		if len(label(p)) > w {
			w = len(label(p))
		}
	}
	fmt.Fprintf(&b, "%-*s  %-15s", w, "from \\ to", "")
	for _, p := range pods {
		fmt.Fprintf(&b, " %-8s", p.Name)
	}
	b.WriteString("\n")
	for _, a := range pods {
		fmt.Fprintf(&b, "%-*s  %-15s", w, label(a), a.IP)
		for _, z := range pods {
			cell := "-"
			if a != z {
				c := idx[[2]*Pod{a, z}]
				switch {
				case c.ICMP == nil && c.TCP == nil:
					cell = "ok"
				case c.ICMP != nil && c.TCP != nil:
					cell = "FAIL"
				case c.ICMP != nil:
					cell = "noICMP"
				default:
					cell = "noTCP"
				}
			}
			fmt.Fprintf(&b, " %-8s", cell)
		}
		b.WriteString("\n")
	}
	return b.String()
}
