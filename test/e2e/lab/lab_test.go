//go:build e2e

package lab

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

// newBareLab is a lab with the underlay and no control plane: enough to
// test nodes, mounts and CNI.
func newBareLab(t *testing.T) *Lab {
	t.Helper()
	testutil.RequireRoot(t)
	cfg := Config{Dir: filepath.Join(t.TempDir(), "lab"), Log: slog.Default()}
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l := &Lab{Config: cfg, ID: newID(), nodes: map[string]*Node{}, nextIP: 11}
	t.Cleanup(l.Down)
	if err := l.buildLabpod(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := l.makeUnderlay(t.Context()); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestNodesHaveTheirOwnMountsAndMeetOnTheUnderlay(t *testing.T) {
	l := newBareLab(t)
	ctx := t.Context()
	a, err := l.NewNode(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.NewNode(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Run(ctx, "sh", "-c", "echo a > /run/wgmesh/who"); err != nil {
		t.Fatal(err)
	}
	if out, err := b.Run(ctx, "cat", "/run/wgmesh/who"); err == nil {
		t.Errorf("node b sees node a's /run/wgmesh: %q", out)
	}
	if _, err := os.Stat("/run/wgmesh/who"); err == nil {
		t.Errorf("the machine sees node a's /run/wgmesh")
	}
	if got, err := os.ReadFile(filepath.Join(a.Dir, "run-wgmesh", "who")); err != nil || string(got) != "a\n" {
		t.Errorf("node a's /run/wgmesh is not %s: %q %v", filepath.Join(a.Dir, "run-wgmesh"), got, err)
	}
	if _, err := a.Run(ctx, "ping", "-c", "1", "-W", "2", b.Addr.String()); err != nil {
		t.Errorf("a cannot reach b on the underlay: %v", err)
	}
	if _, err := a.Run(ctx, "ping", "-c", "1", "-W", "2", ControlPlaneIP.String()); err != nil {
		t.Errorf("a cannot reach the control plane on the underlay: %v", err)
	}
}

func TestPodGetsAnAddressThroughTheShippedConflist(t *testing.T) {
	l := newBareLab(t)
	ctx := t.Context()
	n, err := l.NewNode(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	// What the agent would write.
	env := "WGMESH_NETWORK=10.42.0.0/16\nWGMESH_SUBNET=10.42.7.0/24\nWGMESH_MTU=1420\nWGMESH_IPMASQ=true\n"
	if err := os.WriteFile(filepath.Join(n.Dir, "run-wgmesh", "subnet.env"), []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := l.AddPod(ctx, n, "p")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.IP.String(), "10.42.7.") {
		t.Errorf("pod IP %s not in the node subnet", p.IP)
	}
	if _, err := n.Run(ctx, "ping", "-c", "1", "-W", "2", p.IP.String()); err != nil {
		t.Errorf("node cannot reach its pod: %v", err)
	}
	if err := l.DelPod(context.Background(), p); err != nil {
		t.Errorf("DEL: %v", err)
	}
}

func TestAPIServerAnswersOnlyInsideTheControlPlaneNamespace(t *testing.T) {
	l := newBareLab(t)
	ctx := t.Context()
	if err := l.startAPI(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Client.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); err != nil {
		t.Fatalf("API through the control-plane namespace: %v", err)
	}
	// From the machine's own namespace the address does not even exist.
	if out, err := runCmd(ctx, "ip", "-4", "addr", "show"); err != nil || strings.Contains(out, ControlPlaneIP.String()) {
		t.Errorf("the machine's namespace has %s: %s %v", ControlPlaneIP, out, err)
	}
}

func TestAgentTokenHasTheDeployRBACAndNotAdmin(t *testing.T) {
	l := newBareLab(t)
	ctx := t.Context()
	if err := l.startAPI(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.ApplyAgentRBAC(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.ApplyAgentRBAC(ctx); err != nil {
		t.Fatalf("second apply (idempotent): %v", err)
	}
	tok, err := l.AgentToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := kubernetes.NewForConfig(l.RestConfigFor(tok))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ns, verb, group, resource, sub string
		want                           bool
	}{
		{"", "watch", "", "nodes", "", true},
		{"", "patch", "", "nodes", "status", true},
		{AgentNamespace, "create", "coordination.k8s.io", "leases", "", true},
		{"", "delete", "", "nodes", "", false},
		{AgentNamespace, "get", "", "secrets", "", false},
		{"default", "create", "", "pods", "", false},
	} {
		r, err := agent.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authzv1.ResourceAttributes{Namespace: c.ns, Verb: c.verb, Group: c.group, Resource: c.resource, Subresource: c.sub},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != c.want {
			t.Errorf("agent may %s %s/%s in %q: %v, want %v", c.verb, c.resource, c.sub, c.ns, r.Status.Allowed, c.want)
		}
	}
}
