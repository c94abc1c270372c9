package main

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/internal/dataplane"
	"github.com/wgmesh/wgmesh/internal/mesh"
)

// statusView is what `wgmesh-agent status` prints: the device as read, and
// (when the API answered) the nodes, so peers get names.
type statusView struct {
	Status dataplane.Status
	// Nodes from the API; nil when it was not reachable.
	Nodes []mesh.Node
	// APIError says why Nodes is nil.
	APIError error
	// Problems of the desired state computed from Nodes.
	Problems []mesh.Problem
	Now      time.Time
}

// writeStatus prints v like `wg show`, with node names, pod subnets,
// handshake age and the state of each peer's routes.
func writeStatus(w io.Writer, v statusView) {
	st := v.Status
	byKey := map[string]mesh.Node{}
	for _, n := range v.Nodes {
		if n.PublicKey != "" {
			byKey[n.PublicKey] = n
		}
	}
	routes := map[netip.Prefix]mesh.Route{}
	for _, r := range st.Routes {
		routes[r.Dst] = r
	}

	fmt.Fprintf(w, "interface: %s", st.Device)
	if st.Mode != "" {
		fmt.Fprintf(w, " (%s)", st.Mode)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  public key: %s\n", st.PublicKey)
	fmt.Fprintf(w, "  listening port: %d\n", st.ListenPort)
	fmt.Fprintf(w, "  mtu: %d\n", st.MTU)
	fmt.Fprintf(w, "  routes: table %d, rule priority %d\n", st.RouteTable, st.RulePriority)
	if v.Nodes == nil {
		fmt.Fprintf(w, "  nodes: unknown, the API is not reachable (%v); peers are shown by public key\n", v.APIError)
	}

	peers := slices.Clone(st.Peers)
	name := func(p dataplane.PeerStatus) string {
		if n, ok := byKey[p.PublicKey]; ok {
			return n.Name
		}
		return cmp.Or(p.Node, "")
	}
	// Named peers by name, then the unnamed (stale) ones.
	slices.SortFunc(peers, func(a, b dataplane.PeerStatus) int {
		na, nb := name(a), name(b)
		unnamed := func(s string) int {
			if s == "" {
				return 1
			}
			return 0
		}
		return cmp.Or(cmp.Compare(unnamed(na), unnamed(nb)), cmp.Compare(na, nb), cmp.Compare(a.PublicKey, b.PublicKey))
	})
	seen := map[netip.Prefix]bool{}
	for _, p := range peers {
		fmt.Fprintln(w)
		switch n := name(p); {
		case n != "":
			fmt.Fprintf(w, "peer: %s\n", n)
		case v.Nodes != nil:
			fmt.Fprintf(w, "peer: (no node has this key: stale, the agent removes it)\n")
		default:
			fmt.Fprintf(w, "peer: (node unknown)\n")
		}
		fmt.Fprintf(w, "  public key: %s\n", p.PublicKey)
		if p.Endpoint.IsValid() {
			fmt.Fprintf(w, "  endpoint: %s\n", p.Endpoint)
		} else {
			fmt.Fprintf(w, "  endpoint: (none yet: waits for the peer's handshake)\n")
		}
		if n, ok := byKey[p.PublicKey]; ok {
			fmt.Fprintf(w, "  pod subnets: %s\n", joinPrefixes(n.PodCIDRs))
		}
		fmt.Fprintf(w, "  allowed ips: %s\n", joinPrefixes(p.AllowedIPs))
		if p.LastHandshake.IsZero() {
			fmt.Fprintf(w, "  latest handshake: never\n")
		} else {
			fmt.Fprintf(w, "  latest handshake: %s ago\n", v.Now.Sub(p.LastHandshake).Round(time.Second))
		}
		fmt.Fprintf(w, "  transfer: %s received, %s sent\n", bytesString(p.RxBytes), bytesString(p.TxBytes))
		if p.Keepalive > 0 {
			fmt.Fprintf(w, "  persistent keepalive: every %s\n", p.Keepalive)
		}
		for _, a := range p.AllowedIPs {
			seen[a] = true
			if r, ok := routes[a]; ok {
				fmt.Fprintf(w, "  route: %s dev %s src %s table %d: ok\n", a, st.Device, r.Src, st.RouteTable)
			} else {
				fmt.Fprintf(w, "  route: %s: MISSING (the agent adds it on its next reconcile; see `wgmesh-agent doctor`)\n", a)
			}
		}
	}
	var stray []string
	for _, r := range st.Routes {
		if !seen[r.Dst] {
			stray = append(stray, r.Dst.String())
		}
	}
	if len(stray) > 0 {
		fmt.Fprintf(w, "\nroutes without a peer (removed on the next reconcile): %s\n", strings.Join(stray, ", "))
	}
	if len(v.Problems) > 0 {
		fmt.Fprintf(w, "\nnodes not (fully) in the mesh:\n")
		for _, pr := range v.Problems {
			fmt.Fprintf(w, "  %s: %s: %s\n", pr.Node, pr.Reason, pr.Message)
		}
	}
}

func joinPrefixes(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "(none)"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), -1
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.2f %ciB", f, "KMGTP"[i])
}
