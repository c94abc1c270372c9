package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"

	"github.com/wgmesh/wgmesh/internal/agent"
	"github.com/wgmesh/wgmesh/internal/cniconf"
	"github.com/wgmesh/wgmesh/internal/dataplane"
	"github.com/wgmesh/wgmesh/internal/kube"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// RealAgentResult is what the real agent (internal/agent with kube.Cluster
// and dataplane.Dataplane, as cmd/wgmesh-agent wires them) did against a
// fake API server holding n Nodes.
type RealAgentResult struct {
	Peers        int            `json:"peers"`
	ReadyMS      float64        `json:"ready_ms"`
	AtStart      map[string]int `json:"at_start"`
	During       map[string]int `json:"during"`
	WindowMS     float64        `json:"window_ms"`
	Heartbeats   int            `json:"heartbeats"`
	RSSKiB       int            `json:"rss_kib"`
	DeviceKiB    int            `json:"device_kib"` // the userspace device's own process
	PssKiB       int            `json:"pss_kib"`
	DevicePss    int            `json:"device_pss_kib"`
	HeapKiB      uint64         `json:"heap_kib"`
	DevicePeers  int            `json:"device_peers"`
	StatusRoutes int            `json:"status_routes"`
}

// RunRealAgent runs the agent of cmd/wgmesh-agent, with a userspace
// device, against a fake clientset holding n+1 Nodes (node-00000 is this
// one). Call it in a process that is entirely inside a network namespace
// of its own (`ip netns exec NS wgmesh-bench agent -n N`): the agent's
// goroutines use whatever thread they land on. It waits until the agent is
// ready, lets ten kubelets update their Node status every 100 ms for
// window, and reports the API requests by verb, and the process's RSS.
// With onDemand the device programs peers on demand and onDemandActive of
// them are sent a packet before the memory is read, as in RunAgentLike.
func RunRealAgent(ctx context.Context, n int, window time.Duration, onDemand bool) (res RealAgentResult, err error) {
	client, objs, err := fakeCluster(n + 1)
	if err != nil {
		return res, err
	}
	var mu sync.Mutex
	counts := map[string]int{}
	count := func(a k8stesting.Action) {
		k := a.GetVerb() + " " + a.GetResource().Resource
		if s := a.GetSubresource(); s != "" {
			k += "/" + s
		}
		mu.Lock()
		counts[k]++
		mu.Unlock()
	}
	client.PrependReactor("*", "*", func(a k8stesting.Action) (bool, kruntime.Object, error) { count(a); return false, nil, nil })
	client.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) { count(a); return false, nil, nil })

	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp("", "wgbench-agent-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	cluster := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dev := devName(700000 + n%1000)
	var idle time.Duration
	if onDemand {
		idle = onDemandIdle
	}
	var dp *dataplane.Dataplane
	a, err := agent.New(agent.Config{
		NodeName: "node-00000", PublicKey: key.PublicKey(), ClusterCIDRs: cluster, Masquerade: true,
		SubnetFile: filepath.Join(dir, "subnet.env"), Resync: time.Minute,
		Cluster: kube.NewCluster(client, kube.ClusterConfig{NodeName: "node-00000", Namespace: "kube-system", ClusterCIDRs: cluster, Log: log}),
		NewDataplane: func(mtu int) (agent.Dataplane, error) {
			var err error
			dp, err = dataplane.New(dataplane.Config{Device: dev, Mode: wireguard.ModeUserspace, PrivateKey: key, MTU: mtu,
				ClusterCIDRs: cluster, Masquerade: true, Bridge: cniconf.DefaultBridge, Logger: log, PeerIdle: idle})
			return dp, err
		},
		UnderlayMTU: func(netip.Addr) (int, error) { return 1500, nil },
		Log:         log,
	})
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		if dp != nil {
			_ = dp.Cleanup(context.Background())
		}
	}()
	for a.Ready() != nil {
		select {
		case err := <-done:
			return res, fmt.Errorf("agent stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Since(start) > 2*time.Minute {
			return res, fmt.Errorf("agent not ready after 2m: %v", a.Ready())
		}
	}
	res.ReadyMS = float64(time.Since(start)) / 1e6
	time.Sleep(500 * time.Millisecond) // let the first reconcile's own writes settle
	mu.Lock()
	res.AtStart = counts
	counts = map[string]int{}
	mu.Unlock()

	wstart := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	for time.Since(wstart) < window {
		<-tick.C
		for j := range 10 {
			o := objs[1+(res.Heartbeats+j)%n].DeepCopy()
			o.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}
			if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, o, metav1.UpdateOptions{}); err != nil {
				tick.Stop()
				return res, fmt.Errorf("heartbeat: %w", err)
			}
		}
		res.Heartbeats += 10
	}
	tick.Stop()
	res.WindowMS = float64(time.Since(wstart)) / 1e6
	mu.Lock()
	res.During = counts
	res.During["update nodes/status"] -= res.Heartbeats // the kubelets', not the agent's
	if res.During["update nodes/status"] == 0 {
		delete(res.During, "update nodes/status")
	}
	mu.Unlock()

	st, err := dp.Status(ctx)
	if err != nil {
		return res, err
	}
	res.Peers, res.DevicePeers, res.StatusRoutes = n, len(st.Peers), len(st.Routes)
	if onDemand {
		for _, o := range objs[1 : 1+min(onDemandActive, n)] {
			if err := sendWake(netip.MustParsePrefix(o.Spec.PodCIDR)); err != nil {
				return res, fmt.Errorf("send to %d peers: %w", onDemandActive, err)
			}
		}
	}
	m := memoryAfterGC(1500 * time.Millisecond) // after the device process's tidier, as in RunAgentLike
	res.HeapKiB, res.RSSKiB = m.heapKiB, m.rssKiB
	res.PssKiB = pssKiB("self")
	res.DeviceKiB, res.DevicePss = deviceMemKiB(dev) // this process runs in the device's namespace
	return res, nil
}

// RealAgent runs RunRealAgent in a child process inside a namespace of its
// own, for each size.
func RealAgent(ctx context.Context, sizes []int) ([]Row, error) {
	self, err := binaryCopy() // so that Pss counts the binary's pages as in production
	if err != nil {
		return nil, err
	}
	defer os.Remove(self)
	var rows []Row
	sec := "agent at scale"
	for _, n := range sizes {
		r, err := realAgent(self, "agent", n)
		if err != nil {
			return rows, err
		}
		during := 0
		for _, v := range r.During {
			during += v
		}
		mib := float64(r.RSSKiB+r.DeviceKiB) / 1024
		row := Row{Section: sec, Name: fmt.Sprintf("real agent (internal/agent), %d peers, userspace device: RSS of agent + device process", n), Value: mib, Unit: "MiB",
			Note: fmt.Sprintf("after GC, fake API server in the process; device process %.1f MiB of it; Pss of the two %.1f MiB; Go heap %.1f MiB; device has %d peers, %d routes",
				float64(r.DeviceKiB)/1024, float64(r.PssKiB+r.DevicePss)/1024, float64(r.HeapKiB)/1024, r.DevicePeers, r.StatusRoutes)}
		if n == 1000 {
			row = row.goal("< 40 MiB", mib < 40)
		}
		rows = append(rows, row,
			Row{Section: sec, Name: fmt.Sprintf("real agent, %d peers: start until ready (first full reconcile)", n), Value: r.ReadyMS, Unit: "ms"},
			Row{Section: sec, Name: fmt.Sprintf("real agent, %d nodes: API requests until ready", n), Value: float64(sumMap(r.AtStart)), Unit: "requests", Note: strings.Join(fmtCounts(r.AtStart), ", ")},
			Row{Section: sec, Name: fmt.Sprintf("real agent, %d nodes: API requests over %.0f s with %d node heartbeats", n, r.WindowMS/1000, r.Heartbeats), Value: float64(during), Unit: "requests",
				Note: strings.Join(fmtCounts(r.During), ", ")}.goal("0 (watch only)", during == 0),
		)
		if n != 1000 {
			continue
		}
		od, err := realAgent(self, "agent-on-demand", n)
		if err != nil {
			return rows, err
		}
		rows = append(rows, Row{Section: sec, Name: fmt.Sprintf("real agent (internal/agent), %d peers, userspace device, on-demand peers (%d active): Pss of agent + device process", n, min(onDemandActive, n)),
			Value: float64(od.PssKiB+od.DevicePss) / 1024, Unit: "MiB",
			Note: fmt.Sprintf("--userspace-peer-idle=%s, a packet sent toward %d peers' subnets; RSS %.1f MiB, device process %.1f MiB Pss; Go heap %.1f MiB, the fake API server's Nodes included",
				onDemandIdle, min(onDemandActive, n), float64(od.RSSKiB+od.DeviceKiB)/1024, float64(od.DevicePss)/1024, float64(od.HeapKiB)/1024)})
	}
	return rows, nil
}

// realAgent runs `self mode -n n` (RunRealAgent) in a namespace of its own.
func realAgent(self, mode string, n int) (RealAgentResult, error) {
	c := &testns.Cleanup{}
	defer c.Run()
	ns, err := newNetNS(c, fmt.Sprintf("agent%d", n))
	if err != nil {
		return RealAgentResult{}, err
	}
	return helperResult[RealAgentResult](ns.Cmd(self, mode, "-n", strconv.Itoa(n)), fmt.Sprintf("real agent (%s) with %d peers", mode, n))
}

func sumMap(m map[string]int) int {
	t := 0
	for _, v := range m {
		t += v
	}
	return t
}
