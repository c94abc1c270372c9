package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/internal/cniconf"
	"github.com/wgmesh/wgmesh/internal/dataplane"
	"github.com/wgmesh/wgmesh/internal/firewall"
	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/route"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// AgentResult is what the agent-like process reports.
type AgentResult struct {
	Peers       int               `json:"peers"`
	ApplyMS     float64           `json:"apply_ms"`
	First       dataplane.Changes `json:"first"`
	Steady      dataplane.Changes `json:"steady"`         // the same state again
	JoinOne     dataplane.Changes `json:"join_one"`       // one node joins
	EndpointOne dataplane.Changes `json:"endpoint_one"`   // one node's endpoint changes
	LeaveOne    dataplane.Changes `json:"leave_one"`      // one node leaves
	RSSKiB      int               `json:"rss_kib"`        // VmRSS after GC
	DeviceKiB   int               `json:"device_kib"`     // VmRSS of the userspace device's own process
	PssKiB      int               `json:"pss_kib"`        // Pss: RSS with shared pages split among their processes
	DevicePss   int               `json:"device_pss_kib"` // Pss of the device process
	HWMKiB      int               `json:"hwm_kib"`        // VmHWM (peak)
	HeapKiB     uint64            `json:"heap_kib"`
	Goroutines  int               `json:"goroutines"`
}

// Active peers with on-demand peers (`wgmesh-bench rss-on-demand`): a
// packet is sent toward this many peers' subnets, as a node whose pods
// talk to a few dozen of the mesh's nodes.
const (
	onDemandActive = 32
	onDemandIdle   = 5 * time.Minute
)

// RunAgentLike is the agent-like process (`wgmesh-bench rss -n N`): in a
// namespace of its own it starts a userspace WireGuard device through
// dataplane.New, applies a mesh of n peers with their routes and firewall
// rules, then one-node changes, and reports its own memory after GC. With
// onDemand (`rss-on-demand`) the device programs peers on demand, and
// onDemandActive of them are sent a packet before the memory is read.
func RunAgentLike(ctx context.Context, n int, onDemand bool) (res AgentResult, err error) {
	c := &testns.Cleanup{}
	defer c.Run()
	node, err := newNetNS(c, fmt.Sprintf("rss%d", n))
	if err != nil {
		return res, err
	}
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return res, err
	}
	nodes := make([]mesh.Node, n+2) // self, n peers, one that joins later
	for i := range nodes {
		k := key
		if i > 0 {
			if k, err = wgtypes.GeneratePrivateKey(); err != nil {
				return res, err
			}
		}
		nodes[i] = mesh.Node{
			Name:      fmt.Sprintf("node-%05d", i),
			PublicKey: k.PublicKey().String(),
			PodCIDRs:  []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 256), byte(i % 256), 0}), 24)},
			Endpoint:  fmt.Sprintf("192.168.%d.%d:51820", i/250, i%250+1),
		}
	}
	dev := devName(900000 + n%1000)
	var idle time.Duration
	if onDemand {
		idle = onDemandIdle
	}
	var dp *dataplane.Dataplane
	apply := func(members []mesh.Node) (dataplane.Changes, error) {
		s, problems := mesh.Desired(nodes[0], members, mesh.Options{})
		if len(problems) > 0 {
			return dataplane.Changes{}, fmt.Errorf("mesh problems: %+v", problems[0])
		}
		var ch dataplane.Changes
		err := node.In(func() error {
			var err error
			ch, err = dp.Apply(ctx, s)
			return err
		})
		return ch, err
	}
	err = node.In(func() error {
		var err error
		dp, err = dataplane.New(dataplane.Config{
			Device: dev, Mode: wireguard.ModeUserspace, PrivateKey: key,
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Masquerade: true, Bridge: cniconf.DefaultBridge,
			Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
			PeerIdle: idle,
		})
		return err
	})
	if err != nil {
		return res, fmt.Errorf("dataplane.New: %w", err)
	}
	c.Add(func() { _ = node.In(func() error { return dp.Cleanup(context.Background()) }) })

	members := nodes[:n+1]
	start := time.Now()
	if res.First, err = apply(members); err != nil {
		return res, err
	}
	res.ApplyMS = float64(time.Since(start)) / 1e6
	if res.Steady, err = apply(members); err != nil {
		return res, err
	}
	if res.JoinOne, err = apply(nodes); err != nil {
		return res, err
	}
	moved := slices_clone(nodes)
	moved[n/2].Endpoint = "192.168.250.250:51820"
	if res.EndpointOne, err = apply(moved); err != nil {
		return res, err
	}
	if res.LeaveOne, err = apply(append(slices_clone(moved[:n/2]), moved[n/2+1:]...)); err != nil {
		return res, err
	}
	res.Peers = n
	if onDemand {
		err := node.In(func() error {
			for i := 1; i <= min(onDemandActive, n); i++ {
				if err := sendWake(nodes[i].PodCIDRs[0]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("send to %d peers: %w", onDemandActive, err)
		}
	}
	// The device process returns its garbage a second after the last
	// configuration (wireguard's tidier); the agent's session watch reads
	// the device every 2 s.
	m := memoryAfterGC(1500 * time.Millisecond)
	res.HeapKiB, res.Goroutines, res.RSSKiB, res.HWMKiB = m.heapKiB, m.goroutines, m.rssKiB, m.hwmKiB
	res.PssKiB = pssKiB("self")
	_ = node.In(func() error { res.DeviceKiB, res.DevicePss = deviceMemKiB(dev); return nil })
	return res, nil
}

// sendWake sends one UDP packet toward the first address of subnet (a
// peer's pod subnet): what programs a parked peer.
func sendWake(subnet netip.Prefix) error {
	c, err := net.Dial("udp", netip.AddrPortFrom(subnet.Addr().Next(), 9).String())
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte("wake"))
	return err
}

func slices_clone(n []mesh.Node) []mesh.Node { return append([]mesh.Node(nil), n...) }

// selfMemory is this process's memory.
type selfMemory struct {
	heapKiB                    uint64 // Go heap in use
	goroutines, rssKiB, hwmKiB int    // VmRSS, and VmHWM (the peak)
}

// memoryAfterGC collects garbage, returns what it freed to the operating
// system, waits settle, and reads this process's memory.
func memoryAfterGC(settle time.Duration) selfMemory {
	runtime.GC()
	debug.FreeOSMemory()
	time.Sleep(settle)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return selfMemory{heapKiB: ms.HeapAlloc >> 10, goroutines: runtime.NumGoroutine(),
		rssKiB: procStatusOf("self", "VmRSS"), hwmKiB: procStatusOf("self", "VmHWM")}
}

// deviceMemKiB is the VmRSS and Pss of the process serving the userspace
// WireGuard device dev (it outlives the agent, so it is a process of its
// own). Call it in the device's namespace.
func deviceMemKiB(dev string) (rss, pss int) {
	pid, ok := wireguard.DevicePID(dev)
	if !ok {
		return 0, 0
	}
	return procStatusOf(strconv.Itoa(pid), "VmRSS"), pssKiB(strconv.Itoa(pid))
}

// binaryCopy copies this binary to a file of its own for the agent-like
// processes, so that their Pss counts the binary's pages as the agent's
// do in production: shared between the agent and its device process only,
// not with this process too.
func binaryCopy() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	src, err := os.Open(self)
	if err != nil {
		return "", err
	}
	defer src.Close()
	f, err := os.CreateTemp("", "wgmesh-bench-agent-")
	if err != nil {
		return "", err
	}
	// Copied as cp copies (copy_file_range), not in one large write: the
	// page cache would then hold the file in large folios, and every
	// process mapping it would count about 10 MiB more resident.
	_, cerr := io.Copy(f, src)
	if err := errors.Join(cerr, f.Chmod(0o755), f.Close()); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// pssKiB is a process's proportional set size: its resident pages, each
// shared page divided among the processes that map it. The agent and its
// device process run the same binary, so RSS counts its pages twice; the
// sum of their Pss counts them once.
func pssKiB(pid string) int {
	b, err := os.ReadFile("/proc/" + pid + "/smaps_rollup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb
		}
	}
	return 0
}

func procStatusOf(pid, field string) int {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb
		}
	}
	return 0
}

// Memory runs the agent-like process for each size and reports its RSS,
// the time of the first full apply, and the kernel writes of one-node
// changes.
func Memory(ctx context.Context, sizes []int) ([]Row, error) {
	self, err := binaryCopy()
	if err != nil {
		return nil, err
	}
	defer os.Remove(self)
	var rows []Row
	sec := "agent at scale"
	for _, n := range sizes {
		r, err := agentLike(ctx, self, "rss", n)
		if err != nil {
			return rows, err
		}
		k, err := agentLike(ctx, self, "rss-kernel", n)
		if err != nil {
			return rows, err
		}
		kmib := float64(k.RSSKiB) / 1024
		krow := Row{Section: sec, Name: fmt.Sprintf("RSS of agent-like process, %d peers + routes (kernel device: peers not in the process)", n), Value: kmib, Unit: "MiB",
			Note: fmt.Sprintf("informer cache of k3s-like Nodes (only the informer's copy), desired state, routes on a veth standing in for the device; peak %.1f MiB, Go heap %.1f MiB", float64(k.HWMKiB)/1024, float64(k.HeapKiB)/1024)}
		if n == 1000 {
			krow = krow.goal("< 40 MiB", kmib < 40)
		}
		rows = append(rows, krow)
		od, err := agentLike(ctx, self, "rss-on-demand", n)
		if err != nil {
			return rows, err
		}
		mib := float64(r.RSSKiB+r.DeviceKiB) / 1024
		row := Row{Section: sec, Name: fmt.Sprintf("RSS of agent-like process + its userspace device process, %d peers + routes", n), Value: mib, Unit: "MiB",
			Note: fmt.Sprintf("after GC; device process %.1f MiB of it; agent peak %.1f MiB, Go heap %.1f MiB, %d goroutines", float64(r.DeviceKiB)/1024, float64(r.HWMKiB)/1024, float64(r.HeapKiB)/1024, r.Goroutines)}
		if n == 1000 {
			row = row.goal("< 40 MiB", mib < 40)
		}
		odmib := float64(od.RSSKiB+od.DeviceKiB) / 1024
		odrow := Row{Section: sec, Name: fmt.Sprintf("RSS of agent-like process + its userspace device process, %d peers + routes, on-demand peers (%d active)", n, min(onDemandActive, n)), Value: odmib, Unit: "MiB",
			Note: fmt.Sprintf("--userspace-peer-idle=%s; a packet sent toward %d peers' subnets; device process %.1f MiB of it; agent %.1f MiB", onDemandIdle, min(onDemandActive, n), float64(od.DeviceKiB)/1024, float64(od.RSSKiB)/1024)}
		if n == 1000 {
			odrow = odrow.goal("< 40 MiB", odmib < 40)
		}
		rows = append(rows, row, odrow)
		for _, p := range []struct {
			what string
			r    AgentResult
		}{{"every peer programmed", r}, {fmt.Sprintf("on-demand peers, %d active", min(onDemandActive, n)), od}} {
			pmib := float64(p.r.PssKiB+p.r.DevicePss) / 1024
			prow := Row{Section: sec, Name: fmt.Sprintf("Pss of agent-like process + its userspace device process, %d peers, %s", n, p.what), Value: pmib, Unit: "MiB",
				Note: fmt.Sprintf("the memory the two take together: the binary's pages they share counted once (RSS counts them in each); device %.1f MiB, agent %.1f MiB", float64(p.r.DevicePss)/1024, float64(p.r.PssKiB)/1024)}
			if n == 1000 {
				prow = prow.goal("< 40 MiB", pmib < 40)
			}
			rows = append(rows, prow)
		}
		rows = append(rows,
			Row{Section: sec, Name: fmt.Sprintf("first apply of %d peers (dataplane.Apply)", n), Value: r.ApplyMS, Unit: "ms",
				Note: fmt.Sprintf("%d peers, %d routes, %d rules, %d links written", r.First.PeersAdded, r.First.RoutesAdded, r.First.RulesChanged, r.First.LinksChanged)},
		)
		if n == sizes[0] {
			ok := r.JoinOne == (dataplane.Changes{PeersAdded: 1, RoutesAdded: 1}) && r.Steady.Total() == 0 &&
				r.EndpointOne == (dataplane.Changes{PeersUpdated: 1}) && r.LeaveOne == (dataplane.Changes{PeersRemoved: 1, RoutesDeleted: 1})
			rows = append(rows, Row{Section: sec, Name: fmt.Sprintf("kernel writes of a one-node change (%d peers)", n), Value: float64(r.JoinOne.Total()), Unit: "writes",
				Note: fmt.Sprintf("join %s; endpoint change %s; leave %s; same state again %s", fmtChanges(r.JoinOne), fmtChanges(r.EndpointOne), fmtChanges(r.LeaveOne), fmtChanges(r.Steady))}.
				goal("1 peer op + its routes", ok))
		}
	}
	return rows, nil
}

func fmtChanges(c dataplane.Changes) string {
	var parts []string
	for _, f := range []struct {
		n    int
		what string
	}{{c.PeersAdded, "peer added"}, {c.PeersUpdated, "peer updated"}, {c.PeersRemoved, "peer removed"},
		{c.RoutesAdded, "route added"}, {c.RoutesDeleted, "route deleted"}, {c.RulesChanged, "rule"}, {c.LinksChanged, "link"}} {
		if f.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", f.n, f.what))
		}
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, " + ")
}

// RunAgentLikeNoDevice is the agent-like process for a kernel WireGuard
// device, whose peers live in the kernel, not in the agent (`wgmesh-bench
// rss-kernel -n N`): the informer cache of N+1 k3s-like Nodes (listed from
// a clientset that builds them per request, so the process holds only what
// the informer keeps), the desired state, and N routes (on a dummy link standing in for the device,
// as this kernel has no WireGuard module) plus the firewall rules applied
// through the route and firewall appliers. Only RSSKiB, HWMKiB, HeapKiB
// and Goroutines are filled.
func RunAgentLikeNoDevice(ctx context.Context, n int) (res AgentResult, err error) {
	c := &testns.Cleanup{}
	defer c.Run()
	node, err := newNetNS(c, fmt.Sprintf("rssk%d", n))
	if err != nil {
		return res, err
	}
	dev := devName(800000 + n%1000)
	// A veth pair stands in for the device: routes need a link that is up.
	for _, args := range [][]string{
		{"link", "add", dev, "type", "veth", "peer", "name", "stand-in"},
		{"link", "set", dev, "up"},
		{"link", "set", "stand-in", "up"},
	} {
		if _, err := node.Run("ip", args...); err != nil {
			return res, err
		}
	}
	if err := testns.Bridge(node, cniconf.DefaultBridge, 0, netip.MustParsePrefix("10.0.0.1/24")); err != nil {
		return res, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := startServedWatcher(ctx, n+1)
	if err != nil {
		return res, err
	}
	nodes := w.Nodes()
	s, problems := mesh.Desired(nodes[0], nodes, mesh.Options{})
	if len(problems) > 0 {
		return res, fmt.Errorf("mesh problems: %+v", problems[0])
	}
	err = node.In(func() error {
		rm, err := route.New(route.Config{Device: dev})
		if err != nil {
			return err
		}
		if _, err := rm.Apply(s.Routes); err != nil {
			return err
		}
		_, err = firewall.New().Apply(firewall.Rules{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, PodSubnets: s.Subnets, Masquerade: true})
		return err
	})
	if err != nil {
		return res, err
	}
	res.Peers = len(s.Peers)
	m := memoryAfterGC(200 * time.Millisecond)
	res.HeapKiB, res.Goroutines, res.RSSKiB, res.HWMKiB = m.heapKiB, m.goroutines, m.rssKiB, m.hwmKiB
	runtime.KeepAlive(w)
	runtime.KeepAlive(s)
	return res, nil
}

func agentLike(ctx context.Context, self, mode string, n int) (AgentResult, error) {
	cmd := exec.CommandContext(ctx, self, mode, "-n", strconv.Itoa(n))
	return helperResult[AgentResult](cmd, fmt.Sprintf("agent-like process (%s) with %d peers", mode, n))
}

// helperResult runs a helper sub-process (see helper) and decodes the JSON
// result it prints.
func helperResult[T any](cmd *exec.Cmd, what string) (T, error) {
	var r T
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("%s: %w", what, err)
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("%s: output: %w", what, err)
	}
	return r, nil
}
