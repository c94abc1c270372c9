// Package mesh computes the desired WireGuard mesh of one node from plain
// values describing every Node in the cluster. It is pure: no syscalls, no
// client-go, no netlink. The kube layer fills Node values; the appliers
// (wireguard, route, firewall) make the kernel match what this package says.
package mesh

import "net/netip"

// Annotations wgmesh reads and writes on Node objects.
const (
	AnnotationPublicKey           = "wgmesh.io/public-key"
	AnnotationEndpoint            = "wgmesh.io/endpoint"
	AnnotationForceEndpoint       = "wgmesh.io/force-endpoint"
	AnnotationPersistentKeepalive = "wgmesh.io/persistent-keepalive"
)

// RouteProtocol tags every route the agent installs, so that a restarted
// agent finds exactly its own routes and never touches anyone else's.
// (Not in /etc/iproute2/rt_protos; 0xfe-ish numbers are used by others.)
const RouteProtocol = 0x57 // 87, "W"

// Node is what the mesh needs to know about one Kubernetes Node, copied out
// of the API object by the kube layer. Annotation values are kept raw so
// that the pure code decides, and reports, what is valid.
type Node struct {
	Name string
	// PodCIDRs is spec.podCIDRs as the control plane assigned it (or the
	// subnet(s) the node reserved through a Lease when podCIDR is empty).
	PodCIDRs []netip.Prefix
	// InternalIPs and ExternalIPs come from status.addresses.
	InternalIPs []netip.Addr
	ExternalIPs []netip.Addr
	// Raw annotation values; empty when absent.
	PublicKey           string // wgmesh.io/public-key
	Endpoint            string // wgmesh.io/endpoint (host:port), published by the node's agent
	ForceEndpoint       string // wgmesh.io/force-endpoint (host:port), set by a person
	PersistentKeepalive string // wgmesh.io/persistent-keepalive (Go duration or seconds)
}
