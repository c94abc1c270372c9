package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/internal/cniconf"
	"github.com/wgmesh/wgmesh/internal/keys"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// config is every flag of run, status, doctor and cleanup. Each flag's
// default comes from its environment variable when that is set.
type config struct {
	kubeconfig       string
	nodeName         string
	iface            string
	wireguard        string
	peerIdle         time.Duration
	listenPort       int
	privateKey       string
	subnetFile       string
	clusterCIDR      string
	nodeCIDRMaskSize int
	nodeCIDRMask6    int
	reserveDelay     time.Duration
	mtu              int
	masquerade       bool
	resync           time.Duration
	metricsAddr      string
	namespace        string
	bridge           string
	logLevel         string

	// Resolved from the strings above.
	clusterCIDRs []netip.Prefix
	mode         wireguard.Mode
	level        slog.Level
	envErrs      []error
}

// DefaultMetricsAddr is loopback: the DaemonSet sets the node's address (or
// 0.0.0.0) explicitly for Prometheus and the kubelet's probes.
const DefaultMetricsAddr = "127.0.0.1:9918"

func (c *config) register(fs *flag.FlagSet) {
	hostname, _ := os.Hostname()
	fs.StringVar(&c.kubeconfig, "kubeconfig", env("KUBECONFIG", ""), "kubeconfig `file` for running outside a pod; empty: the pod's service account (env KUBECONFIG)")
	fs.StringVar(&c.nodeName, "node-name", env("NODE_NAME", hostname), "this node's Node name (env NODE_NAME; default: the hostname)")
	fs.StringVar(&c.iface, "interface", env("WGMESH_INTERFACE", wireguard.DefaultName), "WireGuard interface `name` (env WGMESH_INTERFACE)")
	fs.StringVar(&c.wireguard, "wireguard", env("WGMESH_WIREGUARD", string(wireguard.ModeAuto)), "WireGuard implementation: auto, kernel or userspace (env WGMESH_WIREGUARD)")
	fs.DurationVar(&c.peerIdle, "userspace-peer-idle", c.envDuration("WGMESH_USERSPACE_PEER_IDLE", 0), "userspace device only: program a peer into wireguard-go only while it carries traffic and remove it after this long idle, to save about 50 KiB per idle peer; 0: every peer programmed; takes effect when the device process starts (env WGMESH_USERSPACE_PEER_IDLE)")
	fs.IntVar(&c.listenPort, "listen-port", c.envInt("WGMESH_LISTEN_PORT", 51820), "WireGuard UDP `port` (env WGMESH_LISTEN_PORT)")
	fs.StringVar(&c.privateKey, "private-key", env("WGMESH_PRIVATE_KEY", keys.DefaultPath), "private key `file`, created 0600 on first start (env WGMESH_PRIVATE_KEY)")
	fs.StringVar(&c.subnetFile, "subnet-file", env("WGMESH_SUBNET_FILE", subnetenv.DefaultPath), "subnet.env `file` read by the CNI plugins (env WGMESH_SUBNET_FILE)")
	fs.StringVar(&c.clusterCIDR, "cluster-cidr", env("WGMESH_CLUSTER_CIDR", "10.42.0.0/16"), "pod network `CIDRs`, comma-separated for dual-stack (env WGMESH_CLUSTER_CIDR)")
	fs.IntVar(&c.nodeCIDRMaskSize, "node-cidr-mask-size", c.envInt("WGMESH_NODE_CIDR_MASK_SIZE", 24), "IPv4 node subnet `bits` when the agent reserves one (env WGMESH_NODE_CIDR_MASK_SIZE)")
	fs.IntVar(&c.nodeCIDRMask6, "node-cidr-mask-size-ipv6", c.envInt("WGMESH_NODE_CIDR_MASK_SIZE_IPV6", 64), "IPv6 node subnet `bits` when the agent reserves one (env WGMESH_NODE_CIDR_MASK_SIZE_IPV6)")
	fs.DurationVar(&c.reserveDelay, "subnet-reservation-delay", c.envDuration("WGMESH_SUBNET_RESERVATION_DELAY", 30*time.Second), "how long this node's spec.podCIDR must stay empty before the agent reserves a subnet through a Lease; 0: at once (env WGMESH_SUBNET_RESERVATION_DELAY)")
	fs.IntVar(&c.mtu, "mtu", c.envInt("WGMESH_MTU", 0), "pod and WireGuard MTU; 0: the MTU of the interface holding the node's InternalIP minus 60 (IPv4) or 80 (IPv6) (env WGMESH_MTU)")
	fs.BoolVar(&c.masquerade, "masquerade", c.envBool("WGMESH_MASQUERADE", true), "masquerade pod traffic leaving the cluster CIDR (env WGMESH_MASQUERADE)")
	fs.DurationVar(&c.resync, "resync", c.envDuration("WGMESH_RESYNC", time.Minute), "period of the full level-triggered reconcile (env WGMESH_RESYNC)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", env("WGMESH_METRICS_ADDR", DefaultMetricsAddr), "`host:port` for /metrics, /healthz, /readyz; empty: off (env WGMESH_METRICS_ADDR)")
	fs.StringVar(&c.namespace, "namespace", env("POD_NAMESPACE", "kube-system"), "namespace of the subnet Leases (env POD_NAMESPACE)")
	fs.StringVar(&c.bridge, "bridge", env("WGMESH_BRIDGE", cniconf.DefaultBridge), "bridge that holds this node's pod gateway, the source of peer routes (env WGMESH_BRIDGE)")
	fs.StringVar(&c.logLevel, "log-level", env("WGMESH_LOG_LEVEL", "info"), "debug, info, warn or error (env WGMESH_LOG_LEVEL)")
}

// resolve parses and checks the values that are not plain strings.
func (c *config) resolve() error {
	if err := errors.Join(c.envErrs...); err != nil {
		return err
	}
	if c.nodeName == "" {
		return fmt.Errorf("--node-name is empty and the hostname is unknown")
	}
	var err error
	if c.mode, err = wireguard.ParseMode(c.wireguard); err != nil {
		return fmt.Errorf("--wireguard: %w", err)
	}
	if err := c.level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	if c.clusterCIDRs, err = parseCIDRs(c.clusterCIDR); err != nil {
		return fmt.Errorf("--cluster-cidr: %w", err)
	}
	if c.listenPort < 1 || c.listenPort > 65535 {
		return fmt.Errorf("--listen-port %d: want 1-65535", c.listenPort)
	}
	if c.mtu != 0 && (c.mtu < 1280 || c.mtu > 65535) {
		return fmt.Errorf("--mtu %d: want 0 (auto) or 1280-65535", c.mtu)
	}
	if c.reserveDelay < 0 {
		return fmt.Errorf("--subnet-reservation-delay %s: want 0 or more", c.reserveDelay)
	}
	if c.peerIdle != 0 && c.peerIdle < time.Second {
		return fmt.Errorf("--userspace-peer-idle %s: want 0 (off) or at least 1s", c.peerIdle)
	}
	if c.resync < time.Second {
		return fmt.Errorf("--resync %s: want at least 1s", c.resync)
	}
	for _, cl := range c.clusterCIDRs {
		bits := c.nodeCIDRMaskSize
		if cl.Addr().Is6() {
			bits = c.nodeCIDRMask6
		}
		if bits < cl.Bits() || bits > cl.Addr().BitLen()-2 {
			return fmt.Errorf("node subnet size /%d does not fit cluster CIDR %s (want /%d to /%d)", bits, cl, cl.Bits(), cl.Addr().BitLen()-2)
		}
	}
	return nil
}

// parseCIDRs parses "10.42.0.0/16,fd42::/56": at most one per family, no
// host bits.
func parseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var v4, v6 bool
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, err
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%s has host bits set (did you mean %s?)", f, p.Masked())
		}
		if (p.Addr().Is4() && v4) || (p.Addr().Is6() && v6) {
			return nil, fmt.Errorf("%q: at most one CIDR per address family", s)
		}
		v4, v6 = v4 || p.Addr().Is4(), v6 || p.Addr().Is6()
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no CIDR given")
	}
	return out, nil
}

func (c *config) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: c.level}))
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// The typed env helpers keep the default when the variable does not parse
// and remember the error, which resolve reports: a typo in the DaemonSet is
// an error, not a silent default.
func (c *config) envInt(name string, def int) int { return envParsed(c, name, def, strconv.Atoi) }

func (c *config) envBool(name string, def bool) bool {
	return envParsed(c, name, def, strconv.ParseBool)
}

func (c *config) envDuration(name string, def time.Duration) time.Duration {
	return envParsed(c, name, def, time.ParseDuration)
}

func envParsed[T any](c *config, name string, def T, parse func(string) (T, error)) T {
	v := env(name, "")
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil {
		c.envErrs = append(c.envErrs, fmt.Errorf("environment %s=%q: %w", name, v, err))
		return def
	}
	return x
}
