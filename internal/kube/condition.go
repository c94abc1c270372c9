package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ReadyReason is the reason wgmesh writes on NetworkUnavailable=False.
const ReadyReason = "WgmeshReady"

// networkReady reports whether node already says NetworkUnavailable=False
// for the reason wgmesh sets.
func networkReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			return c.Status == corev1.ConditionFalse && c.Reason == ReadyReason
		}
	}
	return false
}

// SetNetworkAvailable sets the Node condition NetworkUnavailable=False
// (reason WgmeshReady) through the status subresource, as flannel does, so
// that the node.kubernetes.io/network-unavailable taint goes away. It patches
// only when the condition is not already so, and reports whether it did.
func SetNetworkAvailable(ctx context.Context, c kubernetes.Interface, node *corev1.Node, now time.Time) (bool, error) {
	if networkReady(node) {
		return false, nil
	}
	ts := metav1.NewTime(now)
	cond := corev1.NodeCondition{
		Type:               corev1.NodeNetworkUnavailable,
		Status:             corev1.ConditionFalse,
		Reason:             ReadyReason,
		Message:            "wgmesh is running on this node",
		LastTransitionTime: ts,
		LastHeartbeatTime:  ts,
	}
	// Strategic merge: conditions merge by type, so the kubelet's
	// conditions are left alone.
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return false, err
	}
	if _, err := c.CoreV1().Nodes().PatchStatus(ctx, node.Name, patch); err != nil {
		return false, fmt.Errorf("set NetworkUnavailable=False on node %s: %w", node.Name, err)
	}
	return true, nil
}
