package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/internal/cniconf"
	"github.com/wgmesh/wgmesh/internal/dataplane"
	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// lab is simulated nodes in network namespaces, as the data plane's own
// lab test builds them: each node has eth0 on an underlay bridge (in a
// namespace of its own), a userspace WireGuard device driven by
// dataplane.Apply, the cni0 bridge with the node's gateway, and one pod
// namespace on cni0 through a veth. This process plays every node's agent.
type lab struct {
	c      *testns.Cleanup
	tag    string // namespace role prefix, unique per lab
	under  *netNS
	mtu    int // WireGuard device and pod MTU
	nodes  []*labNode
	logger *slog.Logger
}

type labNode struct {
	i      int
	name   string
	netns  *netNS
	pod    *netNS
	subnet netip.Prefix
	podIP  netip.Addr
	gw     netip.Addr
	under  netip.Addr
	key    wgtypes.Key
	dev    string
	dp     *dataplane.Dataplane
}

var labSeq struct {
	sync.Mutex
	n int
}

func newLab(c *testns.Cleanup, mtu int) (*lab, error) {
	labSeq.Lock()
	labSeq.n++
	tag := fmt.Sprintf("l%d", labSeq.n)
	labSeq.Unlock()
	l := &lab{c: c, tag: tag, mtu: mtu, logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	var err error
	if l.under, err = newNetNS(c, tag+"-ul"); err != nil {
		return nil, err
	}
	if err := testns.Bridge(l.under, testns.UnderlayBridge, 0); err != nil {
		return nil, err
	}
	return l, nil
}

// addNode builds node i's namespaces, underlay and pod, but starts no data
// plane (startAgent does).
func (l *lab) addNode(i int) (*labNode, error) { return l.addNodeMTU(i, l.mtu) }

// addNodeMTU is addNode with cni0 and the pod at mtu instead of the lab's.
func (l *lab) addNodeMTU(i, mtu int) (*labNode, error) {
	nd := &labNode{
		i:      i,
		name:   fmt.Sprintf("node-%d", i),
		subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(i), 0}), 24),
		podIP:  netip.AddrFrom4([4]byte{10, 42, byte(i), 2}),
		gw:     netip.AddrFrom4([4]byte{10, 42, byte(i), 1}),
		under:  netip.AddrFrom4([4]byte{192, 168, 78, byte(i + 1)}),
		dev:    devName(len(l.nodes) + 100*labSeqN(l.tag)),
	}
	var err error
	if nd.key, err = wgtypes.GeneratePrivateKey(); err != nil {
		return nil, err
	}
	if nd.netns, err = newNetNS(l.c, fmt.Sprintf("%s-n%d", l.tag, i)); err != nil {
		return nil, err
	}
	if nd.pod, err = newNetNS(l.c, fmt.Sprintf("%s-p%d", l.tag, i)); err != nil {
		return nil, err
	}
	if err := testns.Plug(l.under, nd.netns, fmt.Sprintf("ul%d", i), netip.PrefixFrom(nd.under, 24)); err != nil {
		return nil, fmt.Errorf("%s: underlay: %w", nd.name, err)
	}
	if _, err := nd.netns.Run("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return nil, err
	}
	if err := testns.Bridge(nd.netns, cniconf.DefaultBridge, mtu, netip.PrefixFrom(nd.gw, 24)); err != nil {
		return nil, fmt.Errorf("%s: %w", nd.name, err)
	}
	if err := testns.WirePod(nd.netns, nd.pod, "vpod", cniconf.DefaultBridge, mtu, netip.PrefixFrom(nd.podIP, 24)); err != nil {
		return nil, fmt.Errorf("%s: pod: %w", nd.name, err)
	}
	l.nodes = append(l.nodes, nd)
	return nd, nil
}

func labSeqN(tag string) int {
	var n int
	fmt.Sscanf(tag, "l%d", &n)
	return n
}

// startAgent creates node nd's data plane (or adopts its running
// userspace device), as the agent does at start. The lab's cleanup stops
// the device process: it outlives the agent by design.
func (l *lab) startAgent(nd *labNode) error {
	l.c.Add(func() { _ = l.removeDevice(nd) })
	return nd.netns.In(func() error {
		dp, err := dataplane.New(dataplane.Config{
			Device: nd.dev, Mode: wireguard.ModeUserspace, PrivateKey: nd.key, MTU: l.mtu,
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}, Masquerade: true,
			Bridge: cniconf.DefaultBridge, Logger: l.logger,
		})
		if err != nil {
			return fmt.Errorf("%s: dataplane.New: %w", nd.name, err)
		}
		nd.dp = dp
		return nil
	})
}

// stopAgent is what SIGTERM does to nd's agent: it releases its handles
// and leaves the data plane, the userspace device process included, to
// the next agent. (Removing the device's UAPI socket here, as this lab
// once did, makes the device process exit on its own schedule: the next
// startAgent then found its TUN still there without a socket.)
func (l *lab) stopAgent(nd *labNode) error {
	if nd.dp == nil {
		return nil
	}
	err := nd.netns.In(func() error { return nd.dp.Close() })
	nd.dp = nil
	return err
}

// removeDevice stops nd's agent and its device process, and waits until
// the TUN and the socket are gone.
func (l *lab) removeDevice(nd *labNode) error {
	err := l.stopAgent(nd)
	return errors.Join(err, nd.netns.In(func() error { return wireguard.Remove(nd.dev) }))
}

// meshNodes is the Node list the kube layer would hand the agent.
func meshNodes(members []*labNode) []mesh.Node {
	out := make([]mesh.Node, 0, len(members))
	for _, nd := range members {
		out = append(out, mesh.Node{
			Name: nd.name, PodCIDRs: []netip.Prefix{nd.subnet}, PublicKey: nd.key.PublicKey().String(),
			Endpoint: netip.AddrPortFrom(nd.under, mesh.DefaultListenPort).String(),
		})
	}
	return out
}

// desired is nd's desired state with members as the cluster.
func desired(nd *labNode, members []*labNode) (mesh.State, error) {
	nodes := meshNodes(members)
	var self mesh.Node
	for _, n := range nodes {
		if n.Name == nd.name {
			self = n
		}
	}
	s, problems := mesh.Desired(self, nodes, mesh.Options{})
	if len(problems) > 0 {
		return s, fmt.Errorf("%s: mesh problems: %+v", nd.name, problems)
	}
	return s, nil
}

// apply reconciles nd's data plane to members, as its agent would.
func (l *lab) apply(ctx context.Context, nd *labNode, members []*labNode) (dataplane.Changes, error) {
	s, err := desired(nd, members)
	if err != nil {
		return dataplane.Changes{}, err
	}
	var ch dataplane.Changes
	err = nd.netns.In(func() error {
		var err error
		ch, err = nd.dp.Apply(ctx, s)
		return err
	})
	return ch, err
}

// applyAll reconciles every node to members, concurrently (one agent each).
func (l *lab) applyAll(ctx context.Context, nodes, members []*labNode) error {
	errs := make(chan error, len(nodes))
	for _, nd := range nodes {
		go func() {
			_, err := l.apply(ctx, nd, members)
			errs <- err
		}()
	}
	var first error
	for range nodes {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// handshake is the last handshake time nd's device has with peer.
func handshake(nd, peer *labNode) (time.Time, error) {
	if nd.dp == nil {
		return time.Time{}, fmt.Errorf("%s has no agent", nd.name)
	}
	var t time.Time
	err := nd.netns.In(func() error {
		dev, err := nd.dp.Device().Read()
		if err != nil {
			return err
		}
		for _, p := range dev.Peers {
			if p.PublicKey == peer.key.PublicKey() {
				t = p.LastHandshakeTime
			}
		}
		return nil
	})
	return t, err
}

// ping sends one echo from n to addr with a timeout.
func ping(n *netNS, to netip.Addr, timeout time.Duration) error {
	_, err := n.Run("ping", "-n", "-q", "-c", "1", "-W", fmt.Sprint(max(1, int(timeout.Seconds()))), to.String())
	return err
}

// linkFeatures is `ethtool -k` of dev in n, the offload lines that matter
// for a TUN (empty when ethtool is not installed).
func linkFeatures(n *netNS, dev string) string {
	out, err := n.Run("ethtool", "-k", dev)
	if err != nil {
		return ""
	}
	var on []string
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if !ok {
			continue
		}
		switch k {
		case "tx-checksumming", "tcp-segmentation-offload", "generic-segmentation-offload", "generic-receive-offload", "tx-udp-segmentation", "rx-udp-gro-forwarding":
			on = append(on, k+"="+strings.Fields(v)[0])
		}
	}
	return strings.Join(on, " ")
}
