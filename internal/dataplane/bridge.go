package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/internal/mesh"
)

// ensureGateways makes bridge exist, be up, and hold the gateway address
// (first address, with the subnet's prefix length) of each pod subnet, so
// that routes with that source can be added before the first pod starts.
// The CNI plugin does the same on ADD; both adopt what exists. MTU is set
// only when the bridge is created here. It returns the writes made.
func ensureGateways(bridge string, subnets []netip.Prefix, mtu int) (int, error) {
	if len(subnets) == 0 {
		return 0, nil
	}
	writes := 0
	link, err := netlinksafe.LinkByName(bridge)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge, MTU: mtu}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return writes, fmt.Errorf("create bridge %s: %w", bridge, err)
		}
		writes++
		link, err = netlinksafe.LinkByName(bridge)
	}
	if err != nil {
		return writes, fmt.Errorf("look up bridge %s: %w", bridge, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return writes, fmt.Errorf("%s is a %q link, not a bridge", bridge, link.Type())
	}
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return writes, fmt.Errorf("list addresses of %s: %w", bridge, err)
	}
	have := map[netip.Prefix]bool{}
	for _, a := range addrs {
		if p, ok := prefixOfAddr(a); ok {
			have[p] = true
		}
	}
	for _, s := range subnets {
		if s.Bits() > s.Addr().BitLen()-2 {
			continue // too small for a gateway; mesh.Desired reports it
		}
		gw := netip.PrefixFrom(mesh.Gateway(s), s.Bits())
		if have[gw] {
			continue
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: gw.Addr().AsSlice(), Mask: net.CIDRMask(gw.Bits(), gw.Addr().BitLen())}}
		if gw.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD // the gateway must be usable as a source at once
		}
		if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return writes, fmt.Errorf("add gateway %s to %s: %w", gw, bridge, err)
		}
		writes++
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return writes, fmt.Errorf("set %s up: %w", bridge, err)
		}
		writes++
	}
	return writes, nil
}
