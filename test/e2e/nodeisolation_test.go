//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/wgmesh/wgmesh/internal/kube"
	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// nodeClaim is the user extra the API server puts in a pod-bound token.
const nodeClaim = "authentication.kubernetes.io/node-name"

// Each agent runs with a token bound to a Pod on its node, as the kubelet
// projects one into the DaemonSet's pods, and deploy/'s node-isolation
// policy is in place before the agents start: the mesh comes up (Leases
// reserved, annotations published, NetworkUnavailable cleared, pods reach
// each other), node1's token is refused everything on node2 and its Lease
// with the policy's message, and is allowed its own Node and Lease. Lease
// mode (no --allocate-node-cidrs) so that the Leases are in play.
func TestNodeIsolationPolicyConfinesEachAgentToItsOwnNodeAndLease(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := t.Context()
	dir, err := os.MkdirTemp("", "wgmesh-lab-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	l, err := lab.Start(ctx, lab.Config{Dir: dir, NoCIDRAllocation: true})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	c := &cluster{Lab: l}
	t.Cleanup(c.Down)
	if err := c.ApplyAgentRBAC(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyNodeIsolationPolicy(ctx); err != nil {
		t.Fatal(err)
	}

	tokens := map[string]string{}
	for _, name := range []string{"node1", "node2"} {
		n, err := c.NewNode(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.RegisterNode(ctx, n); err != nil {
			t.Fatal(err)
		}
		tok, err := c.AgentPodToken(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		tokens[name] = tok
		if err := c.SetAgentToken(n, tok); err != nil {
			t.Fatal(err)
		}
	}
	client := func(tok string) kubernetes.Interface {
		cs, err := kubernetes.NewForConfig(c.RestConfigFor(tok))
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	node1 := client(tokens["node1"])

	// The API server sees node1's token as the agent's ServiceAccount on node1.
	ssr, err := node1.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u := ssr.Status.UserInfo; u.Username != "system:serviceaccount:"+lab.AgentNamespace+":"+lab.AgentServiceAccount ||
		fmt.Sprint(u.Extra[nodeClaim]) != "[node1]" {
		t.Fatalf("pod-bound token authenticates as %s with %s=%v, want the agent's ServiceAccount on node1", u.Username, nodeClaim, u.Extra[nodeClaim])
	}

	// A new policy is enforced once the API server's policy cache has it.
	otherNode := "wgmesh: the agent on node 'node1' may not update Node node2: an agent may change only its own Node"
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := patchNode(ctx, node1, "node2", "", `{"metadata":{"annotations":{"wgmesh.io/public-key":"probe"}}}`, true)
		if err != nil && strings.Contains(err.Error(), otherNode) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy not enforced after 30s: node1 patching node2 gave %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// The API server type-checks each policy against the kinds it matches
	// (a warning, not a refusal, so it is checked here).
	for _, name := range []string{"wgmesh-node-isolation-nodes", "wgmesh-node-isolation-leases"} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			p, err := c.Client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if p.Status.ObservedGeneration == p.Generation && p.Status.TypeChecking != nil {
				if w := p.Status.TypeChecking.ExpressionWarnings; len(w) > 0 {
					t.Errorf("the API server's type check of %s warns: %+v", name, w)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not type-checked after 30s: %+v", name, p.Status)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	// The real agents under the policy: the mesh converges as before.
	for _, n := range c.Nodes() {
		if err := c.StartAgent(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitMesh(ctx, 90*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, c.agentLogs())
	}
	for _, n := range c.Nodes() {
		if err := c.WaitAgentReady(ctx, n, 30*time.Second); err != nil {
			t.Fatalf("%v\n%s", err, c.agentLogs())
		}
		p, err := c.AddPod(ctx, n, n.Name+"-a")
		if err != nil {
			t.Fatal(err)
		}
		c.pods = append(c.pods, p)
	}
	requireMatrix(t, ctx, c, c.pods)
	leaseOf := map[string]*coordv1.Lease{}
	leases, err := c.Client.CoordinationV1().Leases(lab.AgentNamespace).List(ctx, metav1.ListOptions{LabelSelector: kube.LabelSubnetLease})
	if err != nil {
		t.Fatal(err)
	}
	for i := range leases.Items {
		leaseOf[ptr.Deref(leases.Items[i].Spec.HolderIdentity, "")] = &leases.Items[i]
	}
	for _, n := range c.Nodes() {
		node, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if node.Annotations[mesh.AnnotationPublicKey] == "" || node.Annotations[mesh.AnnotationEndpoint] == "" {
			t.Errorf("%s: agent did not publish its key and endpoint: %v", n.Name, node.Annotations)
		}
		if !networkAvailable(node) {
			t.Errorf("%s: NetworkUnavailable not cleared by the agent: %+v", n.Name, node.Status.Conditions)
		}
		if leaseOf[n.Name] == nil {
			t.Errorf("%s holds no subnet Lease", n.Name)
		}
	}
	if t.Failed() {
		t.Fatal(c.agentLogs())
	}
	for _, n := range c.Nodes() {
		if b, _ := os.ReadFile(n.Agent.Log); strings.Contains(string(b), "wgmesh-node-isolation") || strings.Contains(strings.ToLower(string(b)), "forbidden") {
			t.Errorf("%s: the agent was refused something under the policy:\n%s", n.Name, b)
		}
	}

	// doctor names the mode: bound to node1, policy enforced.
	n1 := c.Node("node1")
	out, err := n1.Run(ctx, c.AgentCommand(n1, "doctor")...)
	t.Logf("wgmesh-agent doctor on node1 (err=%v):\n%s", err, out)
	if err != nil || !strings.Contains(out, "[info] NodeIsolation: the agent's token is bound to node node1 and the API server enforces the node-isolation policy") {
		t.Errorf("doctor does not report the node-isolation policy in force")
	}

	lease2 := leaseOf["node2"]
	lease2Msg := func(op, holder string) string {
		return fmt.Sprintf("wgmesh: the agent on node 'node1' may not %s Lease %s/%s (holder '%s", op, lab.AgentNamespace, lease2.Name, holder)
	}
	const leaseRule = "an agent may change only the wgmesh subnet Leases (label wgmesh.io/subnet-lease) its own node holds"
	ownMeta := "wgmesh: the agent on node 'node1' may change only wgmesh.io/ labels and annotations of Node node1, not its spec, other labels or annotations, finalizers or owners"
	ownStatus := "wgmesh: the agent on node 'node1' may change only the NetworkUnavailable condition in the status of Node node1"
	free := "wgmesh-subnet-10-42-250-0-24"

	// Denied, for real (no dry run): had one gone through, the mesh would
	// show it too.
	for _, tc := range []struct {
		name string
		do   func() error
		want []string
	}{
		{"node2's key", func() error {
			return patchNode(ctx, node1, "node2", "", `{"metadata":{"annotations":{"wgmesh.io/public-key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}}`, false)
		}, []string{otherNode}},
		{"node2's endpoint", func() error {
			return patchNode(ctx, node1, "node2", "", `{"metadata":{"annotations":{"wgmesh.io/endpoint":"172.31.0.99:51820"}}}`, false)
		}, []string{otherNode}},
		{"node2's labels", func() error {
			return patchNode(ctx, node1, "node2", "", `{"metadata":{"labels":{"e2e":"x"}}}`, false)
		}, []string{otherNode}},
		{"node2's taints", func() error {
			return patchNode(ctx, node1, "node2", "", `{"spec":{"taints":[{"key":"e2e","effect":"NoSchedule"}]}}`, false)
		}, []string{otherNode}},
		{"node2's NetworkUnavailable", func() error {
			return patchNode(ctx, node1, "node2", "status", `{"status":{"conditions":[{"type":"NetworkUnavailable","status":"True","reason":"e2e"}]}}`, false)
		}, []string{otherNode}},
		{"node2's Lease taken over", func() error {
			l := lease2.DeepCopy()
			l.Spec.HolderIdentity = ptr.To("node1")
			_, err := node1.CoordinationV1().Leases(lab.AgentNamespace).Update(ctx, l, metav1.UpdateOptions{})
			return err
		}, []string{lease2Msg("update", "node1' after, 'node2' before)"), leaseRule}},
		{"node2's Lease relabelled", func() error {
			l := lease2.DeepCopy()
			delete(l.Labels, kube.LabelSubnetLease)
			_, err := node1.CoordinationV1().Leases(lab.AgentNamespace).Update(ctx, l, metav1.UpdateOptions{})
			return err
		}, []string{lease2Msg("update", "node2' after, 'node2' before)"), leaseRule}},
		{"node2's Lease released", func() error {
			return node1.CoordinationV1().Leases(lab.AgentNamespace).Delete(ctx, lease2.Name, metav1.DeleteOptions{})
		}, []string{lease2Msg("delete", "node2')"), leaseRule}},
		{"a Lease for node2", func() error {
			_, err := node1.CoordinationV1().Leases(lab.AgentNamespace).Create(ctx, subnetLease(free, "node2"), metav1.CreateOptions{})
			return err
		}, []string{"may not create Lease " + lab.AgentNamespace + "/" + free + " (holder 'node2')", leaseRule}},
		{"a Lease that is not a subnet Lease", func() error {
			ll := subnetLease("kube-scheduler", "node1")
			ll.Labels = nil
			_, err := node1.CoordinationV1().Leases(lab.AgentNamespace).Create(ctx, ll, metav1.CreateOptions{})
			return err
		}, []string{"may not create Lease " + lab.AgentNamespace + "/kube-scheduler (holder 'node1')", leaseRule}},
		{"its own node's other labels", func() error {
			return patchNode(ctx, node1, "node1", "", `{"metadata":{"labels":{"node-restriction.kubernetes.io/e2e":"x"}}}`, false)
		}, []string{ownMeta}},
		{"its own node's spec (unschedulable)", func() error {
			return patchNode(ctx, node1, "node1", "", `{"spec":{"unschedulable":true}}`, false)
		}, []string{ownMeta}},
		{"its own node's Ready condition", func() error {
			return patchNode(ctx, node1, "node1", "status", `{"status":{"conditions":[{"type":"Ready","status":"False","reason":"e2e"}]}}`, false)
		}, []string{ownStatus}},
	} {
		err := tc.do()
		if !apierrors.IsForbidden(err) {
			t.Errorf("node1 changing %s: %v, want Forbidden by the policy", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("node1 changing %s: %q\n does not say %q", tc.name, err, w)
			}
		}
		t.Logf("node1 changing %s: denied: %v", tc.name, err)
	}

	// Allowed: its own Node's wgmesh.io/ keys and NetworkUnavailable, its
	// own Lease. Dry runs go through admission like real requests; the ones
	// that would disturb the mesh are dry.
	own := leaseOf["node1"]
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"its own wgmesh.io/ annotation", func() error {
			if err := patchNode(ctx, node1, "node1", "", `{"metadata":{"annotations":{"wgmesh.io/e2e":"x"}}}`, false); err != nil {
				return err
			}
			return patchNode(ctx, node1, "node1", "", `{"metadata":{"annotations":{"wgmesh.io/e2e":null}}}`, false)
		}},
		{"its own key and endpoint (dry run)", func() error {
			return patchNode(ctx, node1, "node1", "", `{"metadata":{"annotations":{"wgmesh.io/public-key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","wgmesh.io/endpoint":"172.31.0.99:51820"}}}`, true)
		}},
		{"its own wgmesh.io/ label (the hostprep sidecar's)", func() error {
			return patchNode(ctx, node1, "node1", "", `{"metadata":{"labels":{"wgmesh.io/longhorn-ready":"true"}}}`, true)
		}},
		{"its own NetworkUnavailable", func() error {
			return patchNode(ctx, node1, "node1", "status", `{"status":{"conditions":[{"type":"NetworkUnavailable","status":"False","reason":"`+kube.ReadyReason+`","message":"e2e"}]}}`, false)
		}},
		{"its own Lease", func() error {
			l, err := node1.CoordinationV1().Leases(lab.AgentNamespace).Get(ctx, own.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			l.Annotations["wgmesh.io/e2e"] = "x"
			_, err = node1.CoordinationV1().Leases(lab.AgentNamespace).Update(ctx, l, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"a new Lease of its own (dry run)", func() error {
			_, err := node1.CoordinationV1().Leases(lab.AgentNamespace).Create(ctx, subnetLease(free, "node1"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"releasing its own Lease (dry run)", func() error {
			return node1.CoordinationV1().Leases(lab.AgentNamespace).Delete(ctx, own.Name, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}},
	} {
		if err := tc.do(); err != nil {
			t.Errorf("node1 changing %s: %v, want allowed", tc.name, err)
		}
	}

	// Not the agent's pod-bound token: the policy does not apply. An admin
	// (and kubelets, controllers) as before; the agent's ServiceAccount with
	// a token bound to no pod (no node claim) is not matched either, which
	// is the residual risk docs/security.md states.
	if err := patchNode(ctx, c.Client, "node2", "", `{"metadata":{"labels":{"e2e":"admin"}}}`, true); err != nil {
		t.Errorf("admin labelling node2: %v", err)
	}
	unbound, err := c.AgentToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := patchNode(ctx, client(unbound), "node2", "", `{"metadata":{"annotations":{"wgmesh.io/e2e":"x"}}}`, true); err != nil {
		t.Errorf("agent ServiceAccount without node claim patching node2: %v (the policy matches only tokens with the claim)", err)
	}

	// doctor with that token says the policy cannot apply to it. The
	// running agent keeps the token it started with.
	n2 := c.Node("node2")
	if err := c.SetAgentToken(n2, unbound); err != nil {
		t.Fatal(err)
	}
	out, err = n2.Run(ctx, c.AgentCommand(n2, "doctor")...)
	t.Logf("wgmesh-agent doctor on node2 with a token bound to no pod (err=%v):\n%s", err, out)
	if !strings.Contains(out, "[warning] NoNodeClaim: the agent's token carries no node claim") {
		t.Errorf("doctor does not warn that the token carries no node claim")
	}
	if err := c.SetAgentToken(n2, tokens["node2"]); err != nil {
		t.Fatal(err)
	}

	// Nothing got through: the mesh is as it was.
	for name, l := range leaseOf {
		cur, err := c.Client.CoordinationV1().Leases(lab.AgentNamespace).Get(ctx, l.Name, metav1.GetOptions{})
		if err != nil || ptr.Deref(cur.Spec.HolderIdentity, "") != name {
			t.Errorf("Lease %s of %s: %v %v", l.Name, name, err, cur)
		}
	}
	requireMatrix(t, ctx, c, c.pods)
}

// patchNode merge-patches (strategic merge for status, where conditions
// merge by type) a Node or its subresource, optionally as a dry run.
func patchNode(ctx context.Context, cs kubernetes.Interface, name, sub, patch string, dry bool) error {
	opts := metav1.PatchOptions{}
	if dry {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	pt := types.MergePatchType
	var subs []string
	if sub != "" {
		pt, subs = types.StrategicMergePatchType, []string{sub}
	}
	if !json.Valid([]byte(patch)) {
		return fmt.Errorf("invalid patch %s", patch)
	}
	_, err := cs.CoreV1().Nodes().Patch(ctx, name, pt, []byte(patch), opts, subs...)
	return err
}

func subnetLease(name, holder string) *coordv1.Lease {
	return &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: lab.AgentNamespace, Labels: map[string]string{kube.LabelSubnetLease: "true"}},
		Spec:       coordv1.LeaseSpec{HolderIdentity: ptr.To(holder)},
	}
}

func networkAvailable(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			return c.Status == corev1.ConditionFalse
		}
	}
	return false
}
