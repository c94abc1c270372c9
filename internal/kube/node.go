package kube

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/wgmesh/wgmesh/internal/mesh"
)

// NodeFromAPI copies what the mesh needs out of a Node object. Pod CIDRs come
// from spec.podCIDRs (spec.podCIDR for old objects); values that do not parse
// are dropped here because the API server validates them and a broken one
// cannot be programmed anyway. Annotations are copied raw: package mesh
// decides what is valid and reports what is not.
func NodeFromAPI(n *corev1.Node) mesh.Node {
	out := mesh.Node{
		Name:                n.Name,
		PublicKey:           n.Annotations[mesh.AnnotationPublicKey],
		Endpoint:            n.Annotations[mesh.AnnotationEndpoint],
		ForceEndpoint:       n.Annotations[mesh.AnnotationForceEndpoint],
		PersistentKeepalive: n.Annotations[mesh.AnnotationPersistentKeepalive],
	}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out.PodCIDRs = append(out.PodCIDRs, p.Masked())
		}
	}
	for _, a := range n.Status.Addresses {
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		switch a.Type {
		case corev1.NodeInternalIP:
			out.InternalIPs = append(out.InternalIPs, ip)
		case corev1.NodeExternalIP:
			out.ExternalIPs = append(out.ExternalIPs, ip)
		}
	}
	return out
}
