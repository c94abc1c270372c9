package main

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/internal/link"
	"github.com/wgmesh/wgmesh/internal/netconv"
)

// The anchor the network section compares wgmesh with: flannel's default
// backend on k3s, a kernel VXLAN device without encryption. flannelVXLAN
// programs two lab nodes the way flannel's vxlan backend does (pkg/backend/
// vxlan: device.go, vxlan.go, vxlan_network.go), so the table shows what
// encryption costs next to what k3s users run today.
const (
	flannelDev  = "flannel.1"
	flannelVNI  = 1
	flannelPort = 8472 // the kernel's default VXLAN port, which flannel keeps
	// flannelMTU is the underlay's 1500 less VXLAN's 50 bytes: flannel.1,
	// and through flannel's subnet.env, cni0 and every pod.
	flannelMTU = 1500 - 50
)

// flannelCIDR is the cluster CIDR, for flannel's masquerade and forward
// rules (k3s's default, as wgmesh's lab uses).
var flannelCIDR = netip.MustParsePrefix("10.42.0.0/16")

// flannelVXLAN gives each node flannel.1 (VNI 1, port 8472, learning off,
// MTU 1450, address <podCIDR network>/32 so that no broadcast routes
// exist), then for every other node what flannel's handleSubnetEvents adds
// on a lease: a permanent neighbour entry for the remote VTEP's address and
// MAC, an FDB entry from that MAC to the remote node's underlay IP, and
// last the route `<podCIDR> via <remote flannel.1 addr> dev flannel.1
// onlink`. Then flannel's iptables rules: pod-to-pod traffic returns
// unmasqueraded, the rest leaving the cluster is masqueraded, and FORWARD
// accepts the cluster CIDR. The links go with the nodes' namespaces.
func flannelVXLAN(nodes []*labNode) error {
	macs := make([]net.HardwareAddr, len(nodes))
	for i, nd := range nodes {
		// A random locally administered MAC, as flannel's mac.NewHardwareAddr.
		mac := link.RandomMAC()
		macs[i] = mac
		if err := nd.netns.In(func() error { return addFlannelDevice(nd, mac) }); err != nil {
			return fmt.Errorf("%s: %s: %w", nd.name, flannelDev, err)
		}
	}
	for i, nd := range nodes {
		for j, remote := range nodes {
			if i == j {
				continue
			}
			if err := nd.netns.In(func() error { return addFlannelPeer(remote, macs[j]) }); err != nil {
				return fmt.Errorf("%s: %s: lease of %s: %w", nd.name, flannelDev, remote.name, err)
			}
		}
		if err := flannelRules(nd); err != nil {
			return err
		}
	}
	return nil
}

// addFlannelDevice runs in nd's namespace.
func addFlannelDevice(nd *labNode, mac net.HardwareAddr) error {
	eth0, err := netlink.LinkByName("eth0")
	if err != nil {
		return err
	}
	dev := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: flannelDev, HardwareAddr: mac, MTU: flannelMTU},
		VxlanId:      flannelVNI,
		VtepDevIndex: eth0.Attrs().Index,
		SrcAddr:      nd.under.AsSlice(),
		Port:         flannelPort,
		Learning:     false,
	}
	if err := netlink.LinkAdd(dev); err != nil {
		return fmt.Errorf("add: %w", err)
	}
	vtep := netip.PrefixFrom(nd.subnet.Addr(), 32)
	if err := netlink.AddrAdd(dev, &netlink.Addr{IPNet: netconv.IPNet(vtep)}); err != nil {
		return fmt.Errorf("address %s: %w", vtep, err)
	}
	return netlink.LinkSetUp(dev)
}

// addFlannelPeer runs in the local node's namespace; remote's VTEP has mac.
func addFlannelPeer(remote *labNode, mac net.HardwareAddr) error {
	dev, err := netlink.LinkByName(flannelDev)
	if err != nil {
		return err
	}
	idx := dev.Attrs().Index
	vtep := remote.subnet.Addr().AsSlice()
	if err := netlink.NeighSet(&netlink.Neigh{
		LinkIndex: idx, State: netlink.NUD_PERMANENT, Type: syscall.RTN_UNICAST,
		IP: vtep, HardwareAddr: mac,
	}); err != nil {
		return fmt.Errorf("neighbour %s: %w", remote.subnet.Addr(), err)
	}
	if err := netlink.NeighSet(&netlink.Neigh{
		LinkIndex: idx, State: netlink.NUD_PERMANENT, Family: syscall.AF_BRIDGE, Flags: netlink.NTF_SELF,
		IP: remote.under.AsSlice(), HardwareAddr: mac,
	}); err != nil {
		return fmt.Errorf("fdb %s -> %s: %w", mac, remote.under, err)
	}
	rt := netlink.Route{LinkIndex: idx, Scope: netlink.SCOPE_UNIVERSE, Dst: netconv.IPNet(remote.subnet), Gw: vtep}
	rt.SetFlag(syscall.RTNH_F_ONLINK)
	if err := netlink.RouteReplace(&rt); err != nil {
		return fmt.Errorf("route %s via %s: %w", remote.subnet, remote.subnet.Addr(), err)
	}
	return nil
}

// flannelRules are the rules flanneld keeps in its own chains (with
// --ip-masq, as k3s runs it), written here into POSTROUTING and FORWARD.
func flannelRules(nd *labNode) error {
	cidr, sub := flannelCIDR.String(), nd.subnet.String()
	for _, r := range [][]string{
		{"-t", "nat", "-A", "POSTROUTING", "-s", cidr, "-d", cidr, "-j", "RETURN"},
		{"-t", "nat", "-A", "POSTROUTING", "-s", cidr, "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE", "--random-fully"},
		{"-t", "nat", "-A", "POSTROUTING", "!", "-s", cidr, "-d", sub, "-j", "RETURN"},
		{"-t", "nat", "-A", "POSTROUTING", "!", "-s", cidr, "-d", cidr, "-j", "MASQUERADE", "--random-fully"},
		{"-A", "FORWARD", "-s", cidr, "-j", "ACCEPT"},
		{"-A", "FORWARD", "-d", cidr, "-j", "ACCEPT"},
	} {
		if _, err := nd.netns.Run("iptables", append([]string{"-w"}, r...)...); err != nil {
			return err
		}
	}
	return nil
}
