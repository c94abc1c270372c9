package kubenode

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// NetpolProgram is k3s's embedded network policy controller as the lab
// runs it: kube-router's pkg/controllers/netpol under a small main
// (test/e2e/tools/netpol, built by build-k8s.sh kube-router-netpol).
const NetpolProgram = "kube-router-netpol"

// StartNetworkPolicy starts the network policy controller on the node, as
// k3s's agent starts it (pkg/agent/netpol): the service CIDR, the node
// name, firewall only (no router, no service proxy), kube-router's default
// iptables sync period. It runs with the kubelet's credentials (k3s gives
// it its own k3s-controller user). It returns once the controller has put
// its top-level chains into the node's iptables.
func (k *Node) StartNetworkPolicy(ctx context.Context) error {
	p, err := k.Start(NetpolProgram, k.env(), filepath.Join(k.bin, NetpolProgram),
		"--kubeconfig="+filepath.Join(k.confDir, "kubelet.kubeconfig"),
		"--hostname-override="+k.Name,
		"--service-cidr="+lab.ServiceCIDR,
		"--service-node-port-range=30000-32767",
	)
	if err != nil {
		return err
	}
	k.netpol = p
	return waitFor(ctx, 60*time.Second, p, func() error {
		if out, err := k.Run(ctx, "iptables", "-S", "KUBE-ROUTER-FORWARD"); err != nil {
			return fmt.Errorf("network policy controller has no KUBE-ROUTER-FORWARD chain yet (see %s): %v: %s", p.Log, err, out)
		}
		return nil
	})
}

// StopNetworkPolicy stops the controller. Its chains and ipsets stay, as
// they do when k3s's agent stops.
func (k *Node) StopNetworkPolicy() {
	if k.netpol != nil {
		k.netpol.Stop(10 * time.Second)
		k.netpol = nil
	}
}
