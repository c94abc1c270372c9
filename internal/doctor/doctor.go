// Package doctor explains what stands between this node and a working
// mesh: routes of others that shadow or overlap peer subnets, peer routes
// without the right source, forwarding and rp_filter settings, a FORWARD
// policy that drops pod traffic, a host firewall whose INPUT drops pods'
// connections to their own node, the node's address on another WireGuard
// device (wg-quick's wg0), an MTU too large for the underlay, bridged pod
// traffic that bypasses iptables (br_netfilter), and
// the problems the desired-state computation found (duplicate or
// overlapping pod CIDRs, bad keys), and, from the kernel's own route
// lookups, packets to peer subnets (or from the tunnel to this node's
// pods) that another tool's rule and table send elsewhere. Check is pure
// and table-tested; Read gathers the kernel facts. Doctor only reads: it
// changes nothing.
package doctor

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/route"
)

// Severity of a finding.
type Severity string

const (
	SeverityError   Severity = "error"   // the mesh, or part of it, does not work
	SeverityWarning Severity = "warning" // works now, but fragile or surprising
	SeverityInfo    Severity = "info"
)

// Finding is one thing doctor found, with how to fix it.
type Finding struct {
	// ID is a stable CamelCase word (ShadowingRoute, RouteWrongSrc, ...).
	ID       string
	Severity Severity
	Message  string
	Fix      string
}

func (f Finding) String() string {
	s := fmt.Sprintf("[%s] %s: %s", f.Severity, f.ID, f.Message)
	if f.Fix != "" {
		s += "\n    fix: " + f.Fix
	}
	return s
}

// Route is one kernel route as doctor sees it.
type Route struct {
	Table    int
	Protocol int
	Type     string // "unicast", "local", "broadcast", ...
	Dst      netip.Prefix
	Dev      string
	Src      netip.Addr
}

func (r Route) String() string {
	s := r.Dst.String()
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	if r.Src.IsValid() {
		s += " src " + r.Src.String()
	}
	if r.Table != mainTable {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	return s
}

const (
	mainTable  = 254
	localTable = 255
)

// Input is everything Check looks at.
type Input struct {
	// Device is the WireGuard device name (wgmesh0).
	Device string
	// Desired is this node's desired state; Problems came with it.
	Desired  mesh.State
	Problems []mesh.Problem
	// OurTable is the table holding our routes; 0 means route.DefaultTable
	// (87). 254 when the agent puts its routes in main.
	OurTable int
	// OurRulePriority is the priority of wgmesh's ip rule; 0 means
	// route.DefaultRulePriority.
	OurRulePriority int
	Kernel          Kernel
	// ClusterCIDRs are the whole pod networks (--cluster-cidr); Bridge is
	// the pods' bridge (cni0). They name the traffic and the fix of the
	// InputDropsPods check.
	ClusterCIDRs []netip.Prefix
	Bridge       string
	// Isolation is what the API server does with the agent's credentials
	// (kube.ProbeIsolation); nil when not asked (API unreachable).
	Isolation *Isolation
}

// Isolation: the node the API server sees the agent's credentials bound to
// ("" none), whether the node-isolation policy refused them another node's
// Lease (a dry run), and why either is unknown.
type Isolation struct {
	NodeClaim string
	Enforced  bool
	Unknown   string
}

// Kernel holds facts read from the kernel. A field left at its zero value
// means "not known" where noted, and its check is skipped.
type Kernel struct {
	// Routes are all routes of all tables, both families.
	Routes []Route
	// IPv4Forward / IPv6Forward: net.ipv4.ip_forward,
	// net.ipv6.conf.all.forwarding; nil when unknown.
	IPv4Forward, IPv6Forward *bool
	// ForwardPolicy is the iptables FORWARD policy ("" unknown);
	// ForwardJump says whether our WGMESH-FORWARD jump is in FORWARD.
	ForwardPolicy string
	ForwardJump   bool
	// BridgeNFCallIPTables / BridgeNFCallIP6Tables are
	// net.bridge.bridge-nf-call-ip{,6}tables, nil when unknown (or no
	// bridge was named); BridgeNetfilterMissing says /proc/sys/net/bridge
	// does not exist: br_netfilter is not loaded.
	BridgeNFCallIPTables, BridgeNFCallIP6Tables *bool
	BridgeNetfilterMissing                      bool
	// RPFilter is net.ipv4.conf.{all,<Device>}.rp_filter; nil when unknown.
	RPFilterAll, RPFilterDevice *int
	// DeviceMTU is the WireGuard device's MTU; 0 when unknown or absent.
	DeviceMTU int
	// UnderlayMTU is the MTU of the interface the node's endpoint is on,
	// UnderlayIPv6 whether that endpoint is IPv6; 0 when unknown.
	UnderlayMTU  int
	UnderlayIPv6 bool
	UnderlayDev  string
	// UnderlayWireGuard is set when the interface holding the node's
	// address is a WireGuard device other than ours (wg-quick's wg0).
	UnderlayWireGuard *WireGuardLink
	// Lookups are the kernel's answers for packets to the peer subnets,
	// as pods and as the node send them; nil when not asked.
	Lookups []Lookup
	// Filter and Filter6 are the IPv4 and IPv6 iptables filter tables;
	// nil when unknown.
	Filter, Filter6 *Filter
	// NftTables are the nftables tables, "family name" ("inet firewalld").
	NftTables []string
	// NodeAddr is the node's own address (its endpoint); invalid when
	// unknown.
	NodeAddr netip.Addr
}

// WireGuardLink is a WireGuard device that is not wgmesh's.
type WireGuardLink struct {
	Name       string
	Kind       string // "kernel" or "userspace"
	Peers      int    // -1 when it could not be asked
	ListenPort int
}

// Check returns the findings for in, most severe first, in a stable order.
func Check(ctx context.Context, in Input) []Finding {
	if in.OurTable == 0 {
		in.OurTable = route.DefaultTable
	}
	if in.OurRulePriority == 0 {
		in.OurRulePriority = route.DefaultRulePriority
	}
	var out []Finding
	out = append(out, problemFindings(in.Problems)...)
	out = append(out, routeFindings(in)...)
	out = append(out, lookupFindings(in)...)
	out = append(out, sysctlFindings(in)...)
	out = append(out, inputFindings(in)...)
	out = append(out, tunnelSourceFindings(in)...)
	out = append(out, mtuFindings(in)...)
	out = append(out, endpointOnWireGuardFindings(in)...)
	out = append(out, isolationFindings(in.Isolation)...)
	rank := map[Severity]int{SeverityError: 0, SeverityWarning: 1, SeverityInfo: 2}
	slices.SortStableFunc(out, func(a, b Finding) int { return cmp.Compare(rank[a.Severity], rank[b.Severity]) })
	return out
}

func problemFindings(ps []mesh.Problem) []Finding {
	var out []Finding
	for _, p := range ps {
		f := Finding{ID: p.Reason, Severity: SeverityError, Message: fmt.Sprintf("node %s: %s", p.Node, p.Message)}
		switch p.Reason {
		case mesh.ReasonOverlappingPodCIDR:
			f.Fix = "give every node a distinct spec.podCIDR (kube-controller-manager --allocate-node-cidrs with one --cluster-cidr); a node's podCIDR cannot change: delete and re-register the node"
		case mesh.ReasonDuplicatePublicKey:
			f.Fix = "each node needs its own key: on the cloned node delete /var/lib/wgmesh/private.key and restart wgmesh there"
		case mesh.ReasonInvalidPublicKey, mesh.ReasonMissingPublicKey:
			f.Fix = fmt.Sprintf("check that wgmesh runs on node %s; it publishes %s itself (kubectl -n kube-system get pods -o wide | grep wgmesh)", p.Node, mesh.AnnotationPublicKey)
		case mesh.ReasonInvalidEndpoint:
			f.Severity = SeverityWarning
			f.Fix = fmt.Sprintf("set an IP:port (no hostname): kubectl annotate node %s --overwrite %s=IP:51820", p.Node, mesh.AnnotationForceEndpoint)
		case mesh.ReasonEndpointInMesh:
			f.Fix = fmt.Sprintf("publish an underlay address outside the cluster and pod CIDRs: kubectl annotate node %s --overwrite %s=IP:51820, or fix the node's InternalIP/ExternalIP", p.Node, mesh.AnnotationForceEndpoint)
		case mesh.ReasonInvalidKeepalive:
			f.Severity = SeverityWarning
			f.Fix = fmt.Sprintf("use seconds: kubectl annotate node %s --overwrite %s=25", p.Node, mesh.AnnotationPersistentKeepalive)
		case mesh.ReasonNoPodCIDR:
			f.Severity = SeverityWarning
			f.Fix = "start k3s with a cluster CIDR (the default allocates node CIDRs); the node joins once it has one"
		case mesh.ReasonPodCIDROutsideCluster:
			f.Fix = "set the agent's --cluster-cidr (env WGMESH_CLUSTER_CIDR in the wgmesh DaemonSet: deploy/base/daemonset.yaml, rendered into deploy/wgmesh.yaml) to the cluster's pod network, the same as k3s --cluster-cidr (kube-controller-manager --cluster-cidr), comma-separated for dual-stack; then roll the DaemonSet (kubectl -n kube-system rollout restart ds/wgmesh)"
		case mesh.ReasonNoGateway:
			f.Severity = SeverityWarning
			f.Fix = "give this node a pod CIDR of each family the cluster uses (dual-stack --cluster-cidr)"
		case mesh.ReasonKeyAndEndpointChanged:
			f.Severity = SeverityWarning
			f.Fix = fmt.Sprintf("the peer is programmed; make sure node %[1]s was really reinstalled or moved: on %[1]s, `wg show wgmesh0 public-key` must print the new key of the annotation (kubectl get node %[1]s -o jsonpath='{.metadata.annotations.wgmesh\\.io/public-key}') and the endpoint must be its address; if not, someone holding its agent token (root on that node) may be steering its traffic: delete the wgmesh pod on %[1]s (its bound token dies with it), investigate %[1]s, and check that the node-isolation policy is enforced (doctor's NodeIsolation finding, docs/security.md)", p.Node)
		}
		out = append(out, f)
	}
	return out
}

func routeFindings(in Input) []Finding {
	var out []Finding
	peerDst := make(map[netip.Prefix]mesh.Route, len(in.Desired.Routes))
	for _, r := range in.Desired.Routes {
		peerDst[r.Dst] = r
	}
	// Others' routes overlapping a peer subnet.
	for _, kr := range in.Kernel.Routes {
		if kr.Protocol == mesh.RouteProtocol && kr.Table == in.OurTable {
			continue
		}
		if kr.Table == localTable || (kr.Type != "" && kr.Type != "unicast") || !kr.Dst.IsValid() || kr.Dst.Bits() == 0 {
			continue // local addresses, broadcast, default routes are not shadows
		}
		var hit []string
		for _, want := range in.Desired.Routes {
			if kr.Dst.Overlaps(want.Dst) {
				hit = append(hit, want.Dst.String()+" ("+want.Node+")")
			}
		}
		if len(hit) == 0 {
			continue
		}
		kind := "overlaps"
		switch {
		case kr.Dst.Bits() < minBits(in.Desired.Routes, kr.Dst):
			kind = "covers"
		case peerDst[kr.Dst] != (mesh.Route{}):
			kind = "equals"
		default:
			kind = "is inside"
		}
		shown := hit
		if len(shown) > 3 {
			shown = append(shown[:3:3], fmt.Sprintf("and %d more", len(hit)-3))
		}
		msg := fmt.Sprintf("route %s (not wgmesh's) %s peer subnet(s) %s", kr, kind, strings.Join(shown, ", "))
		sev := SeverityWarning
		switch {
		case in.OurTable == mainTable && kind != "covers":
			sev = SeverityError
			msg += "; in the main table it collides with or wins over wgmesh's route"
		case in.OurTable == mainTable:
			msg += "; wgmesh's longer prefix wins today, but traffic falls back to it whenever a wgmesh route is missing"
		case captures(in, kr):
			continue // it wins: RouteCaptured reports it, with the rule that lets it
		case len(in.Kernel.Lookups) > 0:
			msg += fmt.Sprintf("; the kernel's own route lookups go to %s today (table %d answers first), but traffic falls back to it whenever a wgmesh route is missing", in.Device, in.OurTable)
		default:
			msg += fmt.Sprintf("; it does not win while wgmesh's rule (priority %d, table %d) comes before every rule that selects table %d (doctor could not ask the kernel), and traffic falls back to it whenever a wgmesh route is missing", in.OurRulePriority, in.OurTable, kr.Table)
		}
		fix := fmt.Sprintf("remove it: ip route del %s", kr)
		if strings.HasPrefix(kr.Dev, "wg") {
			fix += fmt.Sprintf(", and drop %s from %s's AllowedIPs (wg-quick: Table=off, or remove it from AllowedIPs)", kr.Dst, kr.Dev)
		}
		out = append(out, Finding{ID: "ShadowingRoute", Severity: sev, Message: msg, Fix: fix})
	}
	// Our routes: present, and with the gateway as source.
	ours := ourRoutes(in)
	if len(in.Kernel.Routes) > 0 {
		for _, want := range in.Desired.Routes {
			got, ok := ours[want.Dst]
			switch {
			case !ok:
				out = append(out, Finding{ID: "RouteMissing", Severity: SeverityError,
					Message: fmt.Sprintf("no wgmesh route to %s (node %s) in table %d", want.Dst, want.Node, in.OurTable),
					Fix:     "check the agent's log for the failed route add; it retries on every resync"})
			case routeWrong(in, want, got):
				out = append(out, Finding{ID: "RouteWrongSrc", Severity: SeverityError,
					Message: fmt.Sprintf("route to %s is %s; want dev %s src %s (replies from remote pods must come back through the tunnel)", want.Dst, got, in.Device, want.Src),
					Fix:     fmt.Sprintf("the agent replaces it on its next resync; if it stays, check that %s is an address of the bridge (ip -br addr show cni0)", want.Src)})
			}
		}
	}
	return out
}

func ourRoutes(in Input) map[netip.Prefix]Route {
	ours := map[netip.Prefix]Route{}
	for _, kr := range in.Kernel.Routes {
		if kr.Protocol == mesh.RouteProtocol && kr.Table == in.OurTable {
			ours[kr.Dst] = kr
		}
	}
	return ours
}

func routeWrong(in Input, want mesh.Route, got Route) bool {
	return got.Src != want.Src || (in.Device != "" && got.Dev != in.Device)
}

// minBits is the shortest prefix length among desired routes that p overlaps.
func minBits(rs []mesh.Route, p netip.Prefix) int {
	m := 129
	for _, r := range rs {
		if r.Dst.Overlaps(p) && r.Dst.Bits() < m {
			m = r.Dst.Bits()
		}
	}
	return m
}

func sysctlFindings(in Input) []Finding {
	var out []Finding
	k := in.Kernel
	hasV4, hasV6 := false, false
	for _, s := range in.Desired.Subnets {
		hasV4 = hasV4 || s.Addr().Is4()
		hasV6 = hasV6 || s.Addr().Is6()
	}
	if hasV4 && k.IPv4Forward != nil && !*k.IPv4Forward {
		out = append(out, Finding{ID: "IPForwardOff", Severity: SeverityError,
			Message: "net.ipv4.ip_forward is 0: the node does not route pod traffic",
			Fix:     "sysctl -w net.ipv4.ip_forward=1 (and persist it in /etc/sysctl.d/)"})
	}
	if hasV6 && k.IPv6Forward != nil && !*k.IPv6Forward {
		out = append(out, Finding{ID: "IPv6ForwardOff", Severity: SeverityError,
			Message: "net.ipv6.conf.all.forwarding is 0: the node does not route IPv6 pod traffic",
			Fix:     "sysctl -w net.ipv6.conf.all.forwarding=1 (and persist it in /etc/sysctl.d/)"})
	}
	out = append(out, bridgeNetfilterFindings(k, hasV4, hasV6)...)
	if k.ForwardPolicy == "DROP" && !k.ForwardJump {
		out = append(out, Finding{ID: "ForwardDrop", Severity: SeverityError,
			Message: "iptables FORWARD policy is DROP and wgmesh's WGMESH-FORWARD jump is missing: forwarded pod traffic is dropped",
			Fix:     "start the agent with the cluster CIDR set (it adds the jump), or restart it to restore the rule"})
	}
	if k.RPFilterAll != nil || k.RPFilterDevice != nil {
		// The kernel uses the larger of conf.all and conf.<dev>.
		eff := 0
		if k.RPFilterAll != nil {
			eff = *k.RPFilterAll
		}
		if k.RPFilterDevice != nil {
			eff = max(eff, *k.RPFilterDevice)
		}
		if eff == 1 {
			out = append(out, Finding{ID: "RPFilterStrict", Severity: SeverityWarning,
				Message: fmt.Sprintf("rp_filter is strict (1) for %s: packets from remote pods are dropped whenever the best route back to their source is not %s (a missing route, another tool's route)", in.Device, in.Device),
				Fix:     fmt.Sprintf("sysctl -w net.ipv4.conf.%s.rp_filter=2 net.ipv4.conf.all.rp_filter=2 (loose)", in.Device)})
		}
	}
	return out
}

// bridgeNetfilterFindings: bridged pod traffic must pass iptables
// (package bridgenf explains why). The CNI plugin and the agent set the
// sysctl themselves; this finds a node where they could not (br_netfilter
// not loaded) or where something turned it off since.
func bridgeNetfilterFindings(k Kernel, hasV4, hasV6 bool) []Finding {
	const why = "a pod cannot reach a Service (ClusterIP, NodePort) whose chosen backend is on its own node: the backend's reply is switched on the bridge, never un-NATed, and dropped by the client; network policies miss same-node traffic"
	if k.BridgeNetfilterMissing && (hasV4 || hasV6) {
		return []Finding{{ID: "BridgeNetfilterOff", Severity: SeverityError,
			Message: "br_netfilter is not loaded (no /proc/sys/net/bridge): bridged pod traffic bypasses iptables; " + why,
			Fix:     "modprobe br_netfilter && echo br_netfilter > /etc/modules-load.d/br_netfilter.conf (wgmesh then sets net.bridge.bridge-nf-call-iptables=1 itself: the CNI plugin at the next pod start, the agent at its next resync)"}}
	}
	var out []Finding
	for _, c := range []struct {
		on   bool
		val  *bool
		name string
	}{{hasV4, k.BridgeNFCallIPTables, "net.bridge.bridge-nf-call-iptables"}, {hasV6, k.BridgeNFCallIP6Tables, "net.bridge.bridge-nf-call-ip6tables"}} {
		if c.on && c.val != nil && !*c.val {
			out = append(out, Finding{ID: "BridgeNetfilterOff", Severity: SeverityError,
				Message: c.name + " is 0: bridged pod traffic bypasses iptables; " + why,
				Fix:     "sysctl -w " + c.name + "=1 (wgmesh's CNI plugin sets it at every pod start, the agent at every resync where it may write /proc/sys; if it goes back to 0, find what on the node sets it: grep -r bridge-nf-call /etc/sysctl.conf /etc/sysctl.d)"})
		}
	}
	return out
}

// tunnelSourceFindings checks design rule 7: for each family that has
// peer routes, the device must hold an address inside this node's pod
// subnets (the kernel's local route on it shows it). Without one,
// MASQUERADE (kube-proxy's NodePorts, a node reaching a Service whose
// backend is on another node) picks another device's address, usually the
// underlay one, and the peer drops the packet: its AllowedIPs for this
// node are exactly this node's subnets.
func tunnelSourceFindings(in Input) []Finding {
	if len(in.Kernel.Routes) == 0 {
		return nil // routes unknown
	}
	var out []Finding
	for _, v6 := range []bool{false, true} {
		routed := slices.ContainsFunc(in.Desired.Routes, func(r mesh.Route) bool { return r.Dst.Addr().Is6() == v6 })
		if !routed {
			continue
		}
		var own []netip.Prefix
		for _, s := range in.Desired.Subnets {
			if s.Addr().Is6() == v6 {
				own = append(own, s)
			}
		}
		held := slices.ContainsFunc(in.Kernel.Routes, func(r Route) bool {
			return r.Table == localTable && r.Type == "local" && r.Dev == in.Device &&
				slices.ContainsFunc(own, func(s netip.Prefix) bool { return s.Contains(r.Dst.Addr()) })
		})
		if held {
			continue
		}
		fam, want := "IPv4", ""
		if v6 {
			fam = "IPv6"
		}
		for _, a := range in.Desired.TunnelAddrs {
			if a.Addr().Is6() == v6 {
				want = a.String()
			}
		}
		out = append(out, Finding{ID: "TunnelSourceOutsideSubnet", Severity: SeverityError,
			Message: fmt.Sprintf("%s holds no %s address inside this node's pod subnets %v: traffic masqueraded into the tunnel (NodePorts, the node reaching a Service whose backend is on another node) leaves with another address, such as the underlay one, and every peer drops it (its AllowedIPs for this node are exactly those subnets)", in.Device, fam, own),
			Fix:     fmt.Sprintf("restart wgmesh on this node: the agent adds %s to %s; if it disappears again, find what removes it (ip monitor address dev %s)", want, in.Device, in.Device)})
	}
	return out
}

func mtuFindings(in Input) []Finding {
	k := in.Kernel
	if k.DeviceMTU == 0 || k.UnderlayMTU == 0 {
		return nil
	}
	limit := mesh.PodMTU(0, k.UnderlayMTU, k.UnderlayIPv6)
	if k.DeviceMTU <= limit {
		return nil
	}
	return []Finding{{ID: "MTUTooLarge", Severity: SeverityError,
		Message: fmt.Sprintf("%s MTU %d is larger than underlay %s MTU %d minus WireGuard overhead (%d): large packets are fragmented or lost (flannel#1567: 0-50 kbps)", in.Device, k.DeviceMTU, k.UnderlayDev, k.UnderlayMTU, limit),
		Fix:     fmt.Sprintf("leave --mtu unset (auto = %d) or set it to at most %d; pods pick it up on their next restart", limit, limit)}}
}

// isolationFindings says which protection mode the cluster is in: whether
// one node's agent credentials could rewrite other Nodes and Leases.
func isolationFindings(iso *Isolation) []Finding {
	if iso == nil {
		return nil
	}
	const apply = "on Kubernetes/k3s 1.30 or later apply deploy/overlays/k3s (or deploy/overlays/kubelet), which include deploy/components/node-isolation; see docs/security.md"
	switch {
	case iso.Enforced && iso.NodeClaim != "":
		return []Finding{{ID: "NodeIsolation", Severity: SeverityInfo,
			Message: fmt.Sprintf("the agent's token is bound to node %s and the API server enforces the node-isolation policy: this agent can change only its own Node and subnet Leases", iso.NodeClaim)}}
	case iso.Unknown != "":
		return []Finding{{ID: "NodeIsolationUnknown", Severity: SeverityInfo,
			Message: "could not tell whether the node-isolation policy holds this agent to its own node: " + iso.Unknown}}
	case iso.NodeClaim == "":
		return []Finding{{ID: "NoNodeClaim", Severity: SeverityWarning,
			Message: "the agent's token carries no node claim (API server older than 1.30, ServiceAccountTokenPodNodeInfo off, or a token not bound to a pod): the node-isolation policy cannot apply, and a stolen agent token can rewrite every Node's key and endpoint and every subnet Lease",
			Fix:     "run the agent from the DaemonSet (its projected token is bound to the pod) on an API server 1.30 or later; " + apply}}
	default:
		return []Finding{{ID: "NodeIsolationOff", Severity: SeverityWarning,
			Message: fmt.Sprintf("the agent's token is bound to node %s but the API server does not enforce the node-isolation policy: a stolen agent token can rewrite every Node's key and endpoint and every subnet Lease", iso.NodeClaim),
			Fix:     apply}}
	}
}
