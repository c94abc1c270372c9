package kubenode

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func newPublisher(t *testing.T) (*Publisher, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: "node1", UID: "uid-1", Labels: map[string]string{"kubernetes.io/hostname": "node1"},
	}})
	clock := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	return &Publisher{
		Client: cs, NodeName: "node1",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { clock = clock.Add(time.Second); return clock },
	}, cs
}

func label(t *testing.T, cs *fake.Clientset) map[string]string {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Get(context.Background(), "node1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Labels
}

func events(t *testing.T, cs *fake.Clientset) []corev1.Event {
	t.Helper()
	l, err := cs.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func writes(cs *fake.Clientset) []string {
	var out []string
	for _, a := range cs.Actions() {
		if a.GetVerb() != "get" && a.GetVerb() != "list" {
			out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	return out
}

func TestPublishNotReadyLabelsAndNamesWhatIsMissing(t *testing.T) {
	p, cs := newPublisher(t)
	ctx := context.Background()
	missing := []Missing{
		{ID: "program.iscsiadm", Summary: "iscsiadm is at /run/current-system/sw/bin/iscsiadm, which is not on Longhorn's PATH"},
		{ID: "iscsi.initiator-name", Summary: "initiator name is missing"},
	}
	if err := p.Publish(ctx, false, missing); err != nil {
		t.Fatal(err)
	}
	l := label(t, cs)
	if l[LabelReady] != "false" || l["kubernetes.io/hostname"] != "node1" {
		t.Fatalf("labels = %v", l)
	}
	evs := events(t, cs)
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	ev := evs[0]
	if ev.Type != corev1.EventTypeWarning || ev.Reason != ReasonMissing || ev.InvolvedObject.Kind != "Node" ||
		ev.InvolvedObject.Name != "node1" || ev.InvolvedObject.UID != "uid-1" || ev.Source.Component != Component {
		t.Errorf("event = %+v", ev)
	}
	for _, m := range missing {
		if !strings.Contains(ev.Message, m.ID) {
			t.Errorf("event message %q does not name %s", ev.Message, m.ID)
		}
	}

	// Same verdict again: no write at all.
	cs.ClearActions()
	if err := p.Publish(ctx, false, missing); err != nil {
		t.Fatal(err)
	}
	if w := writes(cs); len(w) != 0 {
		t.Errorf("unchanged verdict wrote %v", w)
	}

	// Ready: label flips, one Normal event.
	if err := p.Publish(ctx, true, nil); err != nil {
		t.Fatal(err)
	}
	if label(t, cs)[LabelReady] != "true" {
		t.Error("label not true")
	}
	evs = events(t, cs)
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2", len(evs))
	}
	var normal int
	for _, e := range evs {
		if e.Reason == ReasonReady && e.Type == corev1.EventTypeNormal {
			normal++
		}
	}
	if normal != 1 {
		t.Errorf("events %+v, want one %s", evs, ReasonReady)
	}
}

func TestPublishReadyFirstTimeOnlyLabels(t *testing.T) {
	p, cs := newPublisher(t)
	if err := p.Publish(context.Background(), true, nil); err != nil {
		t.Fatal(err)
	}
	if w := writes(cs); strings.Join(w, ",") != "patch nodes" {
		t.Errorf("writes = %v, want only the label patch", w)
	}
	cs.ClearActions()
	if err := p.Publish(context.Background(), true, nil); err != nil {
		t.Fatal(err)
	}
	if w := writes(cs); len(w) != 0 {
		t.Errorf("second ready publish wrote %v", w)
	}
}

func TestPublishMissingNode(t *testing.T) {
	p, _ := newPublisher(t)
	p.NodeName = "nope"
	if err := p.Publish(context.Background(), false, nil); err == nil || !strings.Contains(err.Error(), "get node nope") {
		t.Fatalf("err = %v", err)
	}
}
