// Package agent is wgmesh's reconcile loop on one node: it takes the cluster
// as plain mesh.Node values from the kube layer, computes the desired mesh
// (package mesh), hands it to the data plane, writes subnet.env for the CNI
// plugins, and reports readiness, problems and metrics.
//
// It holds no kernel or API code of its own: the data plane and the cluster
// are small interfaces (the real ones are dataplane.Dataplane and
// kube.Cluster; tests record what they are given), and
// TestAgentHoldsNoKernelCode fails on an import of netlink, wgctrl or
// iptables. It never flushes anything at start: a restart that finds the
// kernel right changes nothing.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/client-go/util/workqueue"

	"github.com/wgmesh/wgmesh/internal/dataplane"
	"github.com/wgmesh/wgmesh/internal/kube"
	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/metrics"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// Dataplane is what the agent needs from the kernel side.
type Dataplane interface {
	Apply(ctx context.Context, s mesh.State) (dataplane.Changes, error)
	Status(ctx context.Context) (dataplane.Status, error)
	// CheckDevice is a cheap look at whether the WireGuard device is
	// still there (see dataplane.Dataplane.CheckDevice).
	CheckDevice(ctx context.Context) error
	Close() error
}

// Cluster is what the agent needs from the API side.
type Cluster interface {
	Start(ctx context.Context, onChange func(kube.Change)) error
	Nodes() []mesh.Node
	Publish(ctx context.Context, want map[string]string) (map[string]string, error)
	Reserve(ctx context.Context, cluster netip.Prefix, bits int) (netip.Prefix, error)
	ReleaseOrphans(ctx context.Context) ([]string, error)
	ReleaseSuperseded(ctx context.Context) ([]string, error)
	SetNetworkAvailable(ctx context.Context) (bool, error)
	ReportProblems(ps []mesh.Problem) int
	Close()
}

var (
	_ Dataplane = (*dataplane.Dataplane)(nil)
	_ Cluster   = (*kube.Cluster)(nil)
)

// Config is the agent's wiring and settings.
type Config struct {
	NodeName   string
	PublicKey  wgtypes.Key // published; the private key stays in the data plane
	ListenPort int
	// ClusterCIDRs: at most one per family (--cluster-cidr).
	ClusterCIDRs []netip.Prefix
	// NodeCIDRMaskSize4/6 size the subnets reserved through Leases.
	NodeCIDRMaskSize4, NodeCIDRMaskSize6 int
	// ReservationDelay is how long this node's pod CIDR must stay empty
	// before the agent reserves a subnet through a Lease, so that it does
	// not race a controller manager that is about to fill spec.podCIDR.
	// 0 reserves at once.
	ReservationDelay time.Duration
	// MTU is the pod/device MTU; 0 = underlay MTU minus WireGuard overhead.
	MTU        int
	Masquerade bool
	SubnetFile string
	Resync     time.Duration
	// DeviceCheck is how often the agent looks whether the WireGuard
	// device is still there (a userspace device process can be killed
	// under it); a lost device gets a reconcile at once, which creates it
	// again. Default DefaultDeviceCheck.
	DeviceCheck time.Duration

	Cluster Cluster
	// NewDataplane creates or adopts the data plane once the MTU is known
	// (after this node's Node object has been read).
	NewDataplane func(mtu int) (Dataplane, error)
	// UnderlayMTU finds the MTU of the interface holding addr; default
	// dataplane.UnderlayMTU.
	UnderlayMTU func(addr netip.Addr) (int, error)
	Metrics     *metrics.Metrics
	Log         *slog.Logger
}

// Agent runs the reconcile loop.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	queue workqueue.TypedRateLimitingInterface[string]

	mu            sync.Mutex
	dp            Dataplane
	mtu           int
	last          mesh.State // last desired state applied without error
	synced        bool       // a reconcile succeeded
	envWritten    bool
	started       time.Time
	lastDone      time.Time // last reconcile that finished (ok or not)
	runningSince  time.Time // zero when no reconcile runs
	checkOrphans  bool
	lastReconcile error
	// noPodCIDRSince is when a reconcile first found this node without a
	// pod CIDR (spec or Lease); zero while it has one.
	noPodCIDRSince time.Time
	// programmed is the key and endpoint last programmed for each node
	// (kept while the Node exists, also when it stops being a peer), and
	// keyWarnings the KeyAndEndpointChanged warnings still shown, by node.
	// Memory only: a restarted agent remembers nothing, so a change that
	// happens while it is down is not warned about (docs/security.md).
	programmed  map[string]mesh.PeerIdentity
	keyWarnings map[string]keyWarning
}

// keyWarning is one KeyAndEndpointChanged warning and when it was first seen.
type keyWarning struct {
	problem mesh.Problem
	since   time.Time
}

// KeyChangeWarnFor is how long a KeyAndEndpointChanged warning stays among
// the agent's problems (the wgmesh_conflicts metric, /problems for doctor)
// after the change; its Event is recorded once, when it appears.
const KeyChangeWarnFor = 24 * time.Hour

// DefaultDeviceCheck bounds how long the mesh stays down after its
// device is lost, before the recreation; a check is one netlink request
// and one poll.
const DefaultDeviceCheck = time.Second

// key is the one work item: every event means "look at the whole cluster
// again", so bursts coalesce into one reconcile.
const key = "mesh"

// New checks cfg and builds an agent.
func New(cfg Config) (*Agent, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("node name is empty (set --node-name or NODE_NAME)")
	}
	if cfg.Cluster == nil || cfg.NewDataplane == nil {
		return nil, errors.New("agent needs a cluster and a data plane")
	}
	if cfg.SubnetFile == "" {
		cfg.SubnetFile = subnetenv.DefaultPath
	}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = mesh.DefaultListenPort
	}
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	if cfg.DeviceCheck <= 0 {
		cfg.DeviceCheck = DefaultDeviceCheck
	}
	if cfg.NodeCIDRMaskSize4 == 0 {
		cfg.NodeCIDRMaskSize4 = 24
	}
	if cfg.NodeCIDRMaskSize6 == 0 {
		cfg.NodeCIDRMaskSize6 = 64
	}
	if cfg.UnderlayMTU == nil {
		cfg.UnderlayMTU = dataplane.UnderlayMTU
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New(nil)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	var v4, v6 int
	for _, c := range cfg.ClusterCIDRs {
		if c.Addr().Is4() {
			v4++
		} else {
			v6++
		}
	}
	if v4 > 1 || v6 > 1 {
		return nil, fmt.Errorf("cluster CIDRs %v: at most one per address family", cfg.ClusterCIDRs)
	}
	now := time.Now()
	return &Agent{
		cfg: cfg,
		log: cfg.Log,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			// Failures retry after 1 s, doubling up to the resync period.
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, cfg.Resync),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "wgmesh"}),
		started:  now,
		lastDone: now,
	}, nil
}

// Run starts the informers and reconciles until ctx ends. It then stops,
// leaving the data plane in place (a kernel device keeps forwarding).
func (a *Agent) Run(ctx context.Context) error {
	defer a.cfg.Cluster.Close()
	err := a.cfg.Cluster.Start(ctx, func(ch kube.Change) {
		if ch.Deleted && ch.Kind == "node" {
			a.mu.Lock()
			a.checkOrphans = true
			a.mu.Unlock()
		}
		a.queue.Add(key)
	})
	if err != nil {
		return fmt.Errorf("start watching the API: %w", err)
	}
	a.log.Info("caches synced", "node", a.cfg.NodeName, "resync", a.cfg.Resync)

	var wg sync.WaitGroup
	wg.Go(func() {
		for a.processNext(ctx) {
		}
	})
	wg.Go(func() {
		t := time.NewTicker(a.cfg.Resync)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				a.mu.Lock()
				a.checkOrphans = true
				a.mu.Unlock()
				a.queue.Add(key)
			}
		}
	})
	wg.Go(func() { a.watchDevice(ctx) })
	a.queue.Add(key)
	<-ctx.Done()
	a.queue.ShutDown()
	wg.Wait()

	a.mu.Lock()
	dp := a.dp
	a.mu.Unlock()
	if dp != nil {
		if err := dp.Close(); err != nil {
			a.log.Warn("close data plane", "err", err)
		}
	}
	a.log.Info("stopped; data plane left in place")
	return nil
}

// watchDevice checks the data plane's device every DeviceCheck and asks
// for a reconcile when it is lost: the reconcile's Apply creates it again
// and writes the whole state back. Without this a device process killed
// under the agent would leave the mesh down until the next event or
// resync. It asks once per loss; a reconcile that fails to bring the
// device back retries on its own, with backoff.
func (a *Agent) watchDevice(ctx context.Context) {
	t := time.NewTicker(a.cfg.DeviceCheck)
	defer t.Stop()
	lost := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.mu.Lock()
		dp := a.dp
		a.mu.Unlock()
		if dp == nil {
			continue // no reconcile has set it up yet
		}
		err := dp.CheckDevice(ctx)
		switch {
		case errors.Is(err, wireguard.ErrDeviceLost):
			if !lost {
				a.log.Warn("WireGuard device lost; reconciling to create it again", "reason", err.Error())
				a.queue.Add(key)
			}
			lost = true
		case err != nil:
			a.log.Debug("device check", "err", err) // could not tell; look again next tick
		default:
			lost = false
		}
	}
}

func (a *Agent) processNext(ctx context.Context) bool {
	k, shutdown := a.queue.Get()
	if shutdown {
		return false
	}
	defer a.queue.Done(k)
	if ctx.Err() != nil {
		return true
	}
	if err := a.Reconcile(ctx); err != nil {
		if w, ok := errors.AsType[*waitingError](err); ok {
			// Not a failure: look again when the wait is over (an
			// update of the Node comes earlier as an event).
			a.queue.Forget(k)
			a.queue.AddAfter(k, w.after)
			return true
		}
		a.log.Error("reconcile failed; retrying", "err", err, "retries", a.queue.NumRequeues(k))
		a.queue.AddRateLimited(k)
		return true
	}
	a.queue.Forget(k)
	return true
}

// Reconcile makes one pass: API -> desired state -> data plane ->
// subnet.env -> readiness. Every step is level-triggered: it looks at the
// whole cluster and changes only what differs.
func (a *Agent) Reconcile(ctx context.Context) (err error) {
	start := time.Now()
	a.mu.Lock()
	a.runningSince = start
	a.mu.Unlock()
	defer func() {
		d := time.Since(start)
		if _, waiting := errors.AsType[*waitingError](err); waiting {
			a.cfg.Metrics.ObserveReconcile(d, nil)
		} else {
			a.cfg.Metrics.ObserveReconcile(d, err)
		}
		a.mu.Lock()
		a.runningSince = time.Time{}
		a.lastDone = time.Now()
		a.lastReconcile = err
		a.mu.Unlock()
	}()

	nodes := a.cfg.Cluster.Nodes()
	i := slices.IndexFunc(nodes, func(n mesh.Node) bool { return n.Name == a.cfg.NodeName })
	if i < 0 {
		return fmt.Errorf("node %q is not in the API (is --node-name / NODE_NAME right, and has the kubelet registered?)", a.cfg.NodeName)
	}
	self := nodes[i]

	if len(self.PodCIDRs) == 0 {
		if wait := a.reservationWait(time.Now()); wait > 0 {
			return &waitingError{node: a.cfg.NodeName, delay: a.cfg.ReservationDelay, after: wait}
		}
		if self.PodCIDRs, err = a.reserve(ctx); err != nil {
			return err
		}
		nodes[i] = self
	} else {
		a.mu.Lock()
		a.noPodCIDRSince = time.Time{}
		a.mu.Unlock()
	}
	if err := a.publish(ctx, self); err != nil {
		return err
	}
	a.releaseSuperseded(ctx)
	a.releaseOrphans(ctx)

	state, problems := mesh.Desired(self, nodes, mesh.Options{Self: a.cfg.NodeName, ListenPort: a.cfg.ListenPort, ClusterCIDRs: a.cfg.ClusterCIDRs})
	problems = append(problems, a.keyChangeWarnings(nodes, state, time.Now())...)
	a.reportProblems(problems)

	dp, err := a.dataplane(self)
	if err != nil {
		return err
	}
	changes, applyErr := dp.Apply(ctx, state)
	a.countChanges(changes)
	if applyErr != nil {
		return fmt.Errorf("apply data plane: %w", applyErr)
	}
	a.rememberProgrammed(nodes, state)
	a.logPeerDecisions(state)

	if err := a.writeSubnetEnv(state); err != nil {
		return err
	}

	a.mu.Lock()
	a.synced = true
	a.mu.Unlock()
	if set, err := a.cfg.Cluster.SetNetworkAvailable(ctx); err != nil {
		return err
	} else if set {
		a.log.Info("node condition set", "type", "NetworkUnavailable", "status", "False", "reason", kube.ReadyReason)
	}
	return nil
}

// waitingError ends a reconcile that waits for the controller manager to
// fill this node's spec.podCIDR before reserving a subnet itself. The agent
// is not ready meanwhile (no subnet.env): CNI ADD asks the kubelet to retry.
type waitingError struct {
	node  string
	delay time.Duration
	after time.Duration // until the delay is over
}

func (e *waitingError) Error() string {
	return fmt.Sprintf("node %s has no spec.podCIDR yet; waiting up to %s (--subnet-reservation-delay) for the controller manager before reserving a subnet", e.node, e.delay)
}

// reservationWait returns how much longer this node, found without a pod
// CIDR at now, must wait before reserving one; <= 0 means reserve now.
func (a *Agent) reservationWait(now time.Time) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.noPodCIDRSince.IsZero() {
		a.noPodCIDRSince = now
		if a.cfg.ReservationDelay > 0 {
			a.log.Info("node has no spec.podCIDR; waiting before reserving a subnet", "node", a.cfg.NodeName, "delay", a.cfg.ReservationDelay)
		}
	}
	return reservationWait(a.noPodCIDRSince, now, a.cfg.ReservationDelay)
}

// reservationWait is the rest of delay since emptySince, at now.
func reservationWait(emptySince, now time.Time, delay time.Duration) time.Duration {
	return emptySince.Add(delay).Sub(now)
}

// reserve takes a subnet per cluster CIDR through Leases, for a node the
// control plane gave no pod CIDR.
func (a *Agent) reserve(ctx context.Context) ([]netip.Prefix, error) {
	if len(a.cfg.ClusterCIDRs) == 0 {
		return nil, fmt.Errorf("node %s has no spec.podCIDR and no --cluster-cidr is set to reserve one from", a.cfg.NodeName)
	}
	var out []netip.Prefix
	for _, c := range a.cfg.ClusterCIDRs {
		bits := a.cfg.NodeCIDRMaskSize4
		if c.Addr().Is6() {
			bits = a.cfg.NodeCIDRMaskSize6
		}
		p, err := a.cfg.Cluster.Reserve(ctx, c, bits)
		if err != nil {
			return nil, fmt.Errorf("reserve a /%d subnet in %s: %w", bits, c, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func (a *Agent) publish(ctx context.Context, self mesh.Node) error {
	want := map[string]string{mesh.AnnotationPublicKey: a.cfg.PublicKey.String()}
	if ep, err := kube.PublishEndpoint(self, a.cfg.ListenPort); err != nil {
		// The key is still published: peers reach this node once it
		// initiates a handshake, and the rest of the mesh goes on.
		a.log.Warn("no endpoint to publish", "node", a.cfg.NodeName, "err", err)
	} else {
		want[mesh.AnnotationEndpoint] = ep
	}
	changed, err := a.cfg.Cluster.Publish(ctx, want)
	if err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(changed)) {
		a.log.Info("annotation published", "node", a.cfg.NodeName, "key", k, "value", changed[k])
	}
	return nil
}

// releaseSuperseded drops this node's subnet Leases once its spec has a pod
// CIDR: the spec wins (the kube layer logs what it released).
func (a *Agent) releaseSuperseded(ctx context.Context) {
	if _, err := a.cfg.Cluster.ReleaseSuperseded(ctx); err != nil {
		// Not fatal: the mesh already uses the spec; the next reconcile
		// tries again.
		a.log.Warn("release this node's subnet leases after spec.podCIDR was set", "err", err)
	}
}

func (a *Agent) releaseOrphans(ctx context.Context) {
	a.mu.Lock()
	check := a.checkOrphans
	a.checkOrphans = false
	a.mu.Unlock()
	if !check {
		return
	}
	if _, err := a.cfg.Cluster.ReleaseOrphans(ctx); err != nil {
		// Not fatal for this node's mesh; the next resync tries again.
		a.log.Warn("release subnet leases of deleted nodes", "err", err)
		a.mu.Lock()
		a.checkOrphans = true
		a.mu.Unlock()
	}
}

// keyChangeWarnings returns the KeyAndEndpointChanged warnings to report
// now: the peers of state whose key and endpoint both differ from what was
// last programmed for them (mesh.KeyChanges), and the earlier ones that are
// younger than KeyChangeWarnFor and whose Node still exists. The peer is
// programmed all the same: a reinstalled node changes both legitimately.
func (a *Agent) keyChangeWarnings(nodes []mesh.Node, state mesh.State, now time.Time) []mesh.Problem {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.keyWarnings == nil {
		a.keyWarnings = map[string]keyWarning{}
	}
	for _, p := range mesh.KeyChanges(a.programmed, mesh.Identities(state)) {
		if w, ok := a.keyWarnings[p.Node]; !ok || w.problem.Message != p.Message {
			a.keyWarnings[p.Node] = keyWarning{problem: p, since: now}
		}
	}
	var out []mesh.Problem
	for _, node := range slices.Sorted(maps.Keys(a.keyWarnings)) {
		w := a.keyWarnings[node]
		if now.Sub(w.since) >= KeyChangeWarnFor || !slices.ContainsFunc(nodes, func(n mesh.Node) bool { return n.Name == node }) {
			delete(a.keyWarnings, node)
			continue
		}
		out = append(out, w.problem)
	}
	return out
}

// rememberProgrammed records the key and endpoint of every peer of state,
// just applied, and forgets the nodes that are gone from the API (a Node
// deleted and registered again starts afresh).
func (a *Agent) rememberProgrammed(nodes []mesh.Node, state mesh.State) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.programmed == nil {
		a.programmed = map[string]mesh.PeerIdentity{}
	}
	maps.Copy(a.programmed, mesh.Identities(state))
	for node := range a.programmed {
		if !slices.ContainsFunc(nodes, func(n mesh.Node) bool { return n.Name == node }) {
			delete(a.programmed, node)
		}
	}
}

func (a *Agent) reportProblems(ps []mesh.Problem) {
	byReason := map[string]int{}
	for _, p := range ps {
		byReason[p.Reason]++
	}
	a.cfg.Metrics.SetConflicts(byReason)
	served := make([]metrics.Problem, len(ps))
	for i, p := range ps {
		served[i] = metrics.Problem{Node: p.Node, Reason: p.Reason, Message: p.Message}
	}
	a.cfg.Metrics.SetProblems(served)
	a.cfg.Cluster.ReportProblems(ps)
}

// dataplane creates the data plane on first use, when this node's
// addresses (for the underlay MTU) are known.
func (a *Agent) dataplane(self mesh.Node) (Dataplane, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dp != nil {
		return a.dp, nil
	}
	mtu, err := a.podMTU(self)
	if err != nil {
		return nil, err
	}
	dp, err := a.cfg.NewDataplane(mtu)
	if err != nil {
		return nil, fmt.Errorf("set up data plane: %w", err)
	}
	a.dp, a.mtu = dp, mtu
	a.cfg.Metrics.SetPeerSource(a.peerStats)
	return dp, nil
}

// podMTU is --mtu, or the MTU of the interface holding the node's first
// InternalIP minus the WireGuard overhead of that address's family.
func (a *Agent) podMTU(self mesh.Node) (int, error) {
	if a.cfg.MTU > 0 {
		return a.cfg.MTU, nil
	}
	addrs := append(slices.Clone(self.InternalIPs), self.ExternalIPs...)
	if len(addrs) == 0 {
		return 0, fmt.Errorf("node %s has no address in status.addresses to find the underlay MTU from; set --mtu", self.Name)
	}
	var errs []error
	for _, ip := range addrs {
		under, err := a.cfg.UnderlayMTU(ip)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		mtu := mesh.PodMTU(0, under, ip.Is6())
		a.log.Info("MTU chosen", "mtu", mtu, "underlayMTU", under, "underlayAddr", ip)
		return mtu, nil
	}
	return 0, fmt.Errorf("find the underlay MTU (set --mtu to skip): %w", errors.Join(errs...))
}

func (a *Agent) countChanges(c dataplane.Changes) {
	m := a.cfg.Metrics
	m.AddKernelChanges("peer_add", c.PeersAdded)
	m.AddKernelChanges("peer_update", c.PeersUpdated)
	m.AddKernelChanges("peer_remove", c.PeersRemoved)
	m.AddKernelChanges("route_add", c.RoutesAdded)
	m.AddKernelChanges("route_delete", c.RoutesDeleted)
	m.AddKernelChanges("rule", c.RulesChanged)
	m.AddKernelChanges("link", c.LinksChanged)
	m.AddKernelChanges("sysctl", c.SysctlsChanged)
}

// logPeerDecisions logs one line per peer that joined, left or changed in
// the desired state since the last successful apply.
func (a *Agent) logPeerDecisions(s mesh.State) {
	a.mu.Lock()
	prev := a.last
	a.last = s
	a.mu.Unlock()
	old := map[string]mesh.Peer{}
	for _, p := range prev.Peers {
		old[p.Node] = p
	}
	for _, p := range s.Peers {
		o, ok := old[p.Node]
		delete(old, p.Node)
		switch {
		case !ok:
			a.log.Info("peer added", "node", p.Node, "allowedIPs", p.AllowedIPs, "endpoint", endpointString(p.Endpoint), "publicKey", p.PublicKey.String())
		case o.PublicKey != p.PublicKey || o.Endpoint != p.Endpoint || !slices.Equal(o.AllowedIPs, p.AllowedIPs) || o.PersistentKeepalive != p.PersistentKeepalive:
			a.log.Info("peer updated", "node", p.Node, "allowedIPs", p.AllowedIPs, "endpoint", endpointString(p.Endpoint), "publicKey", p.PublicKey.String())
		}
	}
	for _, node := range slices.Sorted(maps.Keys(old)) {
		a.log.Info("peer removed", "node", node, "allowedIPs", old[node].AllowedIPs)
	}
}

func endpointString(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return "(none: waits for the peer's handshake)"
	}
	return ap.String()
}

// writeSubnetEnv writes subnet.env when its content differs from what is
// on disk, atomically.
func (a *Agent) writeSubnetEnv(s mesh.State) error {
	env := subnetenv.Env{MTU: a.mtu, IPMasq: a.cfg.Masquerade}
	for _, c := range a.cfg.ClusterCIDRs {
		if c.Addr().Is4() {
			env.Network = c.Masked()
		} else {
			env.Network6 = c.Masked()
		}
	}
	for _, p := range s.Subnets {
		if p.Addr().Is4() && !env.Subnet.IsValid() {
			env.Subnet = p
		} else if p.Addr().Is6() && !env.Subnet6.IsValid() {
			env.Subnet6 = p
		}
	}
	if err := env.Validate(); err != nil {
		return fmt.Errorf("subnet.env for node %s: %w", a.cfg.NodeName, err)
	}
	cur, err := subnetenv.Read(a.cfg.SubnetFile)
	if err == nil && cur == env {
		a.mu.Lock()
		a.envWritten = true
		a.mu.Unlock()
		return nil
	}
	if err := subnetenv.Write(a.cfg.SubnetFile, env); err != nil {
		return fmt.Errorf("write %s: %w", a.cfg.SubnetFile, err)
	}
	a.log.Info("subnet.env written", "path", a.cfg.SubnetFile, "subnets", env.Subnets(), "mtu", env.MTU, "ipmasq", env.IPMasq)
	a.mu.Lock()
	a.envWritten = true
	a.mu.Unlock()
	return nil
}

// peerStats feeds the metrics at scrape time.
func (a *Agent) peerStats(ctx context.Context) ([]metrics.PeerStat, error) {
	a.mu.Lock()
	dp := a.dp
	a.mu.Unlock()
	if dp == nil {
		return nil, nil
	}
	st, err := dp.Status(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]metrics.PeerStat, 0, len(st.Peers))
	for _, p := range st.Peers {
		out = append(out, metrics.PeerStat{Node: cmp.Or(p.Node, p.PublicKey), LastHandshake: p.LastHandshake, RxBytes: p.RxBytes, TxBytes: p.TxBytes})
	}
	return out, nil
}

// stuckAfter is how long the loop may go without finishing a reconcile
// before /healthz fails: the resync enqueues one every period, so three
// periods (at least 5 minutes) without one means the worker is wedged.
func (a *Agent) stuckAfter() time.Duration { return max(3*a.cfg.Resync, 5*time.Minute) }

// Healthy is /healthz: the process runs and the loop is not stuck.
func (a *Agent) Healthy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if !a.runningSince.IsZero() && now.Sub(a.runningSince) > a.stuckAfter() {
		return fmt.Errorf("reconcile running for %s", now.Sub(a.runningSince).Round(time.Second))
	}
	if a.runningSince.IsZero() && now.Sub(a.lastDone) > a.stuckAfter() {
		return fmt.Errorf("no reconcile finished for %s", now.Sub(a.lastDone).Round(time.Second))
	}
	return nil
}

// Ready is /readyz: the first sync succeeded, subnet.env is written and the
// WireGuard device answers.
func (a *Agent) Ready() error {
	a.mu.Lock()
	synced, env, dp, last := a.synced, a.envWritten, a.dp, a.lastReconcile
	a.mu.Unlock()
	switch {
	case !synced && last != nil:
		return fmt.Errorf("first sync not done: %w", last)
	case !synced:
		return errors.New("first sync not done")
	case !env:
		return fmt.Errorf("%s not written", a.cfg.SubnetFile)
	case dp == nil:
		return errors.New("no WireGuard device")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := dp.Status(ctx); err != nil {
		return fmt.Errorf("WireGuard device: %w", err)
	}
	return nil
}
