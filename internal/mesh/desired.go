package mesh

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DefaultListenPort is the WireGuard UDP port when none is configured.
const DefaultListenPort = 51820

// Problem reasons (Problem.Reason). Stable: used in Events, metric labels
// and doctor finding IDs.
const (
	ReasonMissingPublicKey   = "MissingPublicKey"
	ReasonInvalidPublicKey   = "InvalidPublicKey"
	ReasonDuplicatePublicKey = "DuplicatePublicKey"
	ReasonNoPodCIDR          = "NoPodCIDR"
	ReasonInvalidPodCIDR     = "InvalidPodCIDR"
	ReasonOverlappingPodCIDR = "OverlappingPodCIDR"
	ReasonInvalidEndpoint    = "InvalidEndpoint"
	ReasonEndpointInMesh     = "EndpointInMesh"
	ReasonInvalidKeepalive   = "InvalidKeepalive"
	ReasonNoGateway          = "NoGateway"
	// ReasonPodCIDROutsideCluster: a node's pod CIDR is not inside any
	// cluster CIDR (Options.ClusterCIDRs, the agent's --cluster-cidr).
	ReasonPodCIDROutsideCluster = "PodCIDROutsideCluster"
	// ReasonKeyAndEndpointChanged is a warning from KeyChanges, not from
	// Desired: a peer's key and endpoint changed in one update.
	ReasonKeyAndEndpointChanged = "KeyAndEndpointChanged"
)

// maxKeepalive is the largest keepalive WireGuard can carry (uint16 seconds).
const maxKeepalive = 65535 * time.Second

// Desired computes the mesh this node (self) must program, from every Node
// of the cluster (self may be among nodes; it is skipped by name). It is a
// pure function: the same input gives the same State, with the same order.
//
// A node becomes a peer only if it has a valid public key, pod CIDRs that
// overlap no other node's (nor ours), and a key no other node uses. Every
// node left out, and every value ignored, is explained by a Problem.
//
// A pod CIDR outside every cluster CIDR (opts.ClusterCIDRs) is a Problem
// but does not keep its node out: its AllowedIPs are exact, so programming
// it is safe, but the FORWARD and masquerade rules built from the cluster
// CIDR do not cover it, so its pods' traffic is not forwarded and
// masqueraded as the rest of the cluster's is.
func Desired(self Node, nodes []Node, opts Options) (State, []Problem) {
	if self.Name == "" {
		self.Name = opts.Self
	}
	listenPort := opts.ListenPort
	if listenPort == 0 {
		listenPort = DefaultListenPort
	}
	var problems []Problem
	report := func(node, reason, format string, args ...any) {
		problems = append(problems, Problem{Node: node, Reason: reason, Message: fmt.Sprintf(format, args...)})
	}

	selfCIDRs, bad := cleanPrefixes(self.PodCIDRs)
	selfCIDRs = dedupe(selfCIDRs) // keep spec order: the first of a family holds the gateway
	for _, p := range bad {
		report(self.Name, ReasonInvalidPodCIDR, "this node's pod CIDR %q is not a valid prefix", p)
	}
	for i, p := range selfCIDRs {
		if why, out := outsideCluster(p, opts.ClusterCIDRs); out {
			msg := "this node's pod CIDR %s %s: wgmesh's FORWARD and masquerade rules, built from the cluster CIDR, do not cover its pods (their traffic leaving the cluster is not masqueraded, and is dropped where the FORWARD policy is DROP)"
			first := !slices.ContainsFunc(selfCIDRs[:i], func(q netip.Prefix) bool { return q.Addr().Is6() == p.Addr().Is6() })
			if first && hasFamily(opts.ClusterCIDRs, p.Addr().Is6()) {
				msg += "; the agent writes no subnet.env with a subnet outside the cluster CIDR, so the CNI plugin has no subnet for new pods"
			}
			report(self.Name, ReasonPodCIDROutsideCluster, msg, p, why)
		}
	}
	if len(selfCIDRs) == 0 {
		report(self.Name, ReasonNoPodCIDR, "this node has no pod CIDR: pods cannot start and no peer route has a source address")
	}
	gateways := map[bool]netip.Addr{} // is IPv6 -> our cni0 gateway
	var tunnelAddrs []netip.Prefix
	for _, p := range selfCIDRs {
		if p.Bits() > p.Addr().BitLen()-2 {
			report(self.Name, ReasonInvalidPodCIDR, "this node's pod CIDR %s is too small for a gateway and pods", p)
			continue
		}
		if _, ok := gateways[p.Addr().Is6()]; !ok {
			gateways[p.Addr().Is6()] = Gateway(p)
			tunnelAddrs = append(tunnelAddrs, TunnelAddress(p))
		}
	}
	selfKeepalive, err := parseKeepalive(self.PersistentKeepalive)
	if err != nil {
		report(self.Name, ReasonInvalidKeepalive, "%s %q on this node: %v", AnnotationPersistentKeepalive, self.PersistentKeepalive, err)
	}
	selfKey, selfKeyErr := wgtypes.ParseKey(self.PublicKey)

	// Candidates: every other node, in name order, with its cleaned prefixes.
	type candidate struct {
		node     *Node
		prefixes []netip.Prefix // pod CIDRs + vouched extras, masked
		key      wgtypes.Key
		excluded bool
	}
	others := make([]candidate, 0, len(nodes))
	for i := range nodes {
		if nodes[i].Name == self.Name {
			continue
		}
		others = append(others, candidate{node: &nodes[i]})
	}
	slices.SortFunc(others, func(a, b candidate) int { return cmp.Compare(a.node.Name, b.node.Name) })

	for i := range others {
		c := &others[i]
		n := c.node
		pods, bad := cleanPrefixes(n.PodCIDRs)
		for _, p := range bad {
			report(n.Name, ReasonInvalidPodCIDR, "pod CIDR %q is not a valid prefix", p)
		}
		for _, p := range pods {
			if why, out := outsideCluster(p, opts.ClusterCIDRs); out {
				report(n.Name, ReasonPodCIDROutsideCluster, "pod CIDR %s %s: the node is still a peer (its AllowedIPs are exact), but wgmesh's masquerade rules, built from the cluster CIDR, treat its pods as outside the cluster: this node's pods reach them masqueraded, with a node address as source instead of their own", p, why)
			}
		}
		if len(pods) == 0 {
			report(n.Name, ReasonNoPodCIDR, "node has no pod CIDR yet; not a peer until the control plane assigns one")
			c.excluded = true
		}
		extra, _ := cleanPrefixes(opts.ExtraPrefixes[n.Name])
		c.prefixes = slices.Compact(slices.SortedFunc(slices.Values(append(pods, extra...)), comparePrefix))
		switch key, err := wgtypes.ParseKey(n.PublicKey); {
		case n.PublicKey == "":
			report(n.Name, ReasonMissingPublicKey, "node has no %s annotation yet (its agent has not started)", AnnotationPublicKey)
			c.excluded = true
		case err != nil:
			report(n.Name, ReasonInvalidPublicKey, "%s %q is not a WireGuard key: %v", AnnotationPublicKey, n.PublicKey, err)
			c.excluded = true
		case selfKeyErr == nil && key == selfKey:
			report(n.Name, ReasonDuplicatePublicKey, "node has the same public key as this node %s", self.Name)
			c.excluded = true
		default:
			c.key = key
		}
	}

	// Duplicate keys: every node sharing a key is left out, as a key
	// decides which peer a packet is accepted from.
	byKey := make(map[wgtypes.Key][]int, len(others))
	for i, c := range others {
		if c.node.PublicKey != "" && c.key != (wgtypes.Key{}) {
			byKey[c.key] = append(byKey[c.key], i)
		}
	}
	for _, idx := range byKey {
		if len(idx) < 2 {
			continue
		}
		names := make([]string, len(idx))
		for j, i := range idx {
			names[j] = others[i].node.Name
		}
		for _, i := range idx {
			others[i].excluded = true
			report(others[i].node.Name, ReasonDuplicatePublicKey, "public key is shared by nodes %s", strings.Join(names, ", "))
		}
	}

	// Overlaps: among all nodes that claim prefixes (peers or not) and self.
	// Neither side of an overlap is programmed (design rule 1 in docs/dataplane.md).
	owners := make([]ownedPrefix, 0, 2*len(others)+len(selfCIDRs))
	for _, p := range selfCIDRs {
		owners = append(owners, ownedPrefix{p, -1})
	}
	for i, c := range others {
		for _, p := range c.prefixes {
			owners = append(owners, ownedPrefix{p, i})
		}
	}
	name := func(owner int) string {
		if owner < 0 {
			return self.Name + " (this node)"
		}
		return others[owner].node.Name
	}
	for _, ov := range overlaps(owners) {
		for _, side := range [][2]ownedPrefix{{ov[0], ov[1]}, {ov[1], ov[0]}} {
			me, other := side[0], side[1]
			if me.owner < 0 {
				continue // self is never a peer; its side is reported below, in one problem
			}
			others[me.owner].excluded = true
			report(name(me.owner), ReasonOverlappingPodCIDR, "prefix %s overlaps %s of node %s; neither node is programmed", me.prefix, other.prefix, name(other.owner))
		}
	}

	// This node's side of its overlaps, so that `kubectl describe node` on
	// either side shows them. The sweep above pairs a nested prefix with
	// the outermost one only; this lists every overlapping pair.
	var selfOverlaps []string
	for _, c := range others {
		for _, mine := range selfCIDRs {
			for _, theirs := range c.prefixes {
				if mine.Overlaps(theirs) {
					selfOverlaps = append(selfOverlaps, fmt.Sprintf("%s overlaps %s of node %s", mine, theirs, c.node.Name))
				}
			}
		}
	}
	if len(selfOverlaps) > 0 {
		// Subnets from two allocators in one cluster (the controller
		// manager's spec.podCIDR and wgmesh's Leases) are the usual cause.
		report(self.Name, ReasonOverlappingPodCIDR, "this node's pod CIDR %s; those nodes are not peers of this one (are subnets allocated both by the controller manager and by wgmesh Leases?)", strings.Join(selfOverlaps, "; "))
	}

	// The outermost claimed prefixes, disjoint and sorted (owners is
	// sorted by overlaps): what the mesh routes into the tunnel.
	var routed []ownedPrefix
	for _, o := range owners {
		if len(routed) == 0 || !routed[len(routed)-1].prefix.Contains(o.prefix.Addr()) {
			routed = append(routed, o)
		}
	}
	// An endpoint inside a prefix the mesh routes into wgmesh0 would send
	// the tunnel's own UDP packets into the tunnel: a loop, not a path.
	inMesh := func(a netip.Addr) error {
		i, found := slices.BinarySearchFunc(routed, a, func(o ownedPrefix, a netip.Addr) int { return o.prefix.Addr().Compare(a) })
		if found {
			i++
		}
		if i > 0 && routed[i-1].prefix.Contains(a) {
			o := routed[i-1]
			return fmt.Errorf("%s is inside %s of node %s, which the mesh routes into the tunnel: WireGuard's own packets would loop", a, o.prefix, name(o.owner))
		}
		return nil
	}

	state := State{Subnets: selfCIDRs, TunnelAddrs: tunnelAddrs}
	missingGateway := map[bool]bool{}
	for _, c := range others {
		if c.excluded {
			continue
		}
		n := c.node
		peer := Peer{Node: n.Name, PublicKey: c.key, AllowedIPs: c.prefixes}

		peer.Endpoint = chooseEndpoint(n, listenPort, inMesh, report)

		ka, err := parseKeepalive(n.PersistentKeepalive)
		if err != nil {
			report(n.Name, ReasonInvalidKeepalive, "%s %q: %v", AnnotationPersistentKeepalive, n.PersistentKeepalive, err)
		}
		peer.PersistentKeepalive = minNonZero(ka, selfKeepalive)
		state.Peers = append(state.Peers, peer)

		for _, dst := range peer.AllowedIPs {
			gw, ok := gateways[dst.Addr().Is6()]
			if !ok {
				missingGateway[dst.Addr().Is6()] = true
				continue
			}
			state.Routes = append(state.Routes, Route{Node: n.Name, Dst: dst, Src: gw})
		}
	}
	for _, v6 := range []bool{false, true} {
		if missingGateway[v6] {
			fam := "IPv4"
			if v6 {
				fam = "IPv6"
			}
			report(self.Name, ReasonNoGateway, "this node has no %s pod CIDR, so no %s route to a peer subnet has a source address; those peers get no route", fam, fam)
		}
	}
	slices.SortFunc(state.Routes, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) })
	slices.SortFunc(problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.Reason, b.Reason), cmp.Compare(a.Message, b.Message))
	})
	problems = slices.Compact(problems)
	return state, problems
}

// Gateway is the cni0 address of a node subnet: its first address.
func Gateway(subnet netip.Prefix) netip.Addr { return subnet.Masked().Addr().Next() }

// TunnelAddress is the WireGuard device's address in a node subnet: its
// network address as a host prefix (what flannel gives its own devices).
// IPAM never hands it to a pod, the gateway is the next one, and a /32 or
// /128 adds no route: the subnet stays routed to the bridge.
func TunnelAddress(subnet netip.Prefix) netip.Prefix {
	a := subnet.Masked().Addr()
	return netip.PrefixFrom(a, a.BitLen())
}

// chooseEndpoint returns the endpoint of n: the force-endpoint a person set,
// else the one its agent published. An invalid force-endpoint, or one that
// inMesh refuses, is reported and the published one is used instead; with
// neither, the peer has no endpoint until it makes a handshake itself.
func chooseEndpoint(n *Node, listenPort int, inMesh func(netip.Addr) error, report func(node, reason, format string, args ...any)) netip.AddrPort {
	for _, c := range []struct{ annotation, value string }{
		{AnnotationForceEndpoint, n.ForceEndpoint},
		{AnnotationEndpoint, n.Endpoint},
	} {
		if c.value == "" {
			continue
		}
		ep, err := ParseEndpoint(c.value, listenPort)
		if err != nil {
			report(n.Name, ReasonInvalidEndpoint, "%s %q: %v", c.annotation, c.value, err)
			continue
		}
		if err := inMesh(ep.Addr()); err != nil {
			report(n.Name, ReasonEndpointInMesh, "%s %q: %v", c.annotation, c.value, err)
			continue
		}
		return ep
	}
	return netip.AddrPort{}
}

// ParseEndpoint parses "ip:port", "[ipv6]:port", or a bare IP (port
// defaults to defaultPort). Hostnames are refused: the agent resolves
// nothing, so that what is programmed is what the annotation says.
func ParseEndpoint(s string, defaultPort int) (netip.AddrPort, error) {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return netip.AddrPort{}, fmt.Errorf("port 0 is not a valid WireGuard port")
		}
		if ap.Addr().Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("an IPv6 zone is not allowed in an endpoint")
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	bare := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	addr, err := netip.ParseAddr(bare)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("want IP:port or IP (hostnames are not resolved)")
	}
	if addr.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("an IPv6 zone is not allowed in an endpoint")
	}
	if defaultPort <= 0 || defaultPort > 65535 {
		return netip.AddrPort{}, fmt.Errorf("no port given and default port %d is invalid", defaultPort)
	}
	return netip.AddrPortFrom(addr.Unmap(), uint16(defaultPort)), nil
}

// ParseKeepalive parses a persistent-keepalive annotation: whole seconds
// ("25") or a Go duration ("25s"). Empty means none (0). WireGuard keeps
// whole seconds up to 65535.
func ParseKeepalive(s string) (time.Duration, error) { return parseKeepalive(s) }

func parseKeepalive(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	var d time.Duration
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else {
		d, err = time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("want seconds (25) or a duration (25s)")
		}
	}
	if d < 0 || d > maxKeepalive {
		return 0, fmt.Errorf("must be between 0 and %s", maxKeepalive)
	}
	if d%time.Second != 0 {
		return 0, fmt.Errorf("must be whole seconds")
	}
	return d, nil
}

// minNonZero is the shorter of two keepalives, ignoring "none": the tighter
// NAT mapping timeout decides.
func minNonZero(a, b time.Duration) time.Duration {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}

// outsideCluster reports whether p lies outside every cluster CIDR, and
// says how ("is outside the cluster CIDR 10.42.0.0/16 (--cluster-cidr)").
// With no cluster CIDRs at all nothing is outside: the caller did not say.
func outsideCluster(p netip.Prefix, clusters []netip.Prefix) (string, bool) {
	if len(clusters) == 0 {
		return "", false
	}
	var same []string
	for _, c := range clusters {
		if !c.IsValid() || c.Addr().Unmap().Is6() != p.Addr().Is6() {
			continue
		}
		c = netip.PrefixFrom(c.Addr().Unmap(), c.Bits()).Masked()
		if c.Bits() <= p.Bits() && c.Contains(p.Addr()) {
			return "", false
		}
		same = append(same, c.String())
	}
	if len(same) == 0 {
		fam := "IPv4"
		if p.Addr().Is6() {
			fam = "IPv6"
		}
		return fmt.Sprintf("is %s, but there is no %s cluster CIDR (--cluster-cidr)", fam, fam), true
	}
	return fmt.Sprintf("is outside the cluster CIDR %s (--cluster-cidr)", strings.Join(same, ", ")), true
}

func hasFamily(ps []netip.Prefix, v6 bool) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.IsValid() && p.Addr().Unmap().Is6() == v6 })
}

// cleanPrefixes masks valid prefixes and returns the invalid ones apart.
func cleanPrefixes(in []netip.Prefix) (good []netip.Prefix, bad []string) {
	good = make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		if !p.IsValid() {
			bad = append(bad, p.String())
			continue
		}
		good = append(good, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked())
	}
	return good, bad
}

// comparePrefix orders IPv4 before IPv6, then by address, then broader first.
func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

type ownedPrefix struct {
	prefix netip.Prefix
	owner  int // index into the candidates; -1 = self
}

// overlaps returns every pair (outer, inner) where outer contains inner,
// found with one sort and one sweep. Prefixes are laminar (two prefixes are
// either disjoint or nested), so after sorting by address (broader first),
// a prefix overlaps an earlier one exactly when the outermost open prefix
// contains it. Pairing each nested prefix with that outermost one marks
// every node involved in any overlap.
func overlaps(ps []ownedPrefix) [][2]ownedPrefix {
	slices.SortFunc(ps, func(a, b ownedPrefix) int {
		return cmp.Or(comparePrefix(a.prefix, b.prefix), cmp.Compare(a.owner, b.owner))
	})
	var out [][2]ownedPrefix
	var top ownedPrefix
	open := false
	for _, p := range ps {
		if open && top.prefix.Contains(p.prefix.Addr()) {
			out = append(out, [2]ownedPrefix{top, p})
			continue
		}
		top, open = p, true
	}
	return out
}

// dedupe drops repeated prefixes, keeping the first occurrence and the order.
func dedupe(ps []netip.Prefix) []netip.Prefix {
	out := ps[:0]
	for i, p := range ps {
		if !slices.Contains(ps[:i], p) {
			out = append(out, p)
		}
	}
	return out
}
