package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"

	"github.com/wgmesh/wgmesh/internal/cnibench"
)

// path is one way across the lab from node 0 to node 1.
type path struct {
	name     string
	from, to *netNS
	dst      netip.Addr
}

// paths are the three ways from node a to node b: pod to pod over the mesh,
// node to node through the same WireGuard device (b's cni0 gateway is in
// b's pod subnet, so a routes it into the tunnel: the tunnel's own limit),
// and node to node on the raw underlay (the link's limit).
func paths(a, b *labNode) []path {
	return []path{
		{"pod-to-pod over mesh", a.pod, b.pod, b.podIP},
		{"node-to-node over WireGuard", a.netns, b.netns, b.gw},
		{"node-to-node raw underlay", a.netns, b.netns, b.under},
	}
}

// vxlanPaths are the ways from node a to node b of flannel's VXLAN
// datapath: pod to pod through cni0 and flannel.1, and node to node through
// flannel.1 alone (b's cni0 gateway is in b's pod subnet, routed via
// flannel.1 as the tunnel path is via the WireGuard device).
func vxlanPaths(a, b *labNode) []path {
	return []path{
		{"pod-to-pod over flannel VXLAN", a.pod, b.pod, b.podIP},
		{"node-to-node over kernel VXLAN", a.netns, b.netns, b.gw},
	}
}

// iperf3 runs one TCP test of secs seconds with streams parallel streams
// and returns the receiver's throughput in Gbit/s.
//
// cpu is the CPU time spent per GB received, by this process, the
// userspace WireGuard device processes (pids devices: each node's device
// runs in a process of its own) and the iperf3 processes (whose syscalls
// carry most of the kernel's forwarding work): a figure that machine load
// changes much less than throughput. Every run counts the devices, also
// one that does not cross them (their idle cost is near zero), so all paths
// are measured alike.
func iperf3(ctx context.Context, p path, port, streams, secs int, devices []int) (gbps, cpu float64, err error) {
	spent := func() time.Duration { return selfCPU() + cnibench.ChildrenCPU() + procsCPU(devices) }
	cpu0 := spent()
	var bytes float64
	defer func() {
		if err == nil && bytes > 0 {
			cpu = (spent() - cpu0).Seconds() / (bytes / 1e9)
		}
	}()
	srv := p.to.Cmd("iperf3", "-s", "-B", p.dst.String(), "-p", strconv.Itoa(port))
	srv.Stdout, srv.Stderr = io.Discard, io.Discard
	if err := srv.Start(); err != nil {
		return 0, 0, fmt.Errorf("start iperf3 server: %w", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	// Wait until it listens: connect from the server's namespace itself.
	if err := waitListening(p.to, netip.AddrPortFrom(p.dst, uint16(port)), 5*time.Second); err != nil {
		return 0, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+20*time.Second)
	defer cancel()
	cli := exec.CommandContext(ctx, "ip", "netns", "exec", p.from.Name, "iperf3", "-c", p.dst.String(), "-p", strconv.Itoa(port),
		"-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams), "-J")
	out, err := cli.Output()
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				Bytes         float64 `json:"bytes"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil || res.Error != "" || err != nil {
		return 0, 0, fmt.Errorf("iperf3 %s (-P %d): %v %s %v", p.name, streams, err, res.Error, jerr)
	}
	_ = srv.Process.Kill()
	_ = srv.Wait() // reaped: its CPU time counts now
	bytes = res.End.SumReceived.Bytes
	return res.End.SumReceived.BitsPerSecond / 1e9, 0, nil
}

// procsCPU is the user+system time of the processes pids so far (0 for one
// that is gone).
func procsCPU(pids []int) time.Duration {
	var secs float64
	for _, pid := range pids {
		p, err := procfs.NewProc(pid)
		if err != nil {
			continue
		}
		if st, err := p.Stat(); err == nil {
			secs += st.CPUTime()
		}
	}
	return time.Duration(secs * float64(time.Second))
}

func waitListening(n *netNS, ap netip.AddrPort, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var err error
		nerr := n.In(func() error {
			var c net.Conn
			c, err = net.DialTimeout("tcp", ap.String(), 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return nil
		})
		if nerr != nil {
			return nerr
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s in %s: %w", ap, n.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The request/response test runs in processes of its own (this binary
// re-executed as `rr-server` / `rr-client` inside a namespace), as pods
// would, apart from the process that runs the WireGuard devices.

// RRServe echoes 64-byte messages on listen until the first client leaves.
func RRServe(listen string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Println("listening") // the parent waits for this line
	c, err := ln.Accept()
	ln.Close()
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
}

// RRClient does n 64-byte round trips to addr (after warm-up ones) and
// prints the latencies (ns) as JSON.
func RRClient(addr string, n int) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	lat := make([]int64, 0, n)
	for i := range n + 50 {
		binary.BigEndian.PutUint64(buf, uint64(i))
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if i >= 50 {
			lat = append(lat, int64(time.Since(start)))
		}
	}
	return json.NewEncoder(os.Stdout).Encode(lat)
}

// rr measures request/response latency over p with n round trips.
func rr(ctx context.Context, p path, port, n int) (cnibench.Durations, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr := netip.AddrPortFrom(p.dst, uint16(port)).String()
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", p.to.Name, self, "rr-server", "-listen", addr)
	stdout, err := srv.StdoutPipe()
	if err != nil {
		return nil, err
	}
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "listening" {
		return nil, fmt.Errorf("rr-server in %s: %q %v", p.to.Name, line, err)
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", p.from.Name, self, "rr-client", "-addr", addr, "-n", strconv.Itoa(n)).Output()
	if err != nil {
		return nil, fmt.Errorf("rr-client %s: %w", p.name, err)
	}
	var ns []int64
	if err := json.Unmarshal(out, &ns); err != nil {
		return nil, fmt.Errorf("rr-client output: %w", err)
	}
	d := make(cnibench.Durations, len(ns))
	for i, v := range ns {
		d[i] = time.Duration(v)
	}
	return d, nil
}
