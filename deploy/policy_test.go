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
	if b := base(t); len(b.policies) == 0 {
		t.Error("base() should include the node-isolation component (what wgmesh.yaml holds)")
	}
	if o := decode(t, kustomize(t, filepath.Join(deployDir(t), "base"))); len(o.policies)+len(o.bindings) > 0 {
		t.Error("deploy/base must stay installable where the API server has no ValidatingAdmissionPolicy")
	}
}

func checkNodeIsolation(t *testing.T, o objects) {
	t.Helper()
	if len(o.policies) != 2 || len(o.bindings) != 2 {
		t.Fatalf("want the two ValidatingAdmissionPolicies (Nodes, Leases) and their bindings, have %v", o.orderedKinds)
	}
	bound := map[string]bool{}
	for _, b := range o.bindings {
		if !reflect.DeepEqual(b.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
			t.Errorf("binding %s: actions %v, want [Deny]", b.Name, b.Spec.ValidationActions)
		}
		if b.Spec.ParamRef != nil || b.Spec.MatchResources != nil {
			t.Errorf("binding %s narrows the policy: %+v", b.Name, b.Spec)
		}
		bound[b.Spec.PolicyName] = true
	}
	user := `request.userInfo.username == "system:serviceaccount:` + o.sa.Namespace + ":" + o.sa.Name + `"`
	// Every verb the agent's RBAC grants on Nodes and Leases is matched.
	matched := map[string]bool{}
	var all string
	for _, p := range o.policies {
		if !bound[p.Name] {
			t.Errorf("policy %s has no binding", p.Name)
		}
		if !strings.HasPrefix(p.Name, kube.IsolationPolicy) {
			t.Errorf("policy %s: doctor recognises denials by the prefix %q", p.Name, kube.IsolationPolicy)
		}
		if p.Spec.FailurePolicy == nil || *p.Spec.FailurePolicy != admissionv1.Fail {
			t.Errorf("%s: failurePolicy must be Fail: an unevaluated policy must not let a node through", p.Name)
		}
		if len(p.Spec.MatchConditions) != 1 || !strings.Contains(p.Spec.MatchConditions[0].Expression, user) ||
			!strings.Contains(p.Spec.MatchConditions[0].Expression, `"`+kube.NodeClaim+`"`) {
			t.Errorf("%s: matchConditions %+v, want the agent's ServiceAccount (%s) with a node claim", p.Name, p.Spec.MatchConditions, user)
		}
		for _, v := range p.Spec.Variables {
			all += v.Expression + "\n"
		}
		for _, r := range p.Spec.MatchConstraints.ResourceRules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, op := range r.Operations {
						matched[g+"/"+res+"/"+string(op)] = true
					}
				}
			}
		}
	}
	if !strings.Contains(all, `"`+kube.LabelSubnetLease+`"`) {
		t.Errorf("the policies do not name the subnet Lease label %q", kube.LabelSubnetLease)
	}
	for _, want := range []string{"/nodes/UPDATE", "/nodes/status/UPDATE", "coordination.k8s.io/leases/CREATE",
		"coordination.k8s.io/leases/UPDATE", "coordination.k8s.io/leases/DELETE"} {
		if !matched[want] {
			t.Errorf("no policy matches %s", want)
		}
	}
}
