//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/test/e2e/kubenode"
	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// ctEntry is one connection of /proc/net/nf_conntrack: the original and
// the reply direction's addresses.
type ctEntry struct {
	origSrc, origDst, replySrc, replyDst netip.Addr
	replySport                           string
}

// parseConntrack reads /proc/net/nf_conntrack lines ("ipv6 10 tcp 6 117
// TIME_WAIT src=... dst=... sport=... dport=... src=... dst=... sport=...
// dport=... [ASSURED] ..."); IPv6 addresses are written in full.
func parseConntrack(text string) []ctEntry {
	var out []ctEntry
	for _, line := range strings.Split(text, "\n") {
		var addrs []netip.Addr
		var sports []string
		for _, f := range strings.Fields(line) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			switch k {
			case "src", "dst":
				if a, err := netip.ParseAddr(v); err == nil {
					addrs = append(addrs, a)
				}
			case "sport":
				sports = append(sports, v)
			}
		}
		if len(addrs) == 4 && len(sports) == 2 {
			out = append(out, ctEntry{addrs[0], addrs[1], addrs[2], addrs[3], sports[1]})
		}
	}
	return out
}

// checkTunnelSources reads every node's conntrack table and requires each
// connection to a workload pod on another node whose source the node
// rewrote (kube-proxy's masquerade) to carry the node's tunnel address of
// that family, the network address of its pod subnet (design rule 7):
// the one source every peer's exact AllowedIPs accept, chosen on purpose
// rather than by the kernel's source selection. It returns how many such
// connections it saw per family, and how many of them had another source
// (each node's first three are reported as errors).
func (kc *kubeletCluster) checkTunnelSources(t *testing.T) (seen, wrong map[string]int) {
	t.Helper()
	ctx := t.Context()
	cluster := []netip.Prefix{netip.MustParsePrefix(lab.ClusterCIDR), netip.MustParsePrefix(lab.ClusterCIDR6)}
	inCluster := func(a netip.Addr) bool {
		return cluster[0].Contains(a) || (kc.DualStack && cluster[1].Contains(a))
	}
	seen, wrong = map[string]int{}, map[string]int{}
	for _, k := range kc.nodes {
		node, err := kc.Client.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var own []netip.Prefix
		tunnel := map[bool]netip.Addr{} // Is6 -> address
		for _, s := range node.Spec.PodCIDRs {
			p := netip.MustParsePrefix(s)
			own = append(own, p)
			if _, dup := tunnel[p.Addr().Is6()]; !dup {
				tunnel[p.Addr().Is6()] = p.Addr()
			}
		}
		mine := func(a netip.Addr) bool {
			for _, p := range own {
				if p.Contains(a) {
					return true
				}
			}
			return false
		}
		out, err := k.Run(ctx, "cat", "/proc/net/nf_conntrack")
		if err != nil {
			t.Fatalf("%s: read conntrack: %v", k.Name, err)
		}
		reported := 0
		for _, c := range parseConntrack(out) {
			remoteBackend := c.replySport == fmt.Sprint(kubenode.WorkloadHTTPPort) && inCluster(c.replySrc) && !mine(c.replySrc)
			if !remoteBackend || c.replyDst == c.origSrc {
				continue // not into the tunnel, or not masqueraded
			}
			fam := "IPv4"
			if c.replySrc.Is6() {
				fam = "IPv6"
			}
			seen[fam]++
			if want := tunnel[c.replySrc.Is6()]; c.replyDst != want {
				wrong[fam]++
				if reported++; reported > 3 {
					continue
				}
				t.Errorf("%s: %s -> %s, backend %s on another node, went into the tunnel from %s, want the tunnel address %s", k.Name, c.origSrc, c.origDst, c.replySrc, c.replyDst, want)
			}
		}
	}
	return seen, wrong
}

func TestParseConntrack(t *testing.T) {
	text := `ipv6     10 tcp      6 117 TIME_WAIT src=fd31:0000:0000:0000:0000:0000:0000:0011 dst=fd43:0000:0000:0000:0000:0000:0000:a1f4 sport=40000 dport=80 src=fd42:0000:0000:0002:0000:0000:0000:0002 dst=fd42:0000:0000:0000:0000:0000:0000:0000 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 29 SYN_SENT src=172.31.0.2 dst=172.31.0.11 sport=5555 dport=30080 [UNREPLIED] src=10.42.2.2 dst=172.31.0.11 sport=8080 dport=5555 mark=0 zone=0 use=2
ipv4     2 udp      17 10 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 mark=0 use=1
`
	got := parseConntrack(text)
	want := []ctEntry{
		{netip.MustParseAddr("fd31::11"), netip.MustParseAddr("fd43::a1f4"), netip.MustParseAddr("fd42:0:0:2::2"), netip.MustParseAddr("fd42::"), "8080"},
		{netip.MustParseAddr("172.31.0.2"), netip.MustParseAddr("172.31.0.11"), netip.MustParseAddr("10.42.2.2"), netip.MustParseAddr("172.31.0.11"), "8080"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries %v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}
