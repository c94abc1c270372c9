package dataplane

import (
	"net/netip"

	"github.com/wgmesh/wgmesh/internal/link"
	"github.com/wgmesh/wgmesh/internal/mesh"
)

// ensureGateways sets up bridge before the first pod starts, so that routes
// with the gateway as source (rule 3) can be added: it exists, is up and
// holds the gateway address (first address, with the subnet's prefix
// length) of each pod subnet. It goes through link.EnsureBridge, the same
// function the CNI plugin calls on ADD, so the bridge gets the same fixed
// MAC and settings whoever makes it first, and is never deleted. mtu is
// used only if the bridge is created here. It returns the writes made.
func ensureGateways(bridge string, subnets []netip.Prefix, mtu int) (int, error) {
	if len(subnets) == 0 {
		return 0, nil
	}
	var gateways []netip.Prefix
	for _, s := range subnets {
		if s.Bits() > s.Addr().BitLen()-2 {
			continue // too small for a gateway; mesh.Desired reports it
		}
		gateways = append(gateways, netip.PrefixFrom(mesh.Gateway(s), s.Bits()))
	}
	_, writes, err := link.EnsureBridge(link.BridgeConfig{Name: bridge, MTU: mtu, Gateways: gateways})
	return writes, err
}
