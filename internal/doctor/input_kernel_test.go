package doctor

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// readInputFinding reads the kernel of n as `wgmesh-agent doctor` does and
// returns its InputDropsPods finding, if any.
func readInputFinding(t *testing.T, n ns.NetNS, node netip.Addr) *Finding {
	t.Helper()
	return readInputFindingOf(t, n, node, netip.MustParsePrefix("10.42.3.0/24"), netip.MustParsePrefix("10.42.0.0/16"))
}

// readInputFindingOf is readInputFinding for a node with pod subnet
// subnet in cluster CIDR cluster.
func readInputFindingOf(t *testing.T, n ns.NetNS, node netip.Addr, subnet, cluster netip.Prefix) *Finding {
	t.Helper()
	var k Kernel
	testns.Do(t, n, func() error {
		var err error
		k, err = Read(ReadConfig{Device: "wgmesh0", Endpoint: node, Bridge: "cni0"})
		if k.Filter == nil {
			t.Fatalf("the filter table was not read: %v", err)
		}
		return nil
	})
	in := Input{Device: "wgmesh0", Kernel: k, Bridge: "cni0",
		Desired: mesh.State{Subnets: []netip.Prefix{subnet}}, ClusterCIDRs: []netip.Prefix{cluster}}
	for _, f := range Check(context.Background(), in) {
		if f.ID == "InputDropsPods" {
			return &f
		}
	}
	return nil
}

func run(t *testing.T, n ns.NetNS, args ...string) {
	t.Helper()
	if _, err := testns.Run(n, args[0], args[1:]...); err != nil {
		t.Fatal(err)
	}
}

// podConnects reports whether a TCP connection from pod to addr (a
// listener in node) is established. A dropped SYN shows as no connection
// within the dial timeout; the timeout bounds a wait, it measures nothing.
func podConnects(t *testing.T, node, pod ns.NetNS, addr netip.AddrPort) bool {
	t.Helper()
	var ln net.Listener
	testns.Do(t, node, func() error {
		var err error
		ln, err = net.Listen("tcp", addr.String())
		return err
	})
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ok := false
	testns.Do(t, pod, func() error {
		c, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
		if err == nil {
			c.Close()
			ok = true
		}
		return nil
	})
	return ok
}

// inputDropCase is a node whose INPUT drops what it does not know (policy
// DROP, only loopback and SSH open), in iptables or ip6tables, and the pod
// on its cni0 that then cannot reach the node's address.
type inputDropCase struct {
	tool            string       // iptables or ip6tables
	node            netip.Addr   // the node's address, on eth0
	gateway, pod    netip.Prefix // cni0's address and the pod's
	subnet, cluster netip.Prefix
	fix             string // the command doctor must print
}

// check builds the case in a namespace of its own. The pod reaches the
// node until the policy drops it; doctor then says so and prints c.fix;
// after running exactly that command the pod connects and doctor says
// nothing.
func (c inputDropCase) check(t *testing.T) {
	testutil.RequireRoot(t)
	n := testns.New(t)
	run(t, n, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	bits := 24
	if c.node.Is6() {
		bits = 64
	}
	run(t, n, "ip", "addr", "add", netip.PrefixFrom(c.node, bits).String(), "dev", "eth0", "nodad")
	run(t, n, "ip", "link", "set", "eth0", "up")
	run(t, n, "ip", "link", "add", "cni0", "type", "bridge")
	run(t, n, "ip", "addr", "add", c.gateway.String(), "dev", "cni0", "nodad")
	run(t, n, "ip", "link", "set", "cni0", "up")
	pod := testns.AddPod(t, n, "cni0", 1500, c.pod)
	kubelet := netip.AddrPortFrom(c.node, 10250)
	connects := func() bool { // an IPv6 pod's address may still be tentative
		for range 20 {
			if podConnects(t, n, pod, kubelet) {
				return true
			}
			time.Sleep(100 * time.Millisecond)
		}
		return false
	}
	if !connects() {
		t.Fatal("the pod cannot reach the node before any firewall rule")
	}
	run(t, n, c.tool, "-A", "INPUT", "-i", "lo", "-j", "ACCEPT")
	run(t, n, c.tool, "-A", "INPUT", "-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "ACCEPT")
	run(t, n, c.tool, "-P", "INPUT", "DROP")
	if podConnects(t, n, pod, kubelet) {
		t.Fatal("the pod still reaches the node through INPUT policy DROP: the setup does not show the problem")
	}

	f := readInputFindingOf(t, n, c.node, c.subnet, c.cluster)
	if f == nil || f.Severity != SeverityError {
		t.Fatalf("finding %v, want an InputDropsPods error", f)
	}
	t.Logf("doctor: %s", f)
	cmd, _, _ := strings.Cut(f.Fix, "   (")
	if cmd != c.fix {
		t.Fatalf("fix %q, want %q", f.Fix, c.fix)
	}
	run(t, n, strings.Fields(cmd)...)
	if f := readInputFindingOf(t, n, c.node, c.subnet, c.cluster); f != nil {
		t.Errorf("after the printed fix: %s", f)
	}
	if !podConnects(t, n, pod, kubelet) {
		t.Error("after the printed fix the pod still cannot reach the node")
	}
}

// A host whose INPUT drops what it does not know drops pods' connections
// to their own node: a pod behind cni0 cannot reach a listener on the
// node's address. doctor says so and prints a command that fixes it.
func TestDoctorFindsAnInputPolicyThatDropsPodsAndItsFixWorks(t *testing.T) {
	inputDropCase{tool: "iptables", node: netip.MustParseAddr("192.0.2.10"),
		gateway: netip.MustParsePrefix("10.42.3.1/24"), pod: netip.MustParsePrefix("10.42.3.2/24"),
		subnet: netip.MustParsePrefix("10.42.3.0/24"), cluster: netip.MustParsePrefix("10.42.0.0/16"),
		fix: "iptables -I INPUT -s 10.42.0.0/16 -j ACCEPT"}.check(t)
}

// The same over IPv6, in ip6tables' INPUT: doctor reads ip6tables and
// prints the ip6tables command.
func TestDoctorFindsAnIPv6InputPolicyThatDropsPods(t *testing.T) {
	inputDropCase{tool: "ip6tables", node: netip.MustParseAddr("2001:db8::10"),
		gateway: netip.MustParsePrefix("fd42:0:0:3::1/64"), pod: netip.MustParsePrefix("fd42:0:0:3::2/64"),
		subnet: netip.MustParsePrefix("fd42:0:0:3::/64"), cluster: netip.MustParsePrefix("fd42::/48"),
		fix: "ip6tables -I INPUT -s fd42::/48 -j ACCEPT"}.check(t)
}

// The same with ufw's chains (ufw itself would write /etc/ufw on the
// host, so the test writes the rules ufw makes): doctor names ufw's
// command; the rule `ufw allow from 10.42.0.0/16 to any` adds to
// ufw-user-input clears it.
func TestDoctorNamesUfwsCommand(t *testing.T) {
	testutil.RequireRoot(t)
	n := testns.New(t)
	node := netip.MustParseAddr("192.0.2.10")
	addNodeLink(t, n, node)
	for _, c := range []string{"ufw-before-input", "ufw-user-input", "ufw-not-local"} {
		run(t, n, "iptables", "-N", c)
	}
	for _, r := range [][]string{
		{"-A", "INPUT", "-j", "ufw-before-input"},
		{"-A", "ufw-before-input", "-i", "lo", "-j", "ACCEPT"},
		{"-A", "ufw-before-input", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-A", "ufw-before-input", "-j", "ufw-not-local"},
		{"-A", "ufw-before-input", "-j", "ufw-user-input"},
		{"-A", "ufw-not-local", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "RETURN"},
		{"-A", "ufw-not-local", "-j", "DROP"},
		{"-A", "ufw-user-input", "-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "ACCEPT"},
		{"-P", "INPUT", "DROP"},
	} {
		run(t, n, append([]string{"iptables"}, r...)...)
	}
	f := readInputFinding(t, n, node)
	if f == nil || !strings.HasPrefix(f.Fix, "ufw allow from 10.42.0.0/16 to any") {
		t.Fatalf("finding %v, want ufw's command", f)
	}
	run(t, n, "iptables", "-A", "ufw-user-input", "-s", "10.42.0.0/16", "-j", "ACCEPT")
	if f := readInputFinding(t, n, node); f != nil {
		t.Errorf("after ufw's rule: %s", f)
	}
}

// firewalld's default backend keeps its rules in nftables, out of
// iptables' sight: doctor finds its table by netlink and says it cannot
// evaluate it, with firewalld's command.
func TestDoctorSeesFirewalldsNftablesTable(t *testing.T) {
	testutil.RequireRoot(t)
	n := testns.New(t)
	node := netip.MustParseAddr("192.0.2.10")
	addNodeLink(t, n, node)
	run(t, n, "nft", "add", "table", "inet", "firewalld")
	var k Kernel
	testns.Do(t, n, func() error {
		k, _ = Read(ReadConfig{Device: "wgmesh0", Endpoint: node, Bridge: "cni0"})
		return nil
	})
	if !slices.Contains(k.NftTables, "inet firewalld") {
		t.Fatalf("nftables tables %q, want inet firewalld", k.NftTables)
	}
	in := Input{Kernel: k, Bridge: "cni0", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")},
		Desired: mesh.State{Subnets: []netip.Prefix{netip.MustParsePrefix("10.42.3.0/24")}}}
	var got *Finding
	for _, f := range Check(context.Background(), in) {
		if f.ID == "InputFirewalld" {
			got = &f
		}
	}
	if got == nil || !strings.Contains(got.Fix, "firewall-cmd --permanent --zone=trusted --add-source=10.42.0.0/16") {
		t.Fatalf("finding %v, want InputFirewalld with firewalld's command", got)
	}
}

// addNodeLink gives the test's node n the link eth0 (a veth) holding the
// node's address node/24, as its underlay interface.
func addNodeLink(t *testing.T, n ns.NetNS, node netip.Addr) {
	t.Helper()
	run(t, n, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	run(t, n, "ip", "addr", "add", node.String()+"/24", "dev", "eth0")
}
