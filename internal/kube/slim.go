package kube

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// annotationPrefix marks the Node annotations the agent reads or writes.
const annotationPrefix = "wgmesh.io/"

// slimNode is the Node informer's transform: the cache keeps only what the
// agent reads (name, UID, resourceVersion, wgmesh.io/ annotations, pod
// CIDRs, addresses and the NetworkUnavailable condition). A real Node
// carries far more (labels, managedFields, the kubelet's conditions, its
// image list, capacity): kilobytes per node that every agent would hold for
// every node of the cluster. It builds a new object, so it is idempotent and
// never changes what it was given. Anything that is not a Node passes as it
// is.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion,
			CreationTimestamp: n.CreationTimestamp, DeletionTimestamp: n.DeletionTimestamp,
		},
		Spec:   corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
		Status: corev1.NodeStatus{Addresses: n.Status.Addresses},
	}
	for k, v := range n.Annotations {
		if strings.HasPrefix(k, annotationPrefix) {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			out.Status.Conditions = append(out.Status.Conditions, c)
		}
	}
	return out, nil
}
