package kubenode

import (
	"context"
	"fmt"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// nodeIPs is kubelet --node-ip: the IPv4 address, and the IPv6 one in a
// dual-stack lab (the Node then lists an InternalIP of each family).
func nodeIPs(c Config) string {
	if !c.NodeIP6.IsValid() {
		return c.NodeIP.String()
	}
	return c.NodeIP.String() + "," + c.NodeIP6.String()
}

// defaultRoute6 gives a dual-stack node its IPv6 default route, toward the
// control plane as the IPv4 one (see StartKubeProxy).
func (k *Node) defaultRoute6(ctx context.Context) error {
	if !k.Addr6.IsValid() {
		return nil
	}
	if out, err := k.Run(ctx, "ip", "-6", "route", "replace", "default", "via", lab.ControlPlaneIP6.String()); err != nil {
		return fmt.Errorf("kubenode: node %s: IPv6 default route: %w: %s", k.Name, err, out)
	}
	return nil
}
