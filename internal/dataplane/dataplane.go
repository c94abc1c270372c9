// Package dataplane puts the node's desired mesh (mesh.State) into the
// kernel through three appliers, each owning a marked set of objects:
// wireguard (the wgmesh0 device, its peers and its addresses), route (protocol-87 routes
// in table 87 and their ip rule) and firewall (the WGMESH-* chains and
// their jumps). Optionally it also makes sure the bridge holds this node's
// gateway addresses, which the routes use as source.
//
// It owns nothing else: it never deletes the bridge, pod veths, other
// routes, rules or chains. Call every method from a thread in the target
// network namespace (the agent runs in the host namespace).
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/internal/firewall"
	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/netconv"
	"github.com/wgmesh/wgmesh/internal/route"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// Config is everything the data plane needs. Zero values take the defaults
// named on each field.
type Config struct {
	// Device is the WireGuard interface; default "wgmesh0".
	Device string
	// Mode is --wireguard: auto (default), kernel or userspace.
	Mode wireguard.Mode
	// ListenPort is the WireGuard UDP port; default 51820.
	ListenPort int
	// PrivateKey is this node's key (required; never logged).
	PrivateKey wgtypes.Key
	// MTU of the WireGuard device; default 1420 (see mesh.PodMTU).
	MTU int
	// ClusterCIDRs are the pod networks (k3s --cluster-cidr), for the
	// firewall rules. Empty: no FORWARD or masquerade rules.
	ClusterCIDRs []netip.Prefix
	// Masquerade pod traffic leaving the cluster; default false here
	// (the agent's flag defaults it to true).
	Masquerade bool
	// Bridge, when set (normally "cni0"), is created if missing and given
	// this node's gateway addresses (first address of each pod subnet),
	// which every peer route uses as source. Empty: the bridge is left to
	// the CNI plugin, and a route whose source is not yet a local address
	// fails until it is.
	Bridge string
	// RouteTable and RulePriority: defaults route.DefaultTable (87) and
	// route.DefaultRulePriority (5187). RouteTable 254 uses main, no rule.
	RouteTable   int
	RulePriority int
	Logger       *slog.Logger
	// OnStartOver is called for each WireGuard session the device starts
	// over (wireguard.Config.OnStartOver); the agent counts them.
	OnStartOver func(why string)
	// PeerIdle > 0: a userspace device programs peers on demand and removes
	// them after this long idle (wireguard.Config.OnDemandIdle).
	PeerIdle time.Duration
}

// Changes counts the kernel writes one Apply made. A second Apply of the
// same State reports all zeros.
type Changes struct {
	PeersAdded, PeersUpdated, PeersRemoved int
	RoutesAdded, RoutesDeleted             int // added counts replaced routes too
	RulesChanged                           int // ip rules + iptables writes
	LinksChanged                           int // bridge created, bridge and tunnel addresses, MTU, up
	SysctlsChanged                         int // bridge-nf-call-ip(6)tables set to 1 (see brnetfilter.go)
}

// Total is the number of kernel writes.
func (c Changes) Total() int {
	return c.PeersAdded + c.PeersUpdated + c.PeersRemoved + c.RoutesAdded + c.RoutesDeleted + c.RulesChanged + c.LinksChanged + c.SysctlsChanged
}

// Dataplane is the node's data plane.
type Dataplane struct {
	cfg Config
	log *slog.Logger
	// wgMu guards wg, which a lost device replaces (see device); Check
	// and Status may run beside Apply.
	wgMu   sync.Mutex
	wg     *wireguard.Device
	routes *route.Manager
	fw     *firewall.Manager

	mu        sync.Mutex
	nodeOf    map[wgtypes.Key]string // last applied peers, for Status
	lastApply time.Time
	// bnfWarned: the bridge-netfilter warning was logged (once per
	// distinct reason, so a resync loop does not repeat it).
	bnfWarned string
}

// New creates or adopts the WireGuard device (never recreating it) and
// prepares the route and firewall appliers. Nothing else is written until
// Apply.
func New(cfg Config) (*Dataplane, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Device == "" {
		cfg.Device = wireguard.DefaultName
	}
	routes, err := route.New(route.Config{Device: cfg.Device, Table: cfg.RouteTable, RulePriority: cfg.RulePriority})
	if err != nil {
		return nil, err
	}
	dev, err := wireguard.Ensure(wgConfig(cfg))
	if err != nil {
		return nil, err
	}
	return &Dataplane{cfg: cfg, log: cfg.Logger, wg: dev, routes: routes, fw: firewall.New(), nodeOf: map[wgtypes.Key]string{}}, nil
}

func wgConfig(cfg Config) wireguard.Config {
	return wireguard.Config{
		Name: cfg.Device, Mode: cfg.Mode, ListenPort: cfg.ListenPort,
		PrivateKey: cfg.PrivateKey, MTU: cfg.MTU, Logger: cfg.Logger, OnStartOver: cfg.OnStartOver,
		OnDemandIdle: cfg.PeerIdle,
	}
}

// Device is the WireGuard device (for its name, mode and public key).
func (d *Dataplane) Device() *wireguard.Device {
	d.wgMu.Lock()
	defer d.wgMu.Unlock()
	return d.wg
}

// CheckDevice reports whether the WireGuard device is still the one the
// data plane set up: an error wrapping wireguard.ErrDeviceLost when its
// link or its userspace device process is gone. The next Apply then
// recreates it; the agent calls CheckDevice every few seconds so that it
// does not wait for the next event or resync.
func (d *Dataplane) CheckDevice(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.Device().Check()
}

// device returns the WireGuard device, first creating it again (and so
// spawning a new userspace device process) when it was lost. A new device
// has no peers and no addresses, and the kernel removed the routes through
// the old link: every applier diffs against the kernel, so the Apply that
// follows writes all of it back. n is the kernel writes made.
func (d *Dataplane) device() (dev *wireguard.Device, n int, err error) {
	d.wgMu.Lock()
	defer d.wgMu.Unlock()
	lost := d.wg.Check()
	if !errors.Is(lost, wireguard.ErrDeviceLost) {
		return d.wg, 0, nil // a failed look-up is not a loss: Apply reports it
	}
	d.log.Warn("WireGuard device lost; creating it again and re-applying the full state", "device", d.cfg.Device, "reason", lost.Error())
	d.wg.Close()
	start := time.Now()
	cfg := wgConfig(d.cfg)
	cfg.Replaces = true // its peers hold sessions the new one lacks
	dev, err = wireguard.Ensure(cfg)
	if err != nil {
		return d.wg, 0, fmt.Errorf("%v; create it again: %w", lost, err)
	}
	d.wg = dev
	d.log.Info("WireGuard device back", "device", d.cfg.Device, "mode", dev.Mode(), "took", time.Since(start).Round(time.Millisecond))
	return dev, dev.EnsureOps, nil
}

// Apply makes the kernel match s, writing only the difference: peers
// first (so a route never points to a tunnel without its peer), then the
// device's own addresses, the bridge gateways, routes (adds before
// deletes) and firewall rules. It goes on after a failed step and returns
// every error joined, with the changes that were made.
func (d *Dataplane) Apply(ctx context.Context, s mesh.State) (Changes, error) {
	var ch Changes
	var errs []error
	if err := ctx.Err(); err != nil {
		return ch, err
	}
	wg, n, err := d.device()
	ch.LinksChanged += n
	if err != nil {
		// Without the device, peers, addresses and routes cannot be
		// written; the firewall rules name it and stay.
		return ch, err
	}
	ops, err := wg.Apply(s.Peers)
	if err != nil && errors.Is(wg.Check(), wireguard.ErrDeviceLost) {
		// Lost between the check and the write: once more, on a new one.
		if wg, n, err = d.device(); err != nil {
			return ch, err
		}
		ch.LinksChanged += n
		ops, err = wg.Apply(s.Peers)
	}
	ch.PeersAdded, ch.PeersUpdated, ch.PeersRemoved = ops.Added, ops.Updated, ops.Removed
	if err != nil {
		errs = append(errs, err)
	}
	n, err = ensureTunnelAddrs(wg.Name(), s.TunnelAddrs)
	ch.LinksChanged += n
	if err != nil {
		errs = append(errs, err)
	}
	if d.cfg.Bridge != "" {
		n, err := ensureGateways(d.cfg.Bridge, s.Subnets, wg.MTU())
		ch.LinksChanged += n
		if err != nil {
			errs = append(errs, err)
		}
		ch.SysctlsChanged += d.bridgeNetfilter()
	}
	rops, err := d.routes.Apply(s.Routes)
	ch.RoutesAdded, ch.RoutesDeleted = rops.RoutesAdded, rops.RoutesDeleted
	ch.RulesChanged += rops.RulesAdded + rops.RulesDeleted
	if err != nil {
		errs = append(errs, err)
	}
	n, err = d.fw.Apply(firewall.Rules{ClusterCIDRs: d.cfg.ClusterCIDRs, PodSubnets: s.Subnets, Masquerade: d.cfg.Masquerade})
	ch.RulesChanged += n
	if err != nil {
		errs = append(errs, err)
	}

	d.mu.Lock()
	d.nodeOf = make(map[wgtypes.Key]string, len(s.Peers))
	for _, p := range s.Peers {
		d.nodeOf[p.PublicKey] = p.Node
	}
	d.lastApply = time.Now()
	d.mu.Unlock()

	if ch.Total() > 0 {
		d.log.Info("data plane applied", "peersAdded", ch.PeersAdded, "peersUpdated", ch.PeersUpdated, "peersRemoved", ch.PeersRemoved,
			"routesAdded", ch.RoutesAdded, "routesDeleted", ch.RoutesDeleted, "rulesChanged", ch.RulesChanged, "linksChanged", ch.LinksChanged, "sysctlsChanged", ch.SysctlsChanged)
	}
	return ch, errors.Join(errs...)
}

// Status is the data plane as the kernel has it now.
type Status struct {
	Device     string
	Mode       wireguard.Mode
	PublicKey  string
	ListenPort int
	MTU        int
	Peers      []PeerStatus
	// Routes are our routes (protocol 87 in our table).
	Routes       []mesh.Route
	RouteTable   int
	RulePriority int
}

// PeerStatus is one device peer.
type PeerStatus struct {
	// Node is the node this peer was last applied for; empty for a peer
	// the agent did not program (it will be removed by the next Apply).
	Node          string
	PublicKey     string
	Endpoint      netip.AddrPort
	AllowedIPs    []netip.Prefix
	LastHandshake time.Time // zero: never
	RxBytes       int64
	TxBytes       int64
	Keepalive     time.Duration
}

// PeerStatusOf converts a peer as wgctrl reads it from the device; Node is
// left empty (only the applier knows which node a key was programmed for).
func PeerStatusOf(p wgtypes.Peer) PeerStatus {
	ps := PeerStatus{
		PublicKey: p.PublicKey.String(), LastHandshake: p.LastHandshakeTime,
		RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes, Keepalive: p.PersistentKeepaliveInterval,
	}
	if p.Endpoint != nil {
		ap := p.Endpoint.AddrPort()
		ps.Endpoint = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	for _, n := range p.AllowedIPs {
		if pfx, ok := netconv.Prefix(n); ok {
			ps.AllowedIPs = append(ps.AllowedIPs, pfx)
		}
	}
	return ps
}

// Status reads the device, its peers and our routes.
func (d *Dataplane) Status(ctx context.Context) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	wg := d.Device()
	dev, err := wg.Read()
	if err != nil {
		return Status{}, err
	}
	st := Status{
		Device: wg.Name(), Mode: wg.Mode(), PublicKey: dev.PublicKey.String(), ListenPort: dev.ListenPort,
		MTU: wg.MTU(), RouteTable: d.routes.Table(), RulePriority: d.routes.RulePriority(),
	}
	d.mu.Lock()
	for _, p := range dev.Peers {
		ps := PeerStatusOf(p)
		ps.Node = d.nodeOf[p.PublicKey]
		st.Peers = append(st.Peers, ps)
	}
	d.mu.Unlock()
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int {
		if a.Node != b.Node {
			if a.Node < b.Node {
				return -1
			}
			return 1
		}
		if a.PublicKey < b.PublicKey {
			return -1
		}
		return 1
	})
	if st.Routes, err = d.routes.List(); err != nil {
		return st, err
	}
	return st, nil
}

// Close releases handles and leaves the data plane in place (SIGTERM): a
// kernel device keeps its peers, routes and rules stay. A userspace device
// process keeps running too, for the next agent to adopt.
func (d *Dataplane) Close() error { return d.Device().Close() }

// Cleanup removes everything wgmesh created: our iptables chains and
// jumps, our routes and rules, and the WireGuard device. It leaves the
// bridge (the CNI plugin's, with pods on it).
func (d *Dataplane) Cleanup(ctx context.Context) error {
	return cleanup(ctx, d.cfg, d.routes, d.fw, d.Device().Delete)
}

// CleanupWithout removes what wgmesh created without adopting the device
// first (for `wgmesh-agent cleanup` when the agent is not running).
func CleanupWithout(ctx context.Context, cfg Config) error {
	if cfg.Device == "" {
		cfg.Device = wireguard.DefaultName
	}
	routes, err := route.New(route.Config{Device: cfg.Device, Table: cfg.RouteTable, RulePriority: cfg.RulePriority})
	if err != nil {
		return err
	}
	return cleanup(ctx, cfg, routes, firewall.New(), func() error { return wireguard.Remove(cfg.Device) })
}

func cleanup(ctx context.Context, cfg Config, routes *route.Manager, fw *firewall.Manager, deleteDevice func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []error
	if _, err := fw.Cleanup(); err != nil {
		errs = append(errs, fmt.Errorf("firewall cleanup: %w", err))
	}
	if _, err := routes.Cleanup(); err != nil {
		errs = append(errs, fmt.Errorf("route cleanup: %w", err))
	}
	if err := deleteDevice(); err != nil {
		errs = append(errs, fmt.Errorf("device cleanup: %w", err))
	}
	return errors.Join(errs...)
}
