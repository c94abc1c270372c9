package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Reserver reserves this node's pod subnet(s) through Leases when the control
// plane assigned none (k3s without --allocate-node-cidrs, or a plain
// kube-controller-manager without it).
type Reserver struct {
	Client    kubernetes.Interface
	Namespace string
	// Node is the Node object this agent runs for: its name is the Lease's
	// holderIdentity, its UID the Lease's ownerReference (so the garbage
	// collector removes the Lease when the Node is deleted).
	Node *corev1.Node
	Log  *slog.Logger
}

// SubnetLease is one reservation as read from the API.
type SubnetLease struct {
	Name   string
	Subnet netip.Prefix
	Holder string
}

// subnetLeases turns Leases into reservations, skipping anything that is not
// a canonical wgmesh subnet Lease.
func subnetLeases(ls []coordv1.Lease) []SubnetLease {
	var out []SubnetLease
	for _, l := range ls {
		p, ok := ParseSubnetLeaseName(l.Name)
		if !ok {
			continue
		}
		out = append(out, SubnetLease{Name: l.Name, Subnet: p, Holder: ptr.Deref(l.Spec.HolderIdentity, "")})
	}
	return out
}

// Reserve returns this node's subnet of size bits inside cluster. A subnet
// this node already holds is reused (a restart keeps its pods' subnet);
// otherwise it creates the Lease of the first free subnet. Create is the
// atomic step: AlreadyExists means another node was faster (or this node, in
// an earlier life), and the search goes on.
func (r *Reserver) Reserve(ctx context.Context, cluster netip.Prefix, bits int) (netip.Prefix, error) {
	cluster = cluster.Masked()
	list, err := r.Client.CoordinationV1().Leases(r.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelSubnetLease})
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list subnet leases in %s: %w", r.Namespace, err)
	}
	held := subnetLeases(list.Items)
	for i, l := range held {
		if l.Holder == r.Node.Name && l.Subnet.Bits() == bits && cluster.Contains(l.Subnet.Addr()) {
			if err := r.adopt(ctx, &list.Items[i]); err != nil {
				return netip.Prefix{}, err
			}
			return l.Subnet, nil
		}
	}

	var (
		got     netip.Prefix
		lastErr error
	)
	err = Subnets(cluster, bits, func(p netip.Prefix) bool {
		if slices.ContainsFunc(held, func(l SubnetLease) bool { return l.Subnet.Overlaps(p) }) {
			return true
		}
		ok, err := r.create(ctx, p)
		if err != nil {
			lastErr = err
			return false
		}
		if ok {
			got = p
			return false
		}
		return true
	})
	if err != nil {
		return netip.Prefix{}, err
	}
	if lastErr != nil {
		return netip.Prefix{}, lastErr
	}
	if !got.IsValid() {
		return netip.Prefix{}, fmt.Errorf("no free /%d subnet left in cluster CIDR %s (%d subnet leases in %s)", bits, cluster, len(held), r.Namespace)
	}
	return got, nil
}

// create tries to take p. It reports false when someone else holds it.
func (r *Reserver) create(ctx context.Context, p netip.Prefix) (bool, error) {
	now := metav1.NowMicro()
	lease := &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:            SubnetLeaseName(p),
			Namespace:       r.Namespace,
			Labels:          map[string]string{LabelSubnetLease: "true", "app.kubernetes.io/managed-by": FieldManager},
			Annotations:     map[string]string{AnnotationSubnet: p.String()},
			OwnerReferences: []metav1.OwnerReference{r.ownerRef()},
		},
		// No leaseDurationSeconds: this is a reservation that lives as long
		// as the Node, not a lock that expires.
		Spec: coordv1.LeaseSpec{HolderIdentity: ptr.To(r.Node.Name), AcquireTime: &now},
	}
	_, err := r.Client.CoordinationV1().Leases(r.Namespace).Create(ctx, lease, metav1.CreateOptions{FieldManager: FieldManager})
	if err == nil {
		r.Log.Info("subnet reserved", "subnet", p, "lease", lease.Name, "namespace", r.Namespace)
		return true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return false, fmt.Errorf("create lease %s/%s: %w", r.Namespace, lease.Name, err)
	}
	cur, err := r.Client.CoordinationV1().Leases(r.Namespace).Get(ctx, lease.Name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil // released meanwhile; a later pass may take it
		}
		return false, fmt.Errorf("get lease %s/%s: %w", r.Namespace, lease.Name, err)
	}
	if ptr.Deref(cur.Spec.HolderIdentity, "") != r.Node.Name {
		return false, nil
	}
	if err := r.adopt(ctx, cur); err != nil {
		return false, err
	}
	return true, nil
}

func (r *Reserver) ownerRef() metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: r.Node.Name, UID: r.Node.UID}
}

// adopt makes a Lease this node holds point at the current Node object. A
// Node deleted and re-registered under the same name has a new UID; without
// this the garbage collector would remove the Lease of a live node.
func (r *Reserver) adopt(ctx context.Context, l *coordv1.Lease) error {
	want := r.ownerRef()
	if len(l.OwnerReferences) == 1 && l.OwnerReferences[0].UID == want.UID {
		return nil
	}
	l = l.DeepCopy()
	l.OwnerReferences = []metav1.OwnerReference{want}
	if _, err := r.Client.CoordinationV1().Leases(r.Namespace).Update(ctx, l, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		return fmt.Errorf("update owner of lease %s/%s: %w", r.Namespace, l.Name, err)
	}
	r.Log.Info("subnet lease adopted", "lease", l.Name, "nodeUID", want.UID)
	return nil
}

// SupersededLeases returns the subnet Leases node holds although its spec
// now has a pod CIDR. spec.podCIDR(s) always win over a Lease: the
// controller manager allocates from its own bitmap and knows nothing of
// Leases, so a node that reserved a subnet before the controller manager
// filled its spec must drop the Lease (and use the spec), or the Lease only
// blocks a subnet that nobody uses.
func SupersededLeases(node *corev1.Node, leases []*coordv1.Lease) []*coordv1.Lease {
	if len(NodeFromAPI(node).PodCIDRs) == 0 {
		return nil
	}
	var out []*coordv1.Lease
	for _, l := range leases {
		if _, ok := ParseSubnetLeaseName(l.Name); ok && ptr.Deref(l.Spec.HolderIdentity, "") == node.Name {
			out = append(out, l)
		}
	}
	return out
}

// ReleaseLeases deletes leases, each with a UID precondition so a Lease
// re-created meanwhile survives, and returns the names it deleted (a Lease
// already gone is not an error).
func ReleaseLeases(ctx context.Context, c kubernetes.Interface, namespace string, leases []*coordv1.Lease) ([]string, error) {
	var released []string
	var errs []error
	for _, l := range leases {
		err := c.CoordinationV1().Leases(namespace).Delete(ctx, l.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &l.UID}})
		switch {
		case err == nil:
			released = append(released, l.Name)
		case !apierrors.IsNotFound(err) && !apierrors.IsConflict(err):
			errs = append(errs, fmt.Errorf("delete lease %s/%s: %w", namespace, l.Name, err))
		}
	}
	return released, errors.Join(errs...)
}

// ReleaseOrphans deletes subnet Leases whose holder Node no longer exists.
// The garbage collector does the same through the ownerReference; this
// covers clusters where it is slow or a Lease lost its owner. nodeExists is
// consulted first (a cache); a Lease is deleted only after a live GET says
// NotFound, with a UID precondition so a Lease re-created meanwhile survives.
func ReleaseOrphans(ctx context.Context, c kubernetes.Interface, namespace string, leases []*coordv1.Lease, nodeExists func(string) bool, log *slog.Logger) ([]string, error) {
	var released []string
	var errs []error
	for _, l := range leases {
		if _, ok := ParseSubnetLeaseName(l.Name); !ok {
			continue
		}
		holder := ptr.Deref(l.Spec.HolderIdentity, "")
		if holder != "" && nodeExists(holder) {
			continue
		}
		if holder != "" {
			_, err := c.CoreV1().Nodes().Get(ctx, holder, metav1.GetOptions{})
			if err == nil {
				continue
			}
			if !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("get node %s: %w", holder, err))
				continue
			}
		}
		err := c.CoordinationV1().Leases(namespace).Delete(ctx, l.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &l.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("delete lease %s/%s: %w", namespace, l.Name, err))
			continue
		}
		if err == nil {
			log.Info("subnet released", "lease", l.Name, "holder", holder, "reason", "node no longer exists")
			released = append(released, l.Name)
		}
	}
	return released, errors.Join(errs...)
}
