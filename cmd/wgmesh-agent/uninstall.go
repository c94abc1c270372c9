package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/wgmesh/wgmesh/internal/install"
	"github.com/wgmesh/wgmesh/internal/kube"
	"github.com/wgmesh/wgmesh/internal/uninstall"
)

// runUninstall is `wgmesh-agent uninstall`: everything wgmesh left on this
// node (internal/uninstall), or with --cluster what it left in the API
// (kube.RemoveClusterState). Both are for after the DaemonSet is deleted;
// deploy/uninstall runs them on every node and once for the cluster.
func runUninstall(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	c := &config{}
	c.register(fs)
	var o install.Options
	fs.StringVar(&o.HostRoot, "host-root", "/", "where the host's / is mounted; every other path is a host path below it")
	fs.StringVar(&o.ContainerdConfig, "containerd-config", install.DefaultContainerdConfig, "containerd config.toml naming the CNI dirs (the standard and k3s's dirs are swept anyway)")
	fs.StringVar(&o.CNIBinDir, "cni-bin-dir", "", "CNI bin dir the install used, if not a standard or k3s one")
	fs.StringVar(&o.CNIConfDir, "cni-conf-dir", "", "CNI conf dir the install used, if not a standard or k3s one")
	cniState := fs.String("cni-state-dir", "/var/lib/cni", "libcni's state dir: the IPAM store networks/<network> and cached results/<network>-*")
	network := fs.String("network", "wgmesh", "the conflist's network name")
	cluster := fs.Bool("cluster", false, "remove wgmesh's state in the API instead: wgmesh.io/* annotations and labels of every Node, wgmesh's NetworkUnavailable condition, the subnet Leases in --namespace")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: wgmesh-agent uninstall [flags]\n\n"+
			"Run after deleting the DaemonSet. On a node (as root, in the host's network\n"+
			"namespace): remove wgmesh's routes, rules, chains, WireGuard device, bridge, CNI\n"+
			"files, IPAM store, subnet.env and private key. With --cluster (anywhere, with\n"+
			"the rights of deploy/uninstall's ServiceAccount): remove what wgmesh keeps in the API.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("uninstall: unexpected arguments %q", fs.Args())
	}
	if err := c.resolve(); err != nil {
		return err
	}
	log := c.logger().With("cmd", "uninstall")
	if *cluster {
		client, err := kube.NewClient(c.kubeconfig, apiTimeout)
		if err != nil {
			return err
		}
		r, err := kube.RemoveClusterState(ctx, client, c.namespace)
		log.Info("cluster state removed", "nodes", strings.Join(r.Nodes, ","), "conditions", strings.Join(r.Conditions, ","), "leases", strings.Join(r.Leases, ","))
		if err != nil {
			return fmt.Errorf("uninstall --cluster: %w", err)
		}
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("uninstall: run as root on the node (or with --cluster for the API objects)")
	}
	o.Logger = log
	removed, err := uninstall.Node(ctx, uninstall.Options{
		Install: o, Device: c.iface, Mode: c.mode, Bridge: c.bridge,
		SubnetFile: c.subnetFile, PrivateKey: c.privateKey,
		CNIStateDir: *cniState, Network: *network, Logger: log,
	})
	log.Info("node uninstalled", "removed", len(removed))
	if err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	return nil
}
