package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Prefix is the prefix of every Node annotation and label wgmesh writes
// (the agent's wgmesh.io/public-key, wgmesh.io/endpoint, ..., a person's
// wgmesh.io/force-endpoint, hostprep's wgmesh.io/longhorn-ready label).
const Prefix = "wgmesh.io/"

// ClusterRemoval is what RemoveClusterState removed.
type ClusterRemoval struct {
	// Nodes whose wgmesh.io/* annotations or labels were removed.
	Nodes []string
	// Conditions: Nodes whose NetworkUnavailable condition (wgmesh's) was removed.
	Conditions []string
	// Leases: the subnet Leases deleted.
	Leases []string
}

// RemoveClusterState removes what wgmesh keeps in the API, for an
// uninstall once no agent runs any more (a running agent would write it
// again): every wgmesh.io/* annotation and label of every Node, the
// NetworkUnavailable condition where wgmesh wrote it (reason ReadyReason;
// anyone else's is left), and the subnet Leases in namespace. It touches
// nothing else and is idempotent.
func RemoveClusterState(ctx context.Context, c kubernetes.Interface, namespace string) (ClusterRemoval, error) {
	var r ClusterRemoval
	var errs []error
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return r, fmt.Errorf("list nodes: %w", err)
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if patch := unsetOwnMetadata(n); patch != nil {
			if _, err := c.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
				errs = append(errs, fmt.Errorf("node %s: remove wgmesh.io/* annotations and labels: %w", n.Name, err))
			} else {
				r.Nodes = append(r.Nodes, n.Name)
			}
		}
		if slices.ContainsFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool {
			return c.Type == corev1.NodeNetworkUnavailable && c.Reason == ReadyReason
		}) {
			// Strategic merge: conditions merge by type; only this one goes.
			patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []map[string]string{
				{"type": string(corev1.NodeNetworkUnavailable), "$patch": "delete"}}}})
			if _, err := c.CoreV1().Nodes().PatchStatus(ctx, n.Name, patch); err != nil {
				errs = append(errs, fmt.Errorf("node %s: remove the NetworkUnavailable condition: %w", n.Name, err))
			} else {
				r.Conditions = append(r.Conditions, n.Name)
			}
		}
	}
	leases, err := c.CoordinationV1().Leases(namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelSubnetLease})
	if err != nil {
		return r, errors.Join(append(errs, fmt.Errorf("list subnet leases in %s: %w", namespace, err))...)
	}
	for _, l := range leases.Items {
		err := c.CoordinationV1().Leases(namespace).Delete(ctx, l.Name, metav1.DeleteOptions{})
		switch {
		case err == nil:
			r.Leases = append(r.Leases, l.Name)
		case !apierrors.IsNotFound(err):
			errs = append(errs, fmt.Errorf("delete lease %s/%s: %w", namespace, l.Name, err))
		}
	}
	return r, errors.Join(errs...)
}

// unsetOwnMetadata is the merge patch that removes n's wgmesh.io/*
// annotations and labels, or nil when it has none.
func unsetOwnMetadata(n *corev1.Node) []byte {
	unset := func(m map[string]string) map[string]any {
		out := map[string]any{}
		for k := range m {
			if strings.HasPrefix(k, Prefix) {
				out[k] = nil
			}
		}
		return out
	}
	ann, lab := unset(n.Annotations), unset(n.Labels)
	if len(ann) == 0 && len(lab) == 0 {
		return nil
	}
	meta := map[string]any{}
	if len(ann) > 0 {
		meta["annotations"] = ann
	}
	if len(lab) > 0 {
		meta["labels"] = lab
	}
	patch, _ := json.Marshal(map[string]any{"metadata": meta})
	return patch
}
