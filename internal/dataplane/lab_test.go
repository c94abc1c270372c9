package dataplane

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/internal/doctor"
	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// lab is a few simulated nodes in network namespaces: each node has an
// underlay veth to a bridge in a namespace of its own, a cni0 bridge with
// one pod namespace on it, and a userspace WireGuard device driven by a
// Dataplane. Every namespace, device and socket goes away in t.Cleanup,
// also when the test fails.
type lab struct {
	t      *testing.T
	dual   bool // IPv6 pod subnets too (the underlay stays IPv4)
	suffix string
	under  testns.Underlay
	nodes  []*labNode
}

type labNode struct {
	name   string
	netns  ns.NetNS
	pod    ns.NetNS
	podIP  netip.Addr
	subnet netip.Prefix
	// podIP6 and subnet6 are set in a dual-stack lab.
	podIP6  netip.Addr
	subnet6 netip.Prefix
	key     wgtypes.Key
	under   netip.Addr
	dp      *Dataplane
	cfg     Config
	dev     string
}

func mustRun(t *testing.T, n ns.NetNS, name string, args ...string) string {
	t.Helper()
	out, err := testns.Run(n, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func writeSysctl(path, value string) error {
	return os.WriteFile(filepath.Join("/proc/sys", path), []byte(value), 0o644)
}

// newLab builds n nodes; node i has pod subnet 10.42.i.0/24 and underlay
// address 192.168.77.(i+1).
func newLab(t *testing.T, n int) *lab { return newLabStack(t, n, false) }

// newLabStack builds n nodes; dual adds pod subnet fd42:0:0:i::/64.
func newLabStack(t *testing.T, n int, dual bool) *lab {
	t.Helper()
	l := &lab{t: t, dual: dual, suffix: testns.Suffix(t), under: testns.NewUnderlay(t)}
	for i := range n {
		l.addNode(i)
	}
	return l
}

func (l *lab) addNode(i int) *labNode {
	t := l.t
	nd := &labNode{
		name:   fmt.Sprintf("node-%d", i),
		netns:  testns.New(t),
		subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(i), 0}), 24),
		podIP:  netip.AddrFrom4([4]byte{10, 42, byte(i), 2}),
		under:  netip.AddrFrom4([4]byte{192, 168, 77, byte(i + 1)}),
		dev:    fmt.Sprintf("wgt%s%d", l.suffix, i), // unique: UAPI sockets are shared by all namespaces
	}
	clusters := []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}
	subnets := []netip.Prefix{nd.subnet}
	if l.dual {
		nd.subnet6 = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x42, 6: 0, 7: byte(i)}), 64)
		nd.podIP6 = netip.AddrFrom16([16]byte{0xfd, 0x42, 6: 0, 7: byte(i), 15: 2})
		clusters = append(clusters, netip.MustParsePrefix("fd42::/48"))
		subnets = append(subnets, nd.subnet6)
	}
	var err error
	if nd.key, err = wgtypes.GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	l.under.Attach(t, nd.netns, fmt.Sprintf("ul%d", i), netip.PrefixFrom(nd.under, 24))
	testns.Do(t, nd.netns, func() error {
		if err := writeSysctl("net/ipv6/conf/all/forwarding", "1"); err != nil {
			return err
		}
		return writeSysctl("net/ipv4/ip_forward", "1")
	})

	// Data plane first: it creates cni0 with the gateway (Config.Bridge).
	testns.Do(t, nd.netns, func() error {
		t.Cleanup(func() {
			// Always stop the userspace device and drop its socket, even
			// if the test failed half-way.
			nd.netns.Do(func(ns.NetNS) error {
				if nd.dp != nil {
					nd.dp.Close()
				}
				return nil
			})
			os.Remove(filepath.Join("/var/run/wireguard", nd.dev+".sock"))
		})
		var err error
		nd.cfg = Config{
			Device: nd.dev, Mode: wireguard.ModeUserspace, PrivateKey: nd.key, MTU: 1420,
			ClusterCIDRs: clusters, Masquerade: true, Bridge: "cni0",
		}
		nd.dp, err = New(nd.cfg)
		if err != nil {
			return fmt.Errorf("dataplane.New: %w", err)
		}
		_, err = ensureGateways("cni0", subnets, 1420)
		return err
	})
	// Pod: eth0 in the pod namespace, its peer on cni0.
	podAddrs := []netip.Prefix{netip.PrefixFrom(nd.podIP, 24)}
	if nd.podIP6.IsValid() {
		podAddrs = append(podAddrs, netip.PrefixFrom(nd.podIP6, 64))
	}
	nd.pod = testns.AddPod(t, nd.netns, "cni0", 1420, podAddrs...)
	l.nodes = append(l.nodes, nd)
	return nd
}

// meshNodes is the Node list the kube layer would produce for members.
func (l *lab) meshNodes(members []*labNode) []mesh.Node {
	var out []mesh.Node
	for _, nd := range members {
		out = append(out, mesh.Node{
			Name: nd.name, PodCIDRs: nd.podCIDRs(), PublicKey: nd.key.PublicKey().String(),
			Endpoint: netip.AddrPortFrom(nd.under, mesh.DefaultListenPort).String(),
		})
	}
	return out
}

// apply computes nd's desired state from members and applies it in nd's namespace.
func (l *lab) apply(nd *labNode, members []*labNode) Changes {
	l.t.Helper()
	nodes := l.meshNodes(members)
	var self mesh.Node
	for _, n := range nodes {
		if n.Name == nd.name {
			self = n
		}
	}
	state, problems := mesh.Desired(self, nodes, mesh.Options{})
	if len(problems) > 0 {
		l.t.Fatalf("problems: %+v", problems)
	}
	var ch Changes
	testns.Do(l.t, nd.netns, func() error {
		var err error
		ch, err = nd.dp.Apply(l.t.Context(), state)
		return err
	})
	return ch
}

// snapshot is what a person would look at: wg show, our routes and rule,
// and our iptables chains.
func (l *lab) snapshot(nd *labNode) string {
	t := l.t
	t.Helper()
	var b strings.Builder
	// dump has handshake times and counters that move; keep the config columns.
	// wireguard-go lists peers in map order: sort them.
	lines := strings.Split(strings.TrimSpace(mustRun(t, nd.netns, "wg", "show", nd.dev, "dump")), "\n")
	slices.Sort(lines[1:])
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) >= 8 { // peer line: key psk endpoint allowed-ips handshake rx tx keepalive
			f = []string{f[0], f[2], f[3], f[7]}
		} else if len(f) >= 4 {
			f = []string{f[1], f[2]} // interface line: public key, listen port
		}
		fmt.Fprintln(&b, strings.Join(f, " "))
	}
	b.WriteString(mustRun(t, nd.netns, "ip", "route", "show", "table", "all", "proto", "87"))
	b.WriteString(mustRun(t, nd.netns, "ip", "rule", "show", "pref", "5187"))
	b.WriteString(mustRun(t, nd.netns, "ip", "-6", "rule", "show", "pref", "5187"))
	b.WriteString(mustRun(t, nd.netns, "iptables", "-S", "WGMESH-FORWARD"))
	b.WriteString(mustRun(t, nd.netns, "iptables", "-t", "nat", "-S", "WGMESH-POSTRTG"))
	return b.String()
}

func (l *lab) ping(from, to *labNode) error {
	_, err := testns.Run(from.pod, "ping", "-c", "1", "-W", "3", to.podIP.String())
	return err
}

func (l *lab) ping6(from, to *labNode) error {
	_, err := testns.Run(from.pod, "ping", "-6", "-c", "1", "-W", "3", to.podIP6.String())
	return err
}

func (nd *labNode) podCIDRs() []netip.Prefix {
	if nd.subnet6.IsValid() {
		return []netip.Prefix{nd.subnet, nd.subnet6}
	}
	return []netip.Prefix{nd.subnet}
}

// doctor runs doctor as `wgmesh-agent doctor` does on nd: Read in nd's
// namespace (asking the kernel where packets to each peer subnet go, as
// a pod on cni0 and as the node), then Check against nd's desired state.
func (l *lab) doctor(nd *labNode, members []*labNode) []doctor.Finding {
	l.t.Helper()
	nodes := l.meshNodes(members)
	var self mesh.Node
	for _, n := range nodes {
		if n.Name == nd.name {
			self = n
		}
	}
	state, problems := mesh.Desired(self, nodes, mesh.Options{})
	var kernel doctor.Kernel
	testns.Do(l.t, nd.netns, func() error {
		var err error
		kernel, err = doctor.Read(doctor.ReadConfig{Device: nd.dev, Endpoint: nd.under, Routes: state.Routes, Bridge: "cni0", Subnets: state.Subnets})
		return err
	})
	findings := doctor.Check(l.t.Context(), doctor.Input{Device: nd.dev, Desired: state, Problems: problems, OurRulePriority: nd.cfg.RulePriority, Kernel: kernel})
	var text []string
	for _, f := range findings {
		text = append(text, f.String())
	}
	l.t.Logf("doctor on %s:\n%s", nd.name, strings.Join(text, "\n"))
	return findings
}

// restart stops nd's agent and starts it again with rule priority prio
// (0: the default); the userspace device lives on, as on a real restart.
func (l *lab) restart(nd *labNode, prio int) {
	l.t.Helper()
	testns.Do(l.t, nd.netns, func() error {
		if err := nd.dp.Close(); err != nil {
			return err
		}
		nd.dp = nil
		nd.cfg.RulePriority = prio
		var err error
		nd.dp, err = New(nd.cfg)
		return err
	})
}
