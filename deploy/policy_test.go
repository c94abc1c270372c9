package deploy_test

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"

	"github.com/wgmesh/wgmesh/internal/kube"
)

// The policy that confines each agent to its own Node and subnet Leases
// ships in both overlays (and so in deploy/wgmesh.yaml), not in deploy/base,
// which is the install for API servers without the policy API. Its names
// must match the shipped ServiceAccount and the code's Lease label, or it
// silently protects nothing.
func TestNodeIsolationPolicyShipsWithTheOverlays(t *testing.T) {
	for name, o := range map[string]objects{
		"deploy/wgmesh.yaml":      shipped(t),
		"deploy/overlays/kubelet": decode(t, kustomize(t, filepath.Join(deployDir(t), "overlays", "kubelet"))),
	} {
		t.Run(name, func(t *testing.T) { checkNodeIsolation(t, o) })
	}
	if b := base(t); b.policy == nil {
		t.Error("base() should include the node-isolation component (what wgmesh.yaml holds)")
	}
	if o := decode(t, kustomize(t, filepath.Join(deployDir(t), "base"))); o.policy != nil || o.binding != nil {
		t.Error("deploy/base must stay installable where the API server has no ValidatingAdmissionPolicy")
	}
}

func checkNodeIsolation(t *testing.T, o objects) {
	t.Helper()
	p, b := o.policy, o.binding
	if p == nil || b == nil {
		t.Fatalf("no ValidatingAdmissionPolicy and binding (have %v)", o.orderedKinds)
	}
	if b.Spec.PolicyName != p.Name || !reflect.DeepEqual(b.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("binding %s: policy %q actions %v, want %q [Deny]", b.Name, b.Spec.PolicyName, b.Spec.ValidationActions, p.Name)
	}
	if b.Spec.ParamRef != nil || b.Spec.MatchResources != nil {
		t.Errorf("binding narrows the policy: %+v", b.Spec)
	}
	if p.Spec.FailurePolicy == nil || *p.Spec.FailurePolicy != admissionv1.Fail {
		t.Error("failurePolicy must be Fail: an unevaluated policy must not let a node through")
	}
	user := `request.userInfo.username == "system:serviceaccount:` + o.sa.Namespace + ":" + o.sa.Name + `"`
	if len(p.Spec.MatchConditions) != 1 || !strings.Contains(p.Spec.MatchConditions[0].Expression, user) ||
		!strings.Contains(p.Spec.MatchConditions[0].Expression, `"authentication.kubernetes.io/node-name"`) {
		t.Errorf("matchConditions %+v, want the agent's ServiceAccount (%s) with a node claim", p.Spec.MatchConditions, user)
	}
	var all string
	for _, v := range p.Spec.Variables {
		all += v.Expression + "\n"
	}
	for _, v := range p.Spec.Validations {
		all += v.Expression + "\n" + v.MessageExpression + "\n"
	}
	if !strings.Contains(all, `"`+kube.LabelSubnetLease+`"`) {
		t.Errorf("the policy does not name the subnet Lease label %q", kube.LabelSubnetLease)
	}
	// Every verb the agent's RBAC grants on Nodes and Leases is matched.
	matched := map[string]bool{}
	for _, r := range p.Spec.MatchConstraints.ResourceRules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, op := range r.Operations {
					matched[g+"/"+res+"/"+string(op)] = true
				}
			}
		}
	}
	for _, want := range []string{"/nodes/UPDATE", "/nodes/status/UPDATE", "coordination.k8s.io/leases/CREATE",
		"coordination.k8s.io/leases/UPDATE", "coordination.k8s.io/leases/DELETE"} {
		if !matched[want] {
			t.Errorf("policy does not match %s", want)
		}
	}
}
