package lab

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
)

// IPv6 settings of a dual-stack lab (Config.DualStack), beside the IPv4
// ones: the pod network and Service range as a dual-stack k3s takes them
// (--cluster-cidr=10.42.0.0/16,fd42::/56), and an IPv6 underlay.
var (
	UnderlayPrefix6 = netip.MustParsePrefix("fd31::/64")
	ControlPlaneIP6 = netip.MustParseAddr("fd31::2")
)

const (
	ClusterCIDR6      = "fd42::/56"
	NodeCIDRMaskSize6 = 64
	ServiceCIDR6      = "fd43::/112"
)

// ClusterCIDRs is the pod network of the lab, comma-separated, IPv4 first
// (the --cluster-cidr of the agents, kube-controller-manager and kube-proxy).
func (c Config) ClusterCIDRs() string { return c.joinFamilies(ClusterCIDR, ClusterCIDR6) }

// ServiceCIDRs is the Service range of the lab, comma-separated, IPv4 first.
func (c Config) ServiceCIDRs() string { return c.joinFamilies(ServiceCIDR, ServiceCIDR6) }

func (c Config) joinFamilies(v4, v6 string) string {
	if !c.DualStack {
		return v4
	}
	return v4 + "," + v6
}

// nodeCIDRFlags are kube-controller-manager's subnet size flags: a
// dual-stack --cluster-cidr refuses --node-cidr-mask-size and takes one per
// family.
func (c Config) nodeCIDRFlags() []string {
	if !c.DualStack {
		return []string{"--node-cidr-mask-size", strconv.Itoa(NodeCIDRMaskSize)}
	}
	return []string{"--node-cidr-mask-size-ipv4", strconv.Itoa(NodeCIDRMaskSize),
		"--node-cidr-mask-size-ipv6", strconv.Itoa(NodeCIDRMaskSize6)}
}

// underlayAddr6 is the IPv6 underlay address matching the IPv4 one
// (172.31.0.11 -> fd31::11), so a node's two addresses read alike.
func underlayAddr6(v4 netip.Addr) netip.Addr {
	b := UnderlayPrefix6.Addr().As16()
	last := v4.As4()[3]
	// The last byte of the IPv4 address, written in hex digits that read
	// as its decimal value (11 -> ::11).
	s := strconv.Itoa(int(last))
	v, _ := strconv.ParseUint(s, 16, 16)
	b[14], b[15] = byte(v>>8), byte(v)
	return netip.AddrFrom16(b)
}

// Addrs are the node's underlay addresses, IPv4 first ("172.31.0.11" or
// "172.31.0.11,fd31::11"): kubelet --node-ip.
func (n *Node) Addrs() string {
	s := []string{n.Addr.String()}
	if n.Addr6.IsValid() {
		s = append(s, n.Addr6.String())
	}
	return strings.Join(s, ",")
}

// plug6 gives eth0 of netns (plugged by plug) its IPv6 underlay address in
// a dual-stack lab, and makes the namespace forward IPv6 as a node does.
// nodad: the address is usable at once (nobody on a fresh bridge to
// collide with).
func (l *Lab) plug6(ctx context.Context, netns string, addr netip.Addr) error {
	if !l.DualStack {
		return nil
	}
	return runAll(ctx,
		[]string{"ip", "-n", netns, "addr", "add", netip.PrefixFrom(addr, UnderlayPrefix6.Bits()).String(), "dev", "eth0", "nodad"},
		[]string{"ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
	)
}
