package kubenode

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// StartK3sStack runs, beside the kubelets and wgmesh agents, what else a
// k3s node runs: the internet host (upstream DNS, a server outside the
// cluster), kube-proxy (iptables mode, k3s's default) and the network
// policy controller on every node, and CoreDNS (its pod on dnsNode). It
// returns the CoreDNS pod once it is Ready. Call it once the nodes are
// Ready (the agents run).
func StartK3sStack(ctx context.Context, l *lab.Lab, nodes []*Node, dnsNode string) (*corev1.Pod, error) {
	if err := StartInternet(ctx, l); err != nil {
		return nil, fmt.Errorf("internet host: %w", err)
	}
	for _, k := range nodes {
		if k.proxy == nil { // a node prepared for the DaemonSet runs it already
			if err := k.StartKubeProxy(ctx, "iptables"); err != nil {
				return nil, err
			}
		}
		if err := k.StartNetworkPolicy(ctx); err != nil {
			return nil, err
		}
	}
	return DeployCoreDNS(ctx, l, dnsNode, 120*time.Second)
}

// GetPath sends GET path to dst from inside the network namespace at
// netnsPath and returns the body of a 200 answer (the workload's /client,
// /resolve?name=...).
func GetPath(ctx context.Context, netnsPath string, dst netip.AddrPort, path string, timeout time.Duration) (string, error) {
	return httpGet(ctx, netnsPath, dst, path, timeout)
}
