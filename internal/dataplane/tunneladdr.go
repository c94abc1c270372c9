package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ensureTunnelAddrs makes the WireGuard device hold exactly want (rule 7:
// mesh.State.TunnelAddrs). MASQUERADE, kube-proxy's included, takes the
// source of a packet it rewrites from the outgoing device; a device with
// an address inside the node's pod subnet gives one that every peer's
// exact AllowedIPs accept. The device is wgmesh's, so its global
// addresses are ours to set: a stale one (the node's subnet changed) is
// removed. Link-local addresses are the kernel's and are left alone. It
// returns the writes made.
func ensureTunnelAddrs(device string, want []netip.Prefix) (int, error) {
	link, err := netlinksafe.LinkByName(device)
	if err != nil {
		return 0, fmt.Errorf("look up %s: %w", device, err)
	}
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return 0, fmt.Errorf("list addresses of %s: %w", device, err)
	}
	wanted := map[netip.Prefix]bool{}
	for _, p := range want {
		wanted[p] = true
	}
	writes := 0
	var errs []error
	for _, a := range addrs {
		p, ok := prefixOfAddr(a)
		if !ok || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if wanted[p] {
			delete(wanted, p)
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove stale address %s from %s: %w", p, device, err))
			continue
		}
		writes++
	}
	for _, p := range want {
		if !wanted[p] {
			continue
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD // a source at once, as the gateway is
		}
		if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add tunnel address %s to %s: %w", p, device, err))
			continue
		}
		writes++
	}
	return writes, errors.Join(errs...)
}

// prefixOfAddr is a netlink address as a netip prefix (the address with its
// own prefix length, not masked).
func prefixOfAddr(a netlink.Addr) (netip.Prefix, bool) {
	if a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}
