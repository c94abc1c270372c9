// Package netconv converts between net/netip values, which wgmesh's pure
// code uses, and the net.IP and net.IPNet of netlink, wgctrl and the CNI
// libraries, at the boundary with them. It holds no logic beyond that.
package netconv

import (
	"net"
	"net/netip"
)

// IPNet is p as the *net.IPNet netlink and the CNI libraries take: the
// address as p has it (host bits kept, for an interface address), 4 bytes
// for IPv4.
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Prefix is n as a masked netip.Prefix; IPv4 stays IPv4 in 16-byte form
// too. ok is false for an IPNet without a valid address or mask.
func Prefix(n net.IPNet) (p netip.Prefix, ok bool) {
	addr, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	addr = addr.Unmap()
	if addr.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(addr, ones).Masked(), true
}

// Addr is ip as a netip.Addr, IPv4 unmapped; the zero Addr for an invalid ip.
func Addr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
