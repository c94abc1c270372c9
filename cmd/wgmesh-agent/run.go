package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/wgmesh/wgmesh/internal/agent"
	"github.com/wgmesh/wgmesh/internal/dataplane"
	"github.com/wgmesh/wgmesh/internal/keys"
	"github.com/wgmesh/wgmesh/internal/kube"
	"github.com/wgmesh/wgmesh/internal/metrics"
)

// runAgent wires keys, the API, the data plane, the HTTP endpoints and the
// reconcile loop, and runs until SIGTERM/SIGINT. On exit the data plane is
// closed, not removed: pods keep their connectivity across restarts.
func runAgent(ctx context.Context, c *config) error {
	log := c.logger()
	key, created, err := keys.LoadOrCreate(c.privateKey)
	if err != nil {
		return err
	}
	log.Info("starting", "version", version, "node", c.nodeName, "publicKey", key.PublicKey().String(),
		"keyCreated", created, "keyFile", c.privateKey, "clusterCIDR", c.clusterCIDRs)

	client, err := kube.NewClient(c.kubeconfig, 0)
	if err != nil {
		return err
	}
	m := metrics.New(nil)
	a, err := agent.New(agent.Config{
		NodeName:          c.nodeName,
		PublicKey:         key.PublicKey(),
		ListenPort:        c.listenPort,
		ClusterCIDRs:      c.clusterCIDRs,
		NodeCIDRMaskSize4: c.nodeCIDRMaskSize,
		NodeCIDRMaskSize6: c.nodeCIDRMask6,
		ReservationDelay:  c.reserveDelay,
		MTU:               c.mtu,
		Masquerade:        c.masquerade,
		SubnetFile:        c.subnetFile,
		Resync:            c.resync,
		Cluster: kube.NewCluster(client, kube.ClusterConfig{
			NodeName: c.nodeName, Namespace: c.namespace, ClusterCIDRs: c.clusterCIDRs, Log: log,
		}),
		NewDataplane: func(mtu int) (agent.Dataplane, error) {
			return dataplane.New(dataplane.Config{
				Device: c.iface, Mode: c.mode, ListenPort: c.listenPort, PrivateKey: key.Key(), MTU: mtu,
				ClusterCIDRs: c.clusterCIDRs, Masquerade: c.masquerade, Bridge: c.bridge, Logger: log,
				OnStartOver: m.AddStartOver, PeerIdle: c.peerIdle,
			})
		},
		Metrics: m,
		Log:     log,
	})
	if err != nil {
		return err
	}

	var srv *http.Server
	if c.metricsAddr != "" {
		ln, err := net.Listen("tcp", c.metricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		srv = &http.Server{Handler: metrics.Handler(m, a.Healthy, a.Ready), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		}()
		log.Info("serving /metrics /healthz /readyz", "addr", ln.Addr().String())
	}

	runErr := a.Run(ctx)
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	return runErr
}
