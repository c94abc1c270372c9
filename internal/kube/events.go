package kube

import (
	"context"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/wgmesh/wgmesh/internal/mesh"
)

// ProblemEvents turns mesh Problems into Warning Events on the Node they are
// about, once per appearance or change: a problem that persists across
// reconciles is not repeated, and one that goes away and comes back is
// reported again.
type ProblemEvents struct {
	recorder record.EventRecorder
	stop     func()

	mu   sync.Mutex
	last map[problemKey]string // -> message
}

type problemKey struct{ node, reason string }

// NewProblemEvents records Events through client as component wgmesh-agent
// on host self. Stop it with Close.
func NewProblemEvents(client kubernetes.Interface, self string) *ProblemEvents {
	b := record.NewBroadcaster(record.WithContext(context.Background()))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	rec := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: FieldManager, Host: self})
	return &ProblemEvents{recorder: rec, stop: b.Shutdown, last: map[problemKey]string{}}
}

// newProblemEventsWith lets tests use a record.FakeRecorder.
func newProblemEventsWith(rec record.EventRecorder) *ProblemEvents {
	return &ProblemEvents{recorder: rec, stop: func() {}, last: map[problemKey]string{}}
}

// Report records an Event for every problem that is new or whose message
// changed since the last call, and returns how many it recorded.
func (p *ProblemEvents) Report(problems []mesh.Problem, log *slog.Logger) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := make(map[problemKey]string, len(problems))
	n := 0
	for _, pr := range problems {
		k := problemKey{pr.Node, pr.Reason}
		now[k] = pr.Message
		if old, ok := p.last[k]; ok && old == pr.Message {
			continue
		}
		log.Warn("mesh problem", "node", pr.Node, "reason", pr.Reason, "message", pr.Message)
		if pr.Node != "" {
			p.recorder.Event(nodeRef(pr.Node), corev1.EventTypeWarning, pr.Reason, pr.Message)
			n++
		}
	}
	for k := range p.last {
		if _, ok := now[k]; !ok {
			log.Info("mesh problem resolved", "node", k.node, "reason", k.reason)
		}
	}
	p.last = now
	return n
}

// Close flushes and stops the event broadcaster.
func (p *ProblemEvents) Close() { p.stop() }

// nodeRef is how the kubelet refers to its Node in Events (UID = name), so
// `kubectl describe node` shows them.
func nodeRef(name string) runtime.Object {
	return &corev1.ObjectReference{Kind: "Node", Name: name, UID: types.UID(name), APIVersion: "v1"}
}
