package agent

import (
	"fmt"
	"net"
	"net/netip"
)

// InterfaceMTU returns the MTU of the interface that holds addr, in the
// network namespace of the calling thread.
func InterfaceMTU(addr netip.Addr) (int, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return 0, fmt.Errorf("list interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == addr {
				return ifc.MTU, nil
			}
		}
	}
	return 0, fmt.Errorf("no interface holds %s", addr)
}
