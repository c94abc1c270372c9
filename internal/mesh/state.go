package mesh

import (
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Options are this node's settings that shape its desired state.
type Options struct {
	// Self is this node's name; it is never its own peer. Desired takes
	// the name from its self argument and uses Self only when that is empty.
	Self string
	// ListenPort is the WireGuard port assumed for an endpoint given without
	// one; 0 means DefaultListenPort.
	ListenPort int
	// ExtraPrefixes are additional prefixes per node name that the control
	// plane (never the node itself) vouches for, for example a node's
	// internal IP as a /32 when node addresses are not mutually reachable
	// (k3s-io/k3s#7355). They join that peer's AllowedIPs and get routes,
	// and take part in the overlap check like pod CIDRs. Nil today.
	ExtraPrefixes map[string][]netip.Prefix
	// ClusterCIDRs are the pod networks (--cluster-cidr), at most one per
	// family. Every node's pod CIDR must lie inside one of them, since the
	// FORWARD and masquerade rules are built from them; one outside is a
	// PodCIDROutsideCluster Problem. Nil: not checked.
	ClusterCIDRs []netip.Prefix
}

// Peer is one desired WireGuard peer: another node of the cluster.
type Peer struct {
	Node      string
	PublicKey wgtypes.Key
	// Endpoint is the zero value when the node published none (the peer can
	// still be reached once it initiates a handshake).
	Endpoint netip.AddrPort
	// AllowedIPs is exactly the node's pod CIDRs, sorted.
	AllowedIPs          []netip.Prefix
	PersistentKeepalive time.Duration
}

// Route is one desired route to a peer's pod subnet through the WireGuard
// device, with Src = this node's cni0 gateway of the same family.
type Route struct {
	Node string
	Dst  netip.Prefix
	Src  netip.Addr
}

// State is the whole desired mesh of one node. Peers are sorted by node
// name, Routes by destination, so two States compare with reflect.DeepEqual.
type State struct {
	// Subnets are this node's own pod subnets (the cni0 gateways derive from them).
	Subnets []netip.Prefix
	// TunnelAddrs are the WireGuard device's own addresses (rule 7): the
	// network address of this node's first pod subnet of each family, as a
	// host prefix. Traffic that is masqueraded on its way into the tunnel
	// (kube-proxy's NodePorts, a node reaching a Service) takes its source
	// from the outgoing device; with these it carries an address the
	// peers' exact AllowedIPs accept, where without them it would carry
	// the node's underlay address and be dropped by the peer.
	TunnelAddrs []netip.Prefix
	Peers       []Peer
	Routes      []Route
}

// Problem explains why a node is not programmed (or only partly), or
// (KeyAndEndpointChanged) why a programmed one deserves a look.
type Problem struct {
	Node string
	// Reason is a stable CamelCase word, used in Events and metric labels:
	// InvalidPublicKey, MissingPublicKey, NoPodCIDR, OverlappingPodCIDR,
	// InvalidEndpoint, InvalidKeepalive, DuplicatePublicKey, InvalidPodCIDR,
	// NoGateway (this node has no pod CIDR of a peer subnet's family),
	// PodCIDROutsideCluster (a pod CIDR outside Options.ClusterCIDRs);
	// KeyAndEndpointChanged (from KeyChanges: a warning, the peer is
	// programmed).
	Reason  string
	Message string
}
