package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/wgmesh/wgmesh/internal/route"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// ReadStatus reads the WireGuard device and wgmesh's routes without
// changing anything (New would create or reconfigure the device; `status`
// and `doctor` must not). Peers carry no Node: only the running applier
// knows which node a key was programmed for.
func ReadStatus(ctx context.Context, device string) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	o, err := wireguard.Inspect(device)
	st := Status{Device: device, Mode: o.Mode, MTU: o.MTU}
	if err != nil {
		return st, err
	}
	st.PublicKey, st.ListenPort = o.Device.PublicKey.String(), o.Device.ListenPort
	for _, p := range o.Device.Peers {
		st.Peers = append(st.Peers, PeerStatusOf(p))
	}
	rm, err := route.New(route.Config{Device: device})
	if err != nil {
		return st, err
	}
	st.RouteTable, st.RulePriority = rm.Table(), rm.RulePriority()
	if st.Routes, err = rm.List(); err != nil {
		return st, fmt.Errorf("list wgmesh routes: %w", err)
	}
	return st, nil
}

// UnderlayMTU returns the MTU of the interface that holds addr (the node's
// InternalIP), in the network namespace of the calling thread; the device
// MTU is this minus WireGuard's overhead.
func UnderlayMTU(addr netip.Addr) (int, error) {
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
