package kubenode

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// ProxyModes are the kube-proxy modes a k3s node can run (k3s's embedded
// kube-proxy defaults to iptables; nftables is the newer one).
var ProxyModes = []string{"iptables", "nftables"}

// kubeProxyHealthz is kube-proxy's default healthz address: 200 once it
// has synced its rules.
var kubeProxyHealthz = netip.MustParseAddrPort("127.0.0.1:10256")

// StartKubeProxy starts kube-proxy on the node as k3s runs its embedded
// one: the given mode, the cluster CIDR set (so traffic to a Service from
// outside the pod network is masqueraded), with the kubelet's credentials.
// Conntrack sysctls that are not per network namespace are left alone.
//
// A real host has a default route; a lab node does not, and a node process
// could not even send to a ClusterIP (the route lookup that picks its
// source comes before kube-proxy's DNAT). So the node first gets one,
// toward the control plane's namespace, which stands for the internet.
func (k *Node) StartKubeProxy(ctx context.Context, mode string) error {
	if out, err := k.Run(ctx, "ip", "route", "replace", "default", "via", lab.ControlPlaneIP.String()); err != nil {
		return fmt.Errorf("kubenode: node %s: default route: %w: %s", k.Name, err, out)
	}
	if err := k.defaultRoute6(ctx); err != nil {
		return err
	}
	args := []string{filepath.Join(k.bin, "kube-proxy"),
		"--kubeconfig=" + filepath.Join(k.confDir, "kubelet.kubeconfig"),
		"--hostname-override=" + k.Name,
		"--proxy-mode=" + mode,
		"--cluster-cidr=" + k.lab.ClusterCIDRs(),
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--iptables-min-sync-period=1s",
	}
	p, err := k.Start("kube-proxy-"+mode, k.env(), args...)
	if err != nil {
		return err
	}
	k.proxy = p
	netns := filepath.Join("/run/netns", k.NetNS)
	return waitFor(ctx, 60*time.Second, p, func() error {
		_, err := httpGet(ctx, netns, kubeProxyHealthz, "/healthz", 2*time.Second)
		if err != nil {
			return fmt.Errorf("kube-proxy (%s mode) not healthy (see %s): %w", mode, p.Log, err)
		}
		return nil
	})
}

// StopKubeProxy stops kube-proxy and removes its rules, of every mode, as
// `kube-proxy --cleanup` does when a node changes mode.
func (k *Node) StopKubeProxy(ctx context.Context) error {
	if k.proxy == nil {
		return nil
	}
	k.proxy.Stop(10 * time.Second)
	k.proxy = nil
	if out, err := k.Run(ctx, filepath.Join(k.bin, "kube-proxy"), "--cleanup"); err != nil {
		return fmt.Errorf("kubenode: node %s: kube-proxy --cleanup: %w: %s", k.Name, err, out)
	}
	return nil
}
