package kube

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/wgmesh/wgmesh/internal/mesh"
)

// ClusterConfig says who this agent is and where its Leases live.
type ClusterConfig struct {
	NodeName string
	// Namespace holds the subnet Leases (the agent's own, kube-system).
	Namespace    string
	ClusterCIDRs []netip.Prefix
	Log          *slog.Logger
}

// Cluster is everything the agent does with the API, behind one value: the
// informer caches, annotation publishing, subnet reservation, the
// NetworkUnavailable condition and problem Events.
type Cluster struct {
	client  kubernetes.Interface
	cfg     ClusterConfig
	watcher *Watcher
	events  *ProblemEvents
	log     *slog.Logger

	mu sync.Mutex
	// networkSet: our NetworkUnavailable=False patch succeeded and no
	// update has replaced it since. The cache may lag behind our own
	// patch for a moment; this keeps a reconcile in that moment from
	// patching again.
	networkSet bool
}

// NewCluster prepares the informers; Start runs them.
func NewCluster(client kubernetes.Interface, cfg ClusterConfig) *Cluster {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Cluster{
		client:  client,
		cfg:     cfg,
		watcher: NewWatcher(client, cfg.Namespace, cfg.ClusterCIDRs),
		events:  NewProblemEvents(client, cfg.NodeName),
		log:     cfg.Log,
	}
}

// Start registers onChange and runs the informers until ctx ends; it
// returns once the caches hold the first full list.
func (c *Cluster) Start(ctx context.Context, onChange func(Change)) error {
	wrapped := func(ch Change) {
		if ch.NetworkLost {
			c.mu.Lock()
			c.networkSet = false
			c.mu.Unlock()
		}
		onChange(ch)
	}
	if err := c.watcher.OnChange(c.cfg.NodeName, wrapped); err != nil {
		return err
	}
	return c.watcher.Start(ctx)
}

// Nodes is every Node as a mesh.Node (see Watcher.Nodes).
func (c *Cluster) Nodes() []mesh.Node { return c.watcher.Nodes() }

// self returns this agent's Node object, from the cache or else the API.
func (c *Cluster) self(ctx context.Context) (*corev1.Node, error) {
	if n, ok := c.watcher.Node(c.cfg.NodeName); ok {
		return n, nil
	}
	n, err := c.client.CoreV1().Nodes().Get(ctx, c.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("node %q does not exist in the API (is --node-name / NODE_NAME right, and has the kubelet registered?)", c.cfg.NodeName)
		}
		return nil, fmt.Errorf("get node %s: %w", c.cfg.NodeName, err)
	}
	return n, nil
}

// Publish sets this node's wgmesh annotations where they differ (one PATCH
// or none) and returns the keys it changed.
func (c *Cluster) Publish(ctx context.Context, want map[string]string) (map[string]string, error) {
	n, err := c.self(ctx)
	if err != nil {
		return nil, err
	}
	return PublishAnnotations(ctx, c.client, n, want)
}

// Reserve returns this node's subnet of size bits in cluster, reserving it
// through a Lease if it holds none yet.
func (c *Cluster) Reserve(ctx context.Context, cluster netip.Prefix, bits int) (netip.Prefix, error) {
	n, err := c.self(ctx)
	if err != nil {
		return netip.Prefix{}, err
	}
	r := &Reserver{Client: c.client, Namespace: c.cfg.Namespace, Node: n, Log: c.log}
	return r.Reserve(ctx, cluster, bits)
}

// ReleaseOrphans deletes subnet Leases whose holder Node is gone.
func (c *Cluster) ReleaseOrphans(ctx context.Context) ([]string, error) {
	exists := func(name string) bool { _, ok := c.watcher.Node(name); return ok }
	return ReleaseOrphans(ctx, c.client, c.cfg.Namespace, c.watcher.Leases(), exists, c.log)
}

// ReleaseSuperseded deletes this node's subnet Leases once its spec has a
// pod CIDR (see SupersededLeases), logging one line when it deletes any. It
// reads only the caches, so the common case (nothing to release) costs no
// request.
func (c *Cluster) ReleaseSuperseded(ctx context.Context) ([]string, error) {
	n, ok := c.watcher.Node(c.cfg.NodeName)
	if !ok {
		return nil, nil
	}
	stale := SupersededLeases(n, c.watcher.Leases())
	if len(stale) == 0 {
		return nil, nil
	}
	released, err := ReleaseLeases(ctx, c.client, c.cfg.Namespace, stale)
	if len(released) > 0 {
		c.log.Info("subnet lease released: the node's spec.podCIDR wins", "node", c.cfg.NodeName,
			"podCIDRs", NodeFromAPI(n).PodCIDRs, "leases", released, "namespace", c.cfg.Namespace)
	}
	return released, err
}

// SetNetworkAvailable sets NetworkUnavailable=False on this node unless it
// already says so.
func (c *Cluster) SetNetworkAvailable(ctx context.Context) (bool, error) {
	c.mu.Lock()
	set := c.networkSet
	c.mu.Unlock()
	if set {
		return false, nil
	}
	n, err := c.self(ctx)
	if err != nil {
		return false, err
	}
	changed, err := SetNetworkAvailable(ctx, c.client, n, time.Now())
	if err == nil {
		c.mu.Lock()
		c.networkSet = true
		c.mu.Unlock()
	}
	return changed, err
}

// ReportProblems records Events for new or changed problems.
func (c *Cluster) ReportProblems(ps []mesh.Problem) int { return c.events.Report(ps, c.log) }

// Close stops the Event broadcaster (the informers stop with Start's ctx).
func (c *Cluster) Close() { c.events.Close() }

// ListNodes reads every Node and subnet Lease once, without informers, for
// the status and doctor commands.
func ListNodes(ctx context.Context, client kubernetes.Interface, namespace string, clusterCIDRs []netip.Prefix) ([]mesh.Node, error) {
	nl, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	ll, err := client.CoordinationV1().Leases(namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelSubnetLease})
	if err != nil {
		return nil, fmt.Errorf("list subnet leases in %s: %w", namespace, err)
	}
	leases := make([]*coordv1.Lease, 0, len(ll.Items))
	for i := range ll.Items {
		leases = append(leases, &ll.Items[i])
	}
	reserved := LeaseSubnets(leases, clusterCIDRs)
	out := make([]mesh.Node, 0, len(nl.Items))
	for i := range nl.Items {
		n := NodeFromAPI(&nl.Items[i])
		if len(n.PodCIDRs) == 0 {
			n.PodCIDRs = reserved[n.Name]
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b mesh.Node) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// NewClient builds a clientset from kubeconfig, or from the in-cluster
// service account when kubeconfig is empty. timeout bounds every request
// (0: none; the status and doctor commands use a short one).
func NewClient(kubeconfig string, timeout time.Duration) (kubernetes.Interface, error) {
	return NewClientAs(FieldManager, kubeconfig, timeout)
}

// NewClientAs is NewClient for another wgmesh program: userAgent names it
// in the API server's logs and audit records.
func NewClientAs(userAgent, kubeconfig string, timeout time.Duration) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
		}
	} else {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig given and not running in a pod: %w", err)
		}
	}
	cfg.UserAgent = userAgent
	cfg.Timeout = timeout
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}
