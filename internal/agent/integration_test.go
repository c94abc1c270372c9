package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/wgmesh/wgmesh/internal/dataplane"
	"github.com/wgmesh/wgmesh/internal/kube"
	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/metrics"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// nsDataplane runs every data plane call inside the node's network
// namespace on a locked thread (ns.Do): the agent's worker goroutine may
// run on any thread.
type nsDataplane struct {
	n  ns.NetNS
	dp *dataplane.Dataplane
}

func (d nsDataplane) Apply(ctx context.Context, s mesh.State) (ch dataplane.Changes, err error) {
	if nerr := d.n.Do(func(ns.NetNS) error { ch, err = d.dp.Apply(ctx, s); return nil }); nerr != nil {
		return ch, nerr
	}
	return ch, err
}

func (d nsDataplane) Status(ctx context.Context) (st dataplane.Status, err error) {
	if nerr := d.n.Do(func(ns.NetNS) error { st, err = d.dp.Status(ctx); return nil }); nerr != nil {
		return st, nerr
	}
	return st, err
}

func (d nsDataplane) CheckDevice(ctx context.Context) (err error) {
	if nerr := d.n.Do(func(ns.NetNS) error { err = d.dp.CheckDevice(ctx); return nil }); nerr != nil {
		return nerr
	}
	return err
}

func (d nsDataplane) Close() error {
	return d.n.Do(func(ns.NetNS) error { return d.dp.Close() })
}

// itNode is one simulated node: a network namespace with eth0 on a shared
// underlay bridge, running a real agent with the real data plane.
type itNode struct {
	name   string
	netns  ns.NetNS
	under  netip.Addr
	dev    string
	key    wgtypes.Key
	subnet string
	logs   *logBuf
	m      *metrics.Metrics
	agent  *Agent
	stop   func()
}

// newItNodes makes nodes a and b for an integration test: each a
// namespace on an underlay of its own (192.168.<net>.0/24) with forwarding
// on, a key, a device name wg<tag><suffix><i>, and a Node in c with pod CIDR
// 10.42.<i>.0/24. Their agents are not started. Cleanup, registered before
// any agent starts and so run after the agents stopped, removes whichever
// device serves the node then and its log.
func newItNodes(t *testing.T, c *fake.Clientset, net byte, tag string) []*itNode {
	t.Helper()
	suffix := testns.Suffix(t)
	under := testns.NewUnderlay(t)
	dir := t.TempDir()
	var nodes []*itNode
	for i, name := range []string{"a", "b"} {
		nd := &itNode{name: name, netns: testns.New(t), under: netip.AddrFrom4([4]byte{192, 168, net, byte(i + 1)}),
			dev: fmt.Sprintf("wg%s%s%d", tag, suffix, i), subnet: filepath.Join(dir, name, "subnet.env")}
		var err error
		if nd.key, err = wgtypes.GeneratePrivateKey(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := nd.netns.Do(func(ns.NetNS) error { return wireguard.Remove(nd.dev) }); err != nil {
				t.Errorf("remove %s: %v", nd.dev, err)
			}
			// A killed device process leaves its log (for the post-mortem).
			os.Remove(filepath.Join("/run/wgmesh", nd.dev+"-device.log"))
		})
		under.Attach(t, nd.netns, fmt.Sprintf("u%s%s%d", tag, suffix, i), netip.PrefixFrom(nd.under, 24))
		testns.Do(t, nd.netns, func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) })
		apiN := apiNode(name, fmt.Sprintf("10.42.%d.0/24", i), nd.under.String(), wgtypes.Key{})
		if _, err := c.CoreV1().Nodes().Create(context.Background(), apiN, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, nd)
	}
	return nodes
}

// startReady starts the agents of nodes and waits until each is ready: it
// has published its key, learnt the other's and programmed the mesh.
func startReady(t *testing.T, c *fake.Clientset, nodes []*itNode) {
	t.Helper()
	for _, nd := range nodes {
		nd.start(t, c)
	}
	for _, nd := range nodes {
		eventually(t, nd.name+" ready", func() bool { return nd.agent.Ready() == nil })
	}
}

func TestIntegrationAgentsBuildWorkingMesh(t *testing.T) {
	testutil.RequireRoot(t)
	c := fake.NewClientset()
	nodes := newItNodes(t, c, 78, "i")
	// Both agents publish their keys, learn each other and get ready.
	startReady(t, c, nodes)
	a, bn := nodes[0], nodes[1]
	eventually(t, "a has b's peer", func() bool {
		st, err := nsDataplane{a.netns, nil}.statusOf(a)
		return err == nil && len(st.Peers) == 1 && st.Peers[0].PublicKey == bn.key.PublicKey().String()
	})

	// The tunnel works: a's pod gateway reaches b's through WireGuard.
	// (The data plane created cni0 with the gateway, the routes use it as
	// source, so the reply comes back through the tunnel.)
	var out string
	var err error
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if out, err = testns.Run(a.netns, "ping", "-c", "1", "-W", "1", "-I", "10.42.0.1", "10.42.1.1"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("ping 10.42.1.1 from a's gateway through the mesh: %v\n%s", err, out)
	}
	wg, _ := testns.Run(a.netns, "wg", "show", a.dev)
	t.Logf("wg show on a:\n%s", strings.ReplaceAll(wg, a.key.String(), "(private)"))

	// The CLI reads the running agent's userspace device (UAPI socket).
	if bin := agentBinary(); bin != "" {
		out, err := testns.Run(a.netns, bin, "status", "--interface", a.dev, "--node-name", "a", "--kubeconfig", filepath.Join(t.TempDir(), "missing.kubeconfig"))
		t.Logf("wgmesh-agent status (err=%v):\n%s", err, out)
		if err != nil || !strings.Contains(out, "peer: (node unknown)") || !strings.Contains(out, bn.key.PublicKey().String()) ||
			!strings.Contains(out, "route: 10.42.1.0/24 dev "+a.dev+" src 10.42.0.1 table 87: ok") {
			t.Errorf("status output is not what a person needs")
		}
		if strings.Contains(out, a.key.String()) {
			t.Error("status prints the private key")
		}
		out, err = testns.Run(a.netns, bin, "doctor", "--interface", a.dev, "--node-name", "a", "--kubeconfig", filepath.Join(t.TempDir(), "missing.kubeconfig"))
		t.Logf("wgmesh-agent doctor (err=%v):\n%s", err, out)
	} else {
		t.Log("bin/wgmesh-agent not built: CLI part skipped (make build)")
	}

	// subnet.env: the node subnet, and the MTU from the underlay (1500 - 60).
	env, err := subnetenv.Read(a.subnet)
	if err != nil {
		t.Fatal(err)
	}
	if env.Subnet != netip.MustParsePrefix("10.42.0.0/24") || env.MTU != 1440 || env.Network != netip.MustParsePrefix("10.42.0.0/16") || !env.IPMasq {
		t.Errorf("a's subnet.env = %+v", env)
	}

	// Metrics describe the live tunnel.
	srv := httptest.NewServer(metrics.Handler(a.m, a.agent.Healthy, a.agent.Ready))
	defer srv.Close()
	eventually(t, "metrics show b up", func() bool {
		body := httpGet(t, srv.URL+"/metrics")
		return strings.Contains(body, `wgmesh_peers{state="up"} 1`) && strings.Contains(body, `wgmesh_peer_rx_bytes_total{node="b"}`) &&
			strings.Contains(body, `wgmesh_kernel_changes_total{kind="peer_add"} 1`) && strings.Contains(body, `wgmesh_peer_last_handshake_seconds{node="b"}`)
	})
	if body := httpGet(t, srv.URL+"/readyz"); body != "ok\n" {
		t.Errorf("readyz = %q", body)
	}

	// Restart a with nothing changed: no API writes, subnet.env untouched.
	// (The userspace device's process outlives the agent, so the new agent
	// adopts it with its peer, as it adopts a kernel device.)
	patches := countActions(c, "patch", "nodes", "") + countActions(c, "patch", "nodes", "status")
	st1, _ := os.Stat(a.subnet)
	a.stop()
	a.start(t, c)
	eventually(t, "restarted a ready", func() bool { return a.agent.Ready() == nil })
	if _, err := testns.Run(a.netns, "ping", "-c", "1", "-W", "2", "-I", "10.42.0.1", "10.42.1.1"); err != nil {
		t.Errorf("no ping after the restart: %v", err)
	}
	if got := countActions(c, "patch", "nodes", "") + countActions(c, "patch", "nodes", "status"); got != patches {
		t.Errorf("restart made %d node patches", got-patches)
	}
	if st2, _ := os.Stat(a.subnet); !os.SameFile(st1, st2) || !st1.ModTime().Equal(st2.ModTime()) {
		t.Error("restart rewrote subnet.env")
	}

	// Node b is deleted: a removes its peer and route from the kernel.
	bn.stop()
	if err := c.CoreV1().Nodes().Delete(context.Background(), "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b's peer and route gone from a's kernel", func() bool {
		st, err := nsDataplane{a.netns, nil}.statusOf(a)
		return err == nil && len(st.Peers) == 0 && len(st.Routes) == 0
	})
	// The decision is logged right after the kernel write.
	eventually(t, "peer removed logged", func() bool { return strings.Contains(a.logs.String(), `msg="peer removed" node=b`) })
	if !strings.Contains(a.logs.String(), `msg="peer added" node=b allowedIPs=[10.42.1.0/24]`) {
		t.Errorf("a's log lacks the peer added line")
	}
	for _, nd := range nodes {
		if strings.Contains(nd.logs.String(), nd.key.String()) {
			t.Errorf("%s's private key appears in its log", nd.name)
		}
	}
}

// statusOf reads the device of nd through the read-only path `status` uses.
func (nsDataplane) statusOf(nd *itNode) (st dataplane.Status, err error) {
	if nerr := nd.netns.Do(func(ns.NetNS) error { st, err = dataplane.ReadStatus(context.Background(), nd.dev); return nil }); nerr != nil {
		return st, nerr
	}
	return st, err
}

func (nd *itNode) start(t *testing.T, c *fake.Clientset) {
	t.Helper()
	nd.logs = &logBuf{}
	log := slog.New(slog.NewTextHandler(nd.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}
	nd.m = metrics.New(nil)
	a, err := New(Config{
		NodeName: nd.name, PublicKey: nd.key.PublicKey(), ClusterCIDRs: cidrs, Masquerade: true,
		SubnetFile: nd.subnet, Resync: time.Hour,
		Cluster: kube.NewCluster(c, kube.ClusterConfig{NodeName: nd.name, Namespace: "kube-system", ClusterCIDRs: cidrs, Log: log}),
		NewDataplane: func(mtu int) (Dataplane, error) {
			var dp *dataplane.Dataplane
			err := nd.netns.Do(func(ns.NetNS) error {
				var err error
				dp, err = dataplane.New(dataplane.Config{
					Device: nd.dev, Mode: wireguard.ModeUserspace, PrivateKey: nd.key, MTU: mtu,
					ClusterCIDRs: cidrs, Masquerade: true, Bridge: "cni0", Logger: log,
				})
				return err
			})
			if err != nil {
				return nil, err
			}
			return nsDataplane{nd.netns, dp}, nil
		},
		UnderlayMTU: func(addr netip.Addr) (mtu int, err error) {
			nerr := nd.netns.Do(func(ns.NetNS) error { mtu, err = dataplane.UnderlayMTU(addr); return nil })
			return mtu, cmpErr(nerr, err)
		},
		Metrics: nd.m,
		Log:     log,
	})
	if err != nil {
		t.Fatal(err)
	}
	nd.agent = a
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	stopped := false
	nd.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(nd.stop)
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// agentBinary is $WGMESH_BIN/wgmesh-agent (default <repo>/bin), or "" if
// it is not built.
func agentBinary() string {
	dir := os.Getenv("WGMESH_BIN")
	if dir == "" {
		dir = filepath.Join("..", "..", "bin")
	}
	p, err := filepath.Abs(filepath.Join(dir, "wgmesh-agent"))
	if err != nil {
		return ""
	}
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
