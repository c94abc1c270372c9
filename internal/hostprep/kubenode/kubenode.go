// Package kubenode tells Kubernetes about a node's Longhorn readiness: the
// Node label wgmesh.io/longhorn-ready=true|false (so Longhorn can be limited
// to ready nodes with a node selector) and an Event on the Node naming what
// is missing.
//
// It owns that one label and the Events it creates. It must never touch
// other labels, annotations, taints or the Node's status, and it writes
// only when something changed (no heartbeats into the Node object).
package kubenode

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// LabelReady is the Node label wgmesh-hostprep sets.
const LabelReady = "wgmesh.io/longhorn-ready"

// Event reasons.
const (
	ReasonMissing = "LonghornHostDependenciesMissing"
	ReasonReady   = "LonghornHostDependenciesReady"
)

// Component is the Event source.
const Component = "wgmesh-hostprep"

// Missing is one required dependency that is absent.
type Missing struct {
	ID      string
	Summary string
}

// Publisher keeps the label and Events of one Node up to date.
type Publisher struct {
	Client   kubernetes.Interface
	NodeName string
	// EventNamespace is where Node Events go ("default", like the kubelet's).
	EventNamespace string
	Log            *slog.Logger
	Now            func() time.Time

	// lastKey is the missing set last reported by an Event ("" = ready);
	// published is false until the first successful publish.
	lastKey   string
	published bool
}

// Publish sets the label to ready and, when the set of missing checks
// changed since the last Publish, records an Event saying so.
func (p *Publisher) Publish(ctx context.Context, ready bool, missing []Missing) error {
	node, err := p.Client.CoreV1().Nodes().Get(ctx, p.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get node %s: %w", p.NodeName, err)
	}
	want := fmt.Sprint(ready)
	if node.Labels[LabelReady] != want {
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{LabelReady: want}}})
		if err != nil {
			return err
		}
		if _, err := p.Client.CoreV1().Nodes().Patch(ctx, p.NodeName, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: Component}); err != nil {
			return fmt.Errorf("label node %s %s=%s: %w", p.NodeName, LabelReady, want, err)
		}
		p.log().Info("node labeled", "node", p.NodeName, "label", LabelReady, "value", want)
	}
	key := missingKey(missing)
	if ready {
		key = ""
	}
	if p.published && key == p.lastKey {
		return nil
	}
	if !p.published && key == "" {
		// Nothing to announce on a healthy first run.
		p.published, p.lastKey = true, key
		return nil
	}
	ev := p.event(node, ready, missing)
	if _, err := p.Client.CoreV1().Events(ev.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create event for node %s: %w", p.NodeName, err)
	}
	p.log().Info("node event", "node", p.NodeName, "reason", ev.Reason, "message", ev.Message)
	p.published, p.lastKey = true, key
	return nil
}

func (p *Publisher) event(node *corev1.Node, ready bool, missing []Missing) *corev1.Event {
	now := metav1.NewTime(p.now())
	ns := p.EventNamespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", node.Name, now.UnixNano()),
			Namespace: ns,
		},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: node.Name, UID: node.UID},
		Source:         corev1.EventSource{Component: Component, Host: node.Name},
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
	}
	if ready {
		ev.Type, ev.Reason = corev1.EventTypeNormal, ReasonReady
		ev.Message = "Longhorn's host dependencies are present"
		return ev
	}
	parts := make([]string, len(missing))
	for i, m := range missing {
		parts[i] = m.ID + ": " + m.Summary
	}
	ev.Type, ev.Reason = corev1.EventTypeWarning, ReasonMissing
	ev.Message = "Longhorn would fail on this node; missing: " + strings.Join(parts, "; ") +
		" (kubectl logs the wgmesh-hostprep container, or run wgmesh-hostprep check, for the fixes)"
	if len(ev.Message) > 1024 {
		ev.Message = ev.Message[:1021] + "..."
	}
	return ev
}

func missingKey(missing []Missing) string {
	ids := make([]string, len(missing))
	for i, m := range missing {
		ids[i] = m.ID
	}
	return strings.Join(ids, ",")
}

func (p *Publisher) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Publisher) log() *slog.Logger {
	if p.Log != nil {
		return p.Log
	}
	return slog.Default()
}
