package main

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/wgmesh/wgmesh/internal/firewall"
	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/route"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// Converge measures, in the namespace lab driven by the data plane (this
// process plays every node's agent), how long a node join takes until every
// existing node has a handshake with the new node and reaches its pod, for
// each cluster size; and, in the first lab, the packets lost over a
// restart of the apply layer and over one of the agent process.
func Converge(ctx context.Context, sizes []int) ([]Row, error) {
	var rows []Row
	for i, n := range sizes {
		r, err := join(ctx, n, i == 0)
		rows = append(rows, r...)
		if err != nil {
			return rows, err
		}
	}
	return rows, nil
}

func join(ctx context.Context, n int, restarts bool) ([]Row, error) {
	c := &testns.Cleanup{}
	defer c.Run()
	l, err := newLab(c, wireguard.DefaultMTU)
	if err != nil {
		return nil, err
	}
	for i := range n {
		if _, err := l.addNode(i); err != nil {
			return nil, err
		}
	}
	old, joiner := l.nodes[:n-1], l.nodes[n-1]
	for _, nd := range old {
		if err := l.startAgent(nd); err != nil {
			return nil, err
		}
	}
	if err := l.applyAll(ctx, old, old); err != nil {
		return nil, err
	}

	// The join: the new node's agent starts and applies, and every other
	// agent applies the cluster with the new Node in it (the informer event).
	start := time.Now()
	applied := make(chan error, 1)
	go func() {
		if err := l.startAgent(joiner); err != nil {
			applied <- err
			return
		}
		_, err := l.apply(ctx, joiner, l.nodes)
		applied <- err
	}()
	if err := l.applyAll(ctx, old, l.nodes); err != nil {
		return nil, err
	}
	if err := <-applied; err != nil {
		return nil, err
	}
	applyDone := time.Since(start)
	var (
		mu      sync.Mutex
		slowest time.Duration
		wg      sync.WaitGroup
		errs    []error
	)
	for _, nd := range old {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(30 * time.Second)
			for {
				err := ping(nd.pod, joiner.podIP, time.Second)
				if err == nil {
					var hs time.Time
					if hs, err = handshake(nd, joiner); err == nil && hs.IsZero() {
						err = fmt.Errorf("%s reaches %s's pod but has no handshake with it", nd.name, joiner.name)
					}
				}
				if err == nil {
					d := time.Since(start)
					mu.Lock()
					slowest = max(slowest, d)
					mu.Unlock()
					return
				}
				if time.Now().After(deadline) || ctx.Err() != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s never reached %s: %w", nd.name, joiner.name, err))
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	sec := "convergence (namespace lab)"
	rows := []Row{{Section: sec, Name: fmt.Sprintf("node join, %d nodes: every node has a handshake with it and reaches its pod", n),
		Value: float64(slowest) / 1e6, Unit: "ms", Note: fmt.Sprintf("all %d agents applied after %.0f ms", n, float64(applyDone)/1e6)}}
	if !restarts {
		return rows, nil
	}

	a, b := l.nodes[0], l.nodes[1]
	lost, sent, writes, err := lossDuring(ctx, a, b, func() (int, error) { return restartApplyLayer(ctx, a, l.nodes) })
	if err != nil {
		return rows, err
	}
	rows = append(rows, Row{Section: sec, Name: "apply-layer restart with the same state: packets lost (pod ping every 10 ms)",
		Value: float64(lost), Unit: "packets",
		Note: fmt.Sprintf("%d sent; new route, firewall and wgctrl appliers adopt the live device and re-apply: %d writes", sent, writes)}.goal("0", lost == 0))
	lost, sent, _, err = lossDuring(ctx, a, b, func() (int, error) {
		if err := l.stopAgent(a); err != nil {
			return 0, err
		}
		if err := l.startAgent(a); err != nil {
			return 0, err
		}
		ch, err := l.apply(ctx, a, l.nodes)
		return ch.Total(), err
	})
	if err != nil {
		return rows, err
	}
	rows = append(rows, Row{Section: sec, Name: "agent process restart, userspace device: packets lost (pod ping every 10 ms)",
		Value: float64(lost), Unit: "packets",
		Note: fmt.Sprintf("%d sent; the device process outlives the agent, the new agent adopts it and re-applies", sent)}.goal("0", lost == 0))
	return rows, nil
}

// restartApplyLayer is what a restarted agent does to an existing device:
// new appliers (routes, firewall, a new wgctrl client) read the kernel and
// apply the same desired state, in this process. The agent-process
// restart (a new dataplane.New adopting the device process) is measured
// separately. It returns the kernel writes made (0 expected).
func restartApplyLayer(ctx context.Context, nd *labNode, members []*labNode) (int, error) {
	s, err := desired(nd, members)
	if err != nil {
		return 0, err
	}
	writes := 0
	err = nd.netns.In(func() error {
		client, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer client.Close()
		dev, err := client.Device(nd.dev)
		if err != nil {
			return err
		}
		if cfg := mesh.DiffPeersAt(dev.Peers, s.Peers, time.Now()); len(cfg.Peers) > 0 {
			writes += len(cfg.Peers)
			if err := client.ConfigureDevice(nd.dev, cfg); err != nil {
				return err
			}
		}
		rm, err := route.New(route.Config{Device: nd.dev})
		if err != nil {
			return err
		}
		ops, err := rm.Apply(s.Routes)
		writes += ops.RoutesAdded + ops.RoutesDeleted + ops.RulesAdded + ops.RulesDeleted
		if err != nil {
			return err
		}
		w, err := firewall.New().Apply(firewall.Rules{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}, PodSubnets: s.Subnets, Masquerade: true})
		writes += w
		return err
	})
	return writes, err
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// lossDuring pings b's pod from a's pod every 10 ms for 3 s and runs
// disrupt 1 s in; it returns the lost and sent echoes.
func lossDuring(ctx context.Context, a, b *labNode, disrupt func() (int, error)) (lost, sent, writes int, err error) {
	cmd := a.pod.Cmd("ping", "-n", "-q", "-i", "0.01", "-c", "300", "-W", "1", b.podIP.String())
	out := make(chan []byte, 1)
	go func() {
		o, _ := cmd.CombinedOutput() // exit status 1 when any echo is lost
		out <- o
	}()
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return 0, 0, 0, ctx.Err()
	}
	writes, derr := disrupt()
	o := <-out
	if derr != nil {
		return 0, 0, writes, derr
	}
	m := pingStats.FindSubmatch(o)
	if m == nil {
		return 0, 0, writes, fmt.Errorf("ping output: %s", o)
	}
	sent, _ = strconv.Atoi(string(m[1]))
	recv, _ := strconv.Atoi(string(m[2]))
	return sent - recv, sent, writes, nil
}
