package kube

import (
	"context"
	"fmt"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

const (
	// NodeClaim is the user extra the API server sets from a token bound
	// to a pod: the pod's node (Kubernetes 1.30+, ServiceAccountTokenPodNodeInfo).
	NodeClaim = "authentication.kubernetes.io/node-name"
	// IsolationPolicy starts the names of the ValidatingAdmissionPolicies
	// in deploy/components/node-isolation (-nodes, -leases): a denial
	// naming it is theirs.
	IsolationPolicy = "wgmesh-node-isolation"
	// isolationProbeHolder is no node's name, so the policy must refuse a
	// subnet Lease held by it.
	isolationProbeHolder = "wgmesh-doctor-probe-not-a-node"
)

// Isolation is what the API server does with this agent's requests: the node
// its credentials are bound to, and whether the node-isolation policy holds
// them to that node.
type Isolation struct {
	// NodeClaim is the node the API server sees the credentials bound to
	// ("" when they carry no node claim); ClaimErr why it is unknown.
	NodeClaim string
	ClaimErr  error
	// Enforced: a dry-run Lease for another holder was refused by the
	// policy; ProbeErr: the probe failed otherwise (Enforced unknown).
	Enforced bool
	ProbeErr error
}

// ProbeIsolation asks the API server who these credentials are
// (SelfSubjectReview, allowed to every authenticated user) and whether it
// refuses them a subnet Lease held by no node: a server-side dry run, so the
// admission policy runs and nothing is stored. Reading the policy object
// would need RBAC the agent does not have, and would not show the binding
// or the claim in effect.
func ProbeIsolation(ctx context.Context, c kubernetes.Interface, namespace string) Isolation {
	var iso Isolation
	ssr, err := c.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		iso.ClaimErr = fmt.Errorf("self subject review: %w", err)
	} else if v := ssr.Status.UserInfo.Extra[NodeClaim]; len(v) > 0 {
		iso.NodeClaim = v[0]
	}
	probe := &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "wgmesh-doctor-probe-", Namespace: namespace,
			Labels: map[string]string{LabelSubnetLease: "true"}},
		Spec: coordv1.LeaseSpec{HolderIdentity: ptr.To(isolationProbeHolder)},
	}
	_, err = c.CoordinationV1().Leases(namespace).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	switch {
	case err == nil:
	case apierrors.IsForbidden(err) && strings.Contains(err.Error(), IsolationPolicy):
		iso.Enforced = true
	default:
		iso.ProbeErr = fmt.Errorf("dry-run subnet lease for another holder: %w", err)
	}
	return iso
}
