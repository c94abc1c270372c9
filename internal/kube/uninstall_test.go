package kube

import (
	"context"
	"slices"
	"testing"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestRemoveClusterStateRemovesOnlyWgmeshState(t *testing.T) {
	ctx := context.Background()
	ours := apiNode("a", []string{"10.42.1.0/24"}, "192.168.1.10")
	ours.Annotations = map[string]string{"wgmesh.io/public-key": "PUB", "wgmesh.io/endpoint": "192.168.1.10:51820", "someone.else/x": "y"}
	ours.Labels = map[string]string{"wgmesh.io/longhorn-ready": "true", "kubernetes.io/hostname": "a"}
	ours.Status.Conditions = []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"},
		{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: ReadyReason},
	}
	// Another network's condition and a node wgmesh never touched stay as they are.
	other := apiNode("b", []string{"10.42.2.0/24"}, "192.168.1.11")
	other.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: "FlannelIsUp"}}
	lease := func(name string, labels map[string]string) *coordv1.Lease {
		return &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system", Labels: labels}}
	}
	c := fake.NewClientset(ours, other,
		lease("wgmesh-subnet-10-42-1-0-24", map[string]string{LabelSubnetLease: "true"}),
		lease("kube-scheduler", nil))

	r, err := RemoveClusterState(ctx, c, "kube-system")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Nodes, []string{"a"}) || !slices.Equal(r.Conditions, []string{"a"}) || !slices.Equal(r.Leases, []string{"wgmesh-subnet-10-42-1-0-24"}) {
		t.Errorf("removed %+v", r)
	}
	a, _ := c.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
	for k := range a.Annotations {
		if k != "someone.else/x" {
			t.Errorf("annotation %s left", k)
		}
	}
	if a.Labels["wgmesh.io/longhorn-ready"] != "" || a.Labels["kubernetes.io/hostname"] != "a" {
		t.Errorf("labels after removal: %v", a.Labels)
	}
	if condition(a, corev1.NodeNetworkUnavailable) != nil || condition(a, corev1.NodeReady) == nil {
		t.Errorf("conditions after removal: %+v", a.Status.Conditions)
	}
	b, _ := c.CoreV1().Nodes().Get(ctx, "b", metav1.GetOptions{})
	if condition(b, corev1.NodeNetworkUnavailable) == nil {
		t.Error("another network's NetworkUnavailable condition was removed")
	}
	if _, err := c.CoordinationV1().Leases("kube-system").Get(ctx, "kube-scheduler", metav1.GetOptions{}); err != nil {
		t.Errorf("someone else's lease: %v", err)
	}
	// A second run finds nothing to do.
	if r, err := RemoveClusterState(ctx, c, "kube-system"); err != nil || len(r.Nodes)+len(r.Conditions)+len(r.Leases) != 0 {
		t.Errorf("second run: %+v, %v", r, err)
	}
}

func condition(n *corev1.Node, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == t {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}
