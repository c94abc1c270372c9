package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/wgmesh/wgmesh/internal/mesh"
)

// PublishEndpoint chooses the endpoint this node publishes for its peers:
// wgmesh.io/force-endpoint if a person set it (a NAT'd node knows better than
// its address list), else the first ExternalIP, else the first InternalIP,
// with the WireGuard listen port. IPv6 addresses are bracketed ([fd00::1]:51820).
// A force-endpoint without a port gets the listen port.
func PublishEndpoint(n mesh.Node, port int) (string, error) {
	if n.ForceEndpoint != "" {
		if ap, err := netip.ParseAddrPort(n.ForceEndpoint); err == nil {
			return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String(), nil
		}
		if a, err := netip.ParseAddr(n.ForceEndpoint); err == nil {
			return netip.AddrPortFrom(a.Unmap(), uint16(port)).String(), nil
		}
		return "", fmt.Errorf("%s=%q on node %s is neither IP:port nor IP", mesh.AnnotationForceEndpoint, n.ForceEndpoint, n.Name)
	}
	for _, list := range [][]netip.Addr{n.ExternalIPs, n.InternalIPs} {
		if len(list) > 0 {
			return netip.AddrPortFrom(list[0], uint16(port)).String(), nil
		}
	}
	return "", fmt.Errorf("node %s has neither an ExternalIP nor an InternalIP in status.addresses, and no %s", n.Name, mesh.AnnotationForceEndpoint)
}

// AnnotationsToPublish returns the annotations that are missing or different
// on node; empty when node already carries want.
func AnnotationsToPublish(node *corev1.Node, want map[string]string) map[string]string {
	diff := map[string]string{}
	for k, v := range want {
		if cur, ok := node.Annotations[k]; !ok || cur != v {
			diff[k] = v
		}
	}
	return diff
}

// PublishAnnotations sets want on the Node with one merge PATCH of only the
// keys that differ, and does nothing when they already match: annotations
// change only when the key or endpoint do, so no informer in the cluster
// churns. It returns the keys it changed.
func PublishAnnotations(ctx context.Context, c kubernetes.Interface, node *corev1.Node, want map[string]string) (map[string]string, error) {
	diff := AnnotationsToPublish(node, want)
	if len(diff) == 0 {
		return nil, nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": diff}})
	if err != nil {
		return nil, err
	}
	if _, err := c.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
		return nil, fmt.Errorf("patch annotations of node %s: %w", node.Name, err)
	}
	return diff, nil
}

// FieldManager names wgmesh in managedFields.
const FieldManager = "wgmesh-agent"
