package kube

import (
	"errors"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

func TestProbeIsolation(t *testing.T) {
	leases := schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}
	for _, tc := range []struct {
		name     string
		claim    []string
		leaseErr error
		want     Isolation
	}{
		{"enforced", []string{"node1"},
			apierrors.NewForbidden(leases, "x", errors.New("ValidatingAdmissionPolicy 'wgmesh-node-isolation-leases' with binding 'wgmesh-node-isolation-leases' denied request: wgmesh: ...")),
			Isolation{NodeClaim: "node1", Enforced: true}},
		{"claim, no policy", []string{"node1"}, nil, Isolation{NodeClaim: "node1"}},
		{"no claim", nil, nil, Isolation{}},
		{"RBAC refuses", []string{"node1"}, apierrors.NewForbidden(leases, "x", errors.New("rbac")), Isolation{NodeClaim: "node1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewClientset()
			c.PrependReactor("create", "selfsubjectreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
				r := &authnv1.SelfSubjectReview{}
				if tc.claim != nil {
					r.Status.UserInfo.Extra = map[string]authnv1.ExtraValue{NodeClaim: tc.claim}
				}
				return true, r, nil
			})
			var got *coordv1.Lease
			c.PrependReactor("create", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
				got = a.(k8stesting.CreateAction).GetObject().(*coordv1.Lease)
				if opts := a.(k8stesting.CreateActionImpl).CreateOptions; len(opts.DryRun) != 1 {
					t.Errorf("probe create options %+v: not a dry run", opts)
				}
				return true, got, tc.leaseErr
			})
			iso := ProbeIsolation(t.Context(), c, "kube-system")
			if iso.NodeClaim != tc.want.NodeClaim || iso.Enforced != tc.want.Enforced || iso.ClaimErr != nil {
				t.Errorf("got %+v, want %+v", iso, tc.want)
			}
			if (iso.ProbeErr != nil) != (tc.leaseErr != nil && !tc.want.Enforced) {
				t.Errorf("ProbeErr %v", iso.ProbeErr)
			}
			if got == nil || got.Labels[LabelSubnetLease] == "" || ptr.Deref(got.Spec.HolderIdentity, "") == tc.want.NodeClaim {
				t.Errorf("probe lease %+v: want a subnet Lease held by no node", got)
			}
		})
	}
}
