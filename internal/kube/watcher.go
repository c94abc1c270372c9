package kube

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	coordlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/wgmesh/wgmesh/internal/mesh"
)

// Watcher keeps an informer cache of Nodes and of wgmesh subnet Leases and
// hands out the cluster as plain mesh.Node values.
type Watcher struct {
	client       kubernetes.Interface
	namespace    string
	clusterCIDRs []netip.Prefix

	nodeFactory  informers.SharedInformerFactory
	leaseFactory informers.SharedInformerFactory
	nodes        corelisters.NodeLister
	leases       coordlisters.LeaseLister
	nodeInformer cache.SharedIndexInformer
	leaseInf     cache.SharedIndexInformer
}

// NewWatcher prepares informers; call OnChange, then Start. clusterCIDRs
// bound which Lease subnets are believed (a Lease outside them is ignored).
func NewWatcher(client kubernetes.Interface, namespace string, clusterCIDRs []netip.Prefix) *Watcher {
	w := &Watcher{client: client, namespace: namespace, clusterCIDRs: clusterCIDRs}
	// No informer resync: the agent has its own level-triggered resync.
	w.nodeFactory = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(slimNode))
	w.leaseFactory = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelSubnetLease }))
	w.nodeInformer = w.nodeFactory.Core().V1().Nodes().Informer()
	w.nodes = w.nodeFactory.Core().V1().Nodes().Lister()
	w.leaseInf = w.leaseFactory.Coordination().V1().Leases().Informer()
	w.leases = w.leaseFactory.Coordination().V1().Leases().Lister()
	return w
}

// Change says what an informer saw, for the agent's log and its decision
// whether to look for orphaned Leases.
type Change struct {
	Kind    string // "node" or "lease"
	Name    string
	Deleted bool
	// NetworkLost: this node's NetworkUnavailable=False (ours) was replaced.
	NetworkLost bool
}

// OnChange registers fn for every change that can alter the mesh. Node
// updates that change nothing the mesh reads (the kubelet's status
// heartbeats) are filtered out, except for the agent's own node whose
// conditions and annotations it maintains.
func (w *Watcher) OnChange(self string, fn func(Change)) error {
	_, err := w.nodeInformer.AddEventHandler(handler("node", fn, func(o, n *corev1.Node) (Change, bool) {
		if n.Name == self && !sameNetworkCondition(o, n) {
			return Change{Kind: "node", Name: n.Name, NetworkLost: networkReady(o) && !networkReady(n)}, true
		}
		return Change{Kind: "node", Name: n.Name}, !reflect.DeepEqual(NodeFromAPI(o), NodeFromAPI(n))
	}))
	if err != nil {
		return fmt.Errorf("node event handler: %w", err)
	}
	_, err = w.leaseInf.AddEventHandler(handler("lease", fn, func(o, n *coordv1.Lease) (Change, bool) {
		return Change{Kind: "lease", Name: n.Name}, ptr.Deref(o.Spec.HolderIdentity, "") != ptr.Deref(n.Spec.HolderIdentity, "")
	}))
	if err != nil {
		return fmt.Errorf("lease event handler: %w", err)
	}
	return nil
}

// handler turns an informer's events on objects of type T into Changes of
// kind: every add and delete (also one seen only as a tombstone), and the
// updates that update says matter.
func handler[T metav1.Object](kind string, fn func(Change), update func(o, n T) (Change, bool)) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if x, ok := obj.(T); ok {
				fn(Change{Kind: kind, Name: x.GetName()})
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(T)
			n, ok2 := newObj.(T)
			if !ok1 || !ok2 {
				return
			}
			if c, ok := update(o, n); ok {
				fn(c)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if x, ok := obj.(T); ok {
				fn(Change{Kind: kind, Name: x.GetName(), Deleted: true})
			}
		},
	}
}

// sameNetworkCondition reports whether the NetworkUnavailable condition is
// unchanged between o and n (the kubelet rewrites its own conditions often;
// only ours matters to the agent).
func sameNetworkCondition(o, n *corev1.Node) bool {
	find := func(x *corev1.Node) corev1.NodeCondition {
		for _, c := range x.Status.Conditions {
			if c.Type == corev1.NodeNetworkUnavailable {
				return corev1.NodeCondition{Status: c.Status, Reason: c.Reason}
			}
		}
		return corev1.NodeCondition{}
	}
	return find(o) == find(n)
}

// Start runs the informers until ctx ends and waits for their first list.
func (w *Watcher) Start(ctx context.Context) error {
	w.nodeFactory.Start(ctx.Done())
	w.leaseFactory.Start(ctx.Done())
	for typ, ok := range w.nodeFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("node cache did not sync (%v): %w", typ, ctx.Err())
		}
	}
	for typ, ok := range w.leaseFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("lease cache did not sync (%v): %w", typ, ctx.Err())
		}
	}
	return nil
}

// Node returns the cached Node object (nil, false when absent). Callers must
// not modify it.
func (w *Watcher) Node(name string) (*corev1.Node, bool) {
	n, err := w.nodes.Get(name)
	if err != nil {
		return nil, false
	}
	return n, true
}

// Leases returns the cached wgmesh subnet Leases.
func (w *Watcher) Leases() []*coordv1.Lease {
	ls, _ := w.leases.List(labels.Everything())
	return ls
}

// Nodes returns every Node as a mesh.Node, sorted by name. A Node without a
// pod CIDR in its spec gets the subnets of the Leases it holds: those are
// the control-plane-vouched reservations (only one Lease can exist per
// subnet), never an annotation the node wrote about itself.
func (w *Watcher) Nodes() []mesh.Node {
	objs, _ := w.nodes.List(labels.Everything())
	reserved := LeaseSubnets(w.Leases(), w.clusterCIDRs)
	out := make([]mesh.Node, 0, len(objs))
	for _, o := range objs {
		n := NodeFromAPI(o)
		if len(n.PodCIDRs) == 0 {
			n.PodCIDRs = reserved[n.Name]
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b mesh.Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// LeaseSubnets maps holder node name -> the subnets it holds, sorted, taking
// only canonical wgmesh Lease names inside one of clusterCIDRs (all when
// clusterCIDRs is empty).
func LeaseSubnets(leases []*coordv1.Lease, clusterCIDRs []netip.Prefix) map[string][]netip.Prefix {
	out := map[string][]netip.Prefix{}
	for _, l := range leases {
		p, ok := ParseSubnetLeaseName(l.Name)
		holder := ptr.Deref(l.Spec.HolderIdentity, "")
		if !ok || holder == "" {
			continue
		}
		if len(clusterCIDRs) > 0 && !slices.ContainsFunc(clusterCIDRs, func(c netip.Prefix) bool {
			return c.Bits() <= p.Bits() && c.Contains(p.Addr())
		}) {
			continue
		}
		out[holder] = append(out[holder], p)
	}
	for _, ps := range out {
		slices.SortFunc(ps, func(a, b netip.Prefix) int {
			if c := a.Addr().Compare(b.Addr()); c != 0 {
				return c
			}
			return a.Bits() - b.Bits()
		})
	}
	return out
}
