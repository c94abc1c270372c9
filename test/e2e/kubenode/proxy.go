package kubenode

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// StartKubeProxy starts kube-proxy on the node as k3s runs its embedded
// one: iptables mode, the cluster CIDR set (so traffic to a Service from
// outside the pod network is masqueraded), with the kubelet's credentials.
// Conntrack sysctls that are not per network namespace are left alone.
//
// A real host has a default route; a lab node does not, and a node process
// could not even send to a ClusterIP (the route lookup that picks its
// source comes before kube-proxy's DNAT). So the node first gets one,
// toward the control plane's namespace, which stands for the internet.
func (k *Node) StartKubeProxy(ctx context.Context) error {
	if out, err := k.Run(ctx, "ip", "route", "replace", "default", "via", lab.ControlPlaneIP.String()); err != nil {
		return fmt.Errorf("kubenode: node %s: default route: %w: %s", k.Name, err, out)
	}
	args := []string{filepath.Join(k.bin, "kube-proxy"),
		"--kubeconfig=" + filepath.Join(k.confDir, "kubelet.kubeconfig"),
		"--hostname-override=" + k.Name,
		"--proxy-mode=iptables",
		"--cluster-cidr=" + lab.ClusterCIDR,
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--iptables-min-sync-period=1s",
	}
	p, err := k.Start("kube-proxy", k.env(), args...)
	if err != nil {
		return err
	}
	k.proxy = p
	// Ready once it has written its chains.
	return waitFor(ctx, 60*time.Second, p, func() error {
		out, err := k.Run(ctx, "iptables", "-t", "nat", "-S", "KUBE-SERVICES")
		if err != nil || !strings.Contains(out, "KUBE-NODEPORTS") {
			return fmt.Errorf("kube-proxy has not synced (see %s): %v", filepath.Join(k.Dir, "kube-proxy.log"), err)
		}
		return nil
	})
}
