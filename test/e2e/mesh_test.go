//go:build e2e

package e2e

import (
	"context"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// nodeFacts is what the API says about one node.
type nodeFacts struct {
	PodCIDR   netip.Prefix
	PublicKey string
}

func apiNodes(t *testing.T, ctx context.Context, c *cluster) map[string]nodeFacts {
	t.Helper()
	list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]nodeFacts{}
	for _, n := range list.Items {
		f := nodeFacts{PublicKey: n.Annotations[mesh.AnnotationPublicKey]}
		if n.Spec.PodCIDR != "" {
			f.PodCIDR = netip.MustParsePrefix(n.Spec.PodCIDR)
		}
		out[n.Name] = f
	}
	return out
}

func TestEveryPodReachesEveryPodOnEveryNode(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()
	requireMatrix(t, ctx, c, c.pods)

	// A node (not a pod) reaches pods on other nodes: the peer route's src
	// is the node's cni0 gateway, so the reply comes back through the tunnel.
	for _, n := range c.Nodes() {
		for _, p := range c.pods {
			if p.Node == n {
				continue
			}
			err := lab.WaitReachable(ctx, func(ctx context.Context) error {
				_, err := n.Run(ctx, "ping", "-q", "-n", "-c", "1", "-W", "1", p.IP.String())
				return err
			}, 5*time.Second)
			if err != nil {
				t.Errorf("node %s -> pod %s/%s (%s): %v", n.Name, p.Node.Name, p.Name, p.IP, err)
			}
		}
	}
}

func TestEachNodeHasOnePeerPerOtherNodeWithExactlyItsPodCIDR(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()
	facts := apiNodes(t, ctx, c)
	for _, n := range c.Nodes() {
		peers, err := n.WGPeers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		byKey := map[string]lab.WGPeer{}
		for _, p := range peers {
			byKey[p.PublicKey] = p
		}
		if len(peers) != len(c.Nodes())-1 {
			t.Errorf("%s: %d peers, want %d (one per other node): %+v", n.Name, len(peers), len(c.Nodes())-1, peers)
		}
		for _, o := range c.Nodes() {
			if o == n {
				continue
			}
			f := facts[o.Name]
			p, ok := byKey[f.PublicKey]
			if !ok {
				t.Errorf("%s: no peer for %s (key %s)", n.Name, o.Name, f.PublicKey)
				continue
			}
			if len(p.AllowedIPs) != 1 || p.AllowedIPs[0] != f.PodCIDR {
				t.Errorf("%s: peer %s AllowedIPs = %v, want exactly [%s]", n.Name, o.Name, p.AllowedIPs, f.PodCIDR)
			}
			if want := netip.AddrPortFrom(o.Addr, lab.ListenPort).String(); p.Endpoint != want {
				t.Errorf("%s: peer %s endpoint = %s, want %s", n.Name, o.Name, p.Endpoint, want)
			}
		}

		// No route on the node, in any table, overlaps another node's pod
		// subnet except wgmesh's own exact one (dev wgmesh0, src = own gateway).
		gw := facts[n.Name].PodCIDR.Addr().Next()
		routes, err := n.Routes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range c.Nodes() {
			if o == n {
				continue
			}
			other := facts[o.Name].PodCIDR
			exact := 0
			for _, r := range routes {
				dst, ok := r.Prefix()
				if !ok || dst.Bits() == 0 || !dst.Overlaps(other) {
					continue
				}
				if dst == other && r.Dev == lab.AgentInterface && r.Type == "" {
					exact++
					if r.PrefSrc != gw.String() {
						t.Errorf("%s: route %s dev %s has src %q, want own cni0 gateway %s", n.Name, dst, r.Dev, r.PrefSrc, gw)
					}
					continue
				}
				t.Errorf("%s: route %s dev %s (table %q, proto %s) overlaps %s's pod subnet %s", n.Name, r.Dst, r.Dev, r.Table, r.Protocol, o.Name, other)
			}
			if exact != 1 {
				t.Errorf("%s: %d wgmesh routes to %s's pod subnet %s, want 1", n.Name, exact, o.Name, other)
			}
		}
	}
}
