// Command kube-router-netpol runs kube-router's network policy controller
// (github.com/cloudnativelabs/kube-router/v2 pkg/controllers/netpol) on one
// node, configured the way k3s's agent configures the copy it embeds
// (k3s pkg/agent/netpol/netpol.go): the service CIDRs, the NodePort range,
// the node name, the firewall on, no router, no service proxy, the default
// iptables sync period, and no HTTP server of its own (k3s runs the health
// and metrics checks without one).
//
// It is a test harness program of the kubelet lab (test/e2e/kubenode), built
// by test/e2e/tools/build-k8s.sh into the lab's binary cache. It never ships:
// kube-router v2.1.0, the only version the module proxy serves, has security
// advisories against it (docs/lab.md).
//
// This is its own Go module so that kube-router's dependencies never enter
// wgmesh's go.mod.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudnativelabs/kube-router/v2/pkg/controllers/netpol"
	"github.com/cloudnativelabs/kube-router/v2/pkg/healthcheck"
	"github.com/cloudnativelabs/kube-router/v2/pkg/options"
	"github.com/cloudnativelabs/kube-router/v2/pkg/utils"
	"github.com/coreos/go-iptables/iptables"
	v1core "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the node's agent credentials")
	node := flag.String("hostname-override", "", "this node's Node name")
	serviceCIDRs := flag.String("service-cidr", "10.43.0.0/16", "service CIDRs, comma-separated (k3s --service-cidr)")
	nodePortRange := flag.String("service-node-port-range", "30000-32767", "NodePort range (k3s --service-node-port-range)")
	syncPeriod := flag.Duration("iptables-sync-period", options.NewKubeRouterConfig().IPTablesSyncPeriod, "full resync period of the policy chains (k3s keeps kube-router's default)")
	klog.InitFlags(nil)
	flag.Parse()
	if *kubeconfig == "" || *node == "" {
		fmt.Fprintln(os.Stderr, "kube-router-netpol: --kubeconfig and --hostname-override are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *kubeconfig, *node, strings.Split(*serviceCIDRs, ","), *nodePortRange, *syncPeriod); err != nil {
		fmt.Fprintln(os.Stderr, "kube-router-netpol:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig, node string, serviceCIDRs []string, nodePortRange string, syncPeriod time.Duration) error {
	restConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	// kube-router reads the node's addresses from its Node object: wait
	// for it, as k3s does (k3s also waits for the cloud-provider taint to
	// go; the lab has no cloud provider).
	for {
		if _, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
			break
		} else {
			klog.Infof("waiting for Node %s: %v", node, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}

	cfg := options.NewKubeRouterConfig()
	cfg.ClusterIPCIDRs = serviceCIDRs
	v4, v6 := false, false
	for _, c := range serviceCIDRs {
		if strings.Contains(c, ":") {
			v6 = true
		} else {
			v4 = true
		}
	}
	cfg.EnableIPv4, cfg.EnableIPv6 = v4, v6
	cfg.NodePortRange = strings.ReplaceAll(nodePortRange, "-", ":")
	cfg.HostnameOverride = node
	cfg.IPTablesSyncPeriod = syncPeriod
	cfg.RunFirewall = true
	cfg.RunRouter = false
	cfg.RunServiceProxy = false

	iptablesHandlers := map[v1core.IPFamily]utils.IPTablesHandler{}
	ipsetHandlers := map[v1core.IPFamily]utils.IPSetHandler{}
	for _, fam := range []struct {
		on    bool
		ipv6  bool
		proto iptables.Protocol
		name  v1core.IPFamily
	}{{v4, false, iptables.ProtocolIPv4, v1core.IPv4Protocol}, {v6, true, iptables.ProtocolIPv6, v1core.IPv6Protocol}} {
		if !fam.on {
			continue
		}
		h, err := iptables.NewWithProtocol(fam.proto)
		if err != nil {
			return fmt.Errorf("iptables handler: %w", err)
		}
		iptablesHandlers[fam.name] = h
		set, err := utils.NewIPSet(fam.ipv6)
		if err != nil {
			return fmt.Errorf("ipset handler (needs the ipset program): %w", err)
		}
		ipsetHandlers[fam.name] = set
	}

	factory := informers.NewSharedInformerFactory(client, 0)
	podInformer := factory.Core().V1().Pods().Informer()
	nsInformer := factory.Core().V1().Namespaces().Informer()
	npInformer := factory.Networking().V1().NetworkPolicies().Informer()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	// netpol's Run sends heartbeats that a health controller must drain;
	// k3s runs it with no HTTP server (HealthPort 0), and so does this.
	healthCh := make(chan *healthcheck.ControllerHeartbeat)
	var wg sync.WaitGroup
	hc, err := healthcheck.NewHealthController(cfg)
	if err != nil {
		return err
	}
	hc.SetAlive()
	wg.Add(1)
	go hc.RunCheck(healthCh, ctx.Done(), &wg)

	npc, err := netpol.NewNetworkPolicyController(client, cfg, podInformer, npInformer, nsInformer, &sync.Mutex{}, iptablesHandlers, ipsetHandlers)
	if err != nil {
		return fmt.Errorf("network policy controller: %w", err)
	}
	if _, err := podInformer.AddEventHandler(npc.PodEventHandler); err != nil {
		return err
	}
	if _, err := nsInformer.AddEventHandler(npc.NamespaceEventHandler); err != nil {
		return err
	}
	if _, err := npInformer.AddEventHandler(npc.NetworkPolicyEventHandler); err != nil {
		return err
	}
	klog.Infof("starting kube-router network policy controller on node %s (service CIDRs %v, %s)", node, serviceCIDRs, runtime.Version())
	wg.Add(1)
	go npc.Run(healthCh, ctx.Done(), &wg)
	<-ctx.Done()
	wg.Wait()
	return nil
}
