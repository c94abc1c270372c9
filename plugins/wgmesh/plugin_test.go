package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/internal/bridgenf"
	"github.com/wgmesh/wgmesh/internal/cnicode"
	"github.com/wgmesh/wgmesh/internal/link"
	"github.com/wgmesh/wgmesh/internal/netconv"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
	"github.com/wgmesh/wgmesh/internal/testns"
)

func TestTwoPodsPingEachOtherAndTheGateway(t *testing.T) {
	l := newLab(t, true)
	p1, p2 := l.newPod(), l.newPod()
	r1, r2 := l.mustAdd(p1), l.mustAdd(p2)
	assertResultShape(t, r1, p1)
	ip1, ip2 := podIP(t, r1), podIP(t, r2)
	gw := l.subnet.Addr().Next()
	for _, c := range []struct {
		from ns.NetNS
		to   netip.Addr
	}{{p1.netns, ip2}, {p2.netns, ip1}, {p1.netns, gw}, {p2.netns, gw}} {
		if err := ping(c.from, c.to); err != nil {
			t.Error(err)
		}
	}
	// And the check is real: a deleted pod no longer answers.
	if err := l.del(p2); err != nil {
		t.Fatal(err)
	}
	if err := ping(p1.netns, ip2); err == nil {
		t.Errorf("ping %s answered after its pod was deleted", ip2)
	}
	// The pod interface carries the MTU from subnet.env.
	err := p1.netns.Do(func(ns.NetNS) error {
		eth0, err := netlinksafe.LinkByName("eth0")
		if err == nil && eth0.Attrs().MTU != 1380 {
			err = fmt.Errorf("eth0 MTU %d, want 1380 from subnet.env", eth0.Attrs().MTU)
		}
		return err
	})
	if err != nil {
		t.Error(err)
	}
}

func assertResultShape(t *testing.T, r *current.Result, p *pod) {
	t.Helper()
	if len(r.Interfaces) < 3 {
		t.Fatalf("result interfaces %v, want bridge, host veth, container", r.Interfaces)
	}
	br, host, cont := r.Interfaces[0], r.Interfaces[1], r.Interfaces[2]
	if br.Name != "cni0" || host.Name != link.HostVethName(p.rt.ContainerID, "eth0") || cont.Name != "eth0" || cont.Sandbox != p.rt.NetNS {
		t.Errorf("result interfaces: %v %v %v", br, host, cont)
	}
	if len(r.IPs) != 1 || r.IPs[0].Interface == nil || *r.IPs[0].Interface != 2 || r.IPs[0].Gateway.String() != "10.42.1.1" {
		t.Errorf("result IPs %v: want one address on interface 2 with gateway 10.42.1.1", r.IPs)
	}
	var hasDefault bool
	for _, rt := range r.Routes {
		hasDefault = hasDefault || rt.Dst.String() == "0.0.0.0/0"
	}
	if !hasDefault {
		t.Errorf("result routes %v lack a default route", r.Routes)
	}
}

func TestPortMappingReachesPod(t *testing.T) {
	l := newLab(t, true)
	p := l.newPod()
	p.rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{
		{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"},
	}}
	l.mustAdd(p)

	var ln net.Listener
	err := p.netns.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", ":8080")
		return err
	})
	if err != nil {
		t.Fatalf("listen in pod: %v", err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "hello from %s\n", p.name)
		c.Close()
	}()

	var got string
	err = l.inNode(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(l.nodeAddr, 18080).String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		got, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	if err != nil || got != "hello from "+p.name+"\n" {
		t.Fatalf("node-address:hostPort -> pod: got %q, %v", got, err)
	}
	if err := l.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
}

func TestDelLeavesNothingAndIsIdempotent(t *testing.T) {
	l := newLab(t, true)
	p := l.newPod()
	r := l.mustAdd(p)
	if a := l.allocations(); a[podIP(t, r)] != p.rt.ContainerID {
		t.Fatalf("allocation of %s not recorded: %v", podIP(t, r), a)
	}
	for i := range 2 {
		if err := l.del(p); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	assertNothingLeft(t, l, p)
}

func TestDelAfterNetnsDeleted(t *testing.T) {
	l := newLab(t, true)
	p := l.newPod()
	l.mustAdd(p)
	closeNetNS(p.netns)
	if err := l.del(p); err != nil {
		t.Fatalf("DEL with the netns gone: %v", err)
	}
	if err := l.del(p); err != nil {
		t.Fatalf("second DEL with the netns gone: %v", err)
	}
	if a := l.allocations(); len(a) != 0 {
		t.Errorf("allocations left after DEL: %v", a)
	}
	waitNoHostVeths(t, l)
}

func TestDelWhenIPAMStateIsGone(t *testing.T) {
	l := newLab(t, true)
	p := l.newPod()
	l.mustAdd(p)
	if err := removeAll(l.dataDir); err != nil {
		t.Fatal(err)
	}
	if err := l.del(p); err != nil {
		t.Fatalf("DEL with the IPAM state gone: %v", err)
	}
	assertNothingLeft(t, l, p)
}

func assertNothingLeft(t *testing.T, l *lab, p *pod) {
	t.Helper()
	if a := l.allocations(); len(a) != 0 {
		t.Errorf("allocations left: %v", a)
	}
	if v := l.hostVeths(); len(v) != 0 {
		t.Errorf("host veths left in the node: %v", v)
	}
	if linkIn(t, p.netns, p.rt.IfName) {
		t.Errorf("%s left in the pod", p.rt.IfName)
	}
}

// waitNoHostVeths waits for the kernel's asynchronous netns teardown (it
// removes the veths of a destroyed namespace from a workqueue).
func waitNoHostVeths(t *testing.T, l *lab) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v := l.hostVeths()
		if len(v) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("host veths left in the node: %v", v)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCheckPassesThenDetectsDeletedRoute(t *testing.T) {
	l := newLab(t, true)
	p := l.newPod()
	l.mustAdd(p)
	if err := l.check(p); err != nil {
		t.Fatalf("CHECK right after ADD: %v", err)
	}
	err := p.netns.Do(func(ns.NetNS) error {
		eth0, err := netlinksafe.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.RouteDel(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: netconv.IPNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: net.ParseIP("10.42.1.1")})
	})
	if err != nil {
		t.Fatalf("delete default route: %v", err)
	}
	err = l.check(p)
	if cniCode(err) != cnicode.CheckFailed || !strings.Contains(err.Error(), "route 0.0.0.0/0 via 10.42.1.1 missing in eth0") {
		t.Fatalf("CHECK after deleting the default route = %v (code %d), want code %d naming the route", err, cniCode(err), cnicode.CheckFailed)
	}
	t.Logf("CHECK says: %v", err)
}

func TestGCFreesAttachmentNeverDeleted(t *testing.T) {
	l := newLab(t, true)
	keep, leak := l.newPod(), l.newPod()
	rKeep, rLeak := l.mustAdd(keep), l.mustAdd(leak)
	if err := l.gc([]*pod{keep}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	a := l.allocations()
	if _, ok := a[podIP(t, rLeak)]; ok || a[podIP(t, rKeep)] != keep.rt.ContainerID || len(a) != 1 {
		t.Errorf("after GC allocations = %v, want only %s of the kept pod", a, podIP(t, rKeep))
	}
	if v := l.hostVeths(); len(v) != 1 || v[0] != link.HostVethName(keep.rt.ContainerID, "eth0") {
		t.Errorf("after GC host veths = %v, want only the kept pod's", v)
	}
	if err := ping(keep.netns, l.subnet.Addr().Next()); err != nil {
		t.Errorf("kept pod lost its network in GC: %v", err)
	}
}

func TestAddWithoutSubnetEnvIsTryAgainAndLeavesNothing(t *testing.T) {
	l := newLab(t, false)
	p := l.newPod()
	_, err := l.add(context.Background(), p)
	if cniCode(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), "wgmesh agent not ready: "+l.subnetFile+" does not exist yet") {
		t.Fatalf("ADD without subnet.env = %v (code %d), want code 11", err, cniCode(err))
	}
	assertNothingLeft(t, l, p)
}

func TestStatusWaitsForSubnetEnvAndMeshDevice(t *testing.T) {
	l := newLab(t, false)
	expect := func(want string) {
		t.Helper()
		err := l.status()
		if want == "" {
			if err != nil {
				t.Fatalf("STATUS = %v, want ok", err)
			}
			return
		}
		if cniCode(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), want) {
			t.Fatalf("STATUS = %v (code %d), want code 50 with %q", err, cniCode(err), want)
		}
	}
	expect("does not exist yet")
	l.writeSubnetEnv()
	expect("mesh device wgmesh0 does not exist")
	var wg netlink.Link
	err := l.inNode(func() error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "wgmesh0"
		wg = &netlink.Tuntap{LinkAttrs: attrs, Mode: netlink.TUNTAP_MODE_TUN}
		return netlink.LinkAdd(wg)
	})
	if err != nil {
		t.Fatalf("create wgmesh0: %v", err)
	}
	expect("mesh device wgmesh0 is down")
	if err := l.inNode(func() error { return netlink.LinkSetUp(wg) }); err != nil {
		t.Fatal(err)
	}
	expect("")
}

func TestMalformedConfIsRejected(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(map[string]any)
		code uint
	}{
		{"mtu of the wrong type", func(m map[string]any) { m["mtu"] = "big" }, types.ErrDecodingFailure},
		{"mtu out of range", func(m map[string]any) { m["mtu"] = 10 }, types.ErrInvalidNetworkConfig},
		{"bridge name too long", func(m map[string]any) { m["bridge"] = "a-bridge-name-too-long" }, types.ErrInvalidNetworkConfig},
		{"relative subnetFile", func(m map[string]any) { m["subnetFile"] = "subnet.env" }, types.ErrInvalidNetworkConfig},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newLab(t, true)
			l.list = l.loadConflist(repoRoot(t)+"/conflist/10-wgmesh.conflist", c.edit)
			p := l.newPod()
			_, err := l.add(context.Background(), p)
			if cniCode(err) != c.code {
				t.Fatalf("ADD = %v (code %d), want code %d", err, cniCode(err), c.code)
			}
			t.Logf("ADD says: %v", err)
			assertNothingLeft(t, l, p)
		})
	}
}

func TestAddIntoVanishedNetnsAllocatesNothing(t *testing.T) {
	l := newLab(t, true)
	n := testns.New(t)
	p := newPodIn(n)
	closeNetNS(n)
	_, err := l.add(context.Background(), p)
	if cniCode(err) != types.ErrInvalidEnvironmentVariables || !strings.Contains(err.Error(), "is gone") {
		t.Fatalf("ADD into a deleted netns = %v (code %d), want code %d", err, cniCode(err), types.ErrInvalidEnvironmentVariables)
	}
	if a := l.allocations(); len(a) != 0 {
		t.Errorf("allocations: %v", a)
	}
	if v := l.hostVeths(); len(v) != 0 {
		t.Errorf("host veths: %v", v)
	}
}

func TestAddWithExhaustedRangeLeavesNothing(t *testing.T) {
	l := newLab(t, false)
	l.subnet = netip.MustParsePrefix("10.42.1.0/30") // the gateway .1 and one pod .2
	l.writeSubnetEnv()
	first := l.newPod()
	r := l.mustAdd(first)
	second := l.newPod()
	_, err := l.add(context.Background(), second)
	if err == nil || cniCode(err) == 0 {
		t.Fatalf("ADD into a full range = %v, want a CNI error", err)
	}
	t.Logf("ADD says: %v (code %d)", err, cniCode(err))
	if a := l.allocations(); len(a) != 1 || a[podIP(t, r)] != first.rt.ContainerID {
		t.Errorf("allocations = %v, want only the first pod's", a)
	}
	if v := l.hostVeths(); len(v) != 1 {
		t.Errorf("host veths = %v, want only the first pod's", v)
	}
	if linkIn(t, second.netns, "eth0") {
		t.Errorf("eth0 left in the refused pod")
	}
}

// TestAddFailingAfterIPAMReleasesAddress makes the pod interface
// configuration fail (a route whose gateway is unreachable) after the IPAM
// gave an address: the address must be released and the veth removed.
func TestAddFailingAfterIPAMReleasesAddress(t *testing.T) {
	l := newLab(t, true)
	l.list = l.loadConflist(repoRoot(t)+"/conflist/10-wgmesh.conflist", func(m map[string]any) {
		m["ipam"].(map[string]any)["routes"] = []map[string]string{{"dst": "10.99.0.0/16", "gw": "172.31.255.1"}}
	})
	p := l.newPod()
	_, err := l.add(context.Background(), p)
	if cniCode(err) != cnicode.LinkSetup {
		t.Fatalf("ADD with an unreachable route = %v (code %d), want code %d", err, cniCode(err), cnicode.LinkSetup)
	}
	t.Logf("ADD says: %v", err)
	assertNothingLeft(t, l, p)
}

// A node whose agent is gone (subnet.env removed) must still tear pods down.
func TestDelWorksWithoutSubnetEnv(t *testing.T) {
	l := newLab(t, true)
	p := l.newPod()
	l.mustAdd(p)
	if err := removeAll(l.subnetFile); err != nil {
		t.Fatal(err)
	}
	if err := l.del(p); err != nil {
		t.Fatalf("DEL without subnet.env: %v", err)
	}
	assertNothingLeft(t, l, p)
}

func TestDualStackPodsPingOverIPv6(t *testing.T) {
	l := newLab(t, false)
	env := subnetenv.Env{Subnet: l.subnet, Subnet6: netip.MustParsePrefix("fd42:0:0:1::/64"), MTU: 1380}
	if err := subnetenv.Write(l.subnetFile, env); err != nil {
		t.Fatal(err)
	}
	p1, p2 := l.newPod(), l.newPod()
	r1 := l.mustAdd(p1)
	r2 := l.mustAdd(p2)
	var ip6 netip.Addr
	for _, ipc := range r2.IPs {
		if a, _ := netip.AddrFromSlice(ipc.Address.IP); a.Is6() && !a.Is4In6() {
			ip6 = a
		}
	}
	if len(r1.IPs) != 2 || !ip6.IsValid() {
		t.Fatalf("dual-stack results: %v / %v", r1.IPs, r2.IPs)
	}
	for _, to := range []netip.Addr{ip6, netip.MustParseAddr("fd42:0:0:1::1"), podIP(t, r2)} {
		if err := ping(p1.netns, to); err != nil {
			t.Error(err)
		}
	}
	if err := l.check(p1); err != nil {
		t.Errorf("CHECK dual-stack: %v", err)
	}
	if err := l.del(p1); err != nil {
		t.Fatal(err)
	}
}

func TestAddWhenPodAlreadyHasTheInterface(t *testing.T) {
	l := newLab(t, true)
	p := l.newPod()
	err := p.netns.Do(func(ns.NetNS) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "eth0"
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "other0"})
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.add(context.Background(), p)
	if cniCode(err) != cnicode.IfaceExists {
		t.Fatalf("ADD with eth0 taken = %v (code %d), want %d", err, cniCode(err), cnicode.IfaceExists)
	}
	if a := l.allocations(); len(a) != 0 {
		t.Errorf("allocations: %v", a)
	}
	if v := l.hostVeths(); len(v) != 0 {
		t.Errorf("host veths: %v", v)
	}
}

func TestCheckDetectsMissingGatewayAndMTU(t *testing.T) {
	l := newLab(t, true)
	p := l.newPod()
	l.mustAdd(p)
	err := l.inNode(func() error {
		br, err := netlinksafe.LinkByName("cni0")
		if err != nil {
			return err
		}
		return netlink.AddrDel(br, &netlink.Addr{IPNet: netconv.IPNet(netip.MustParsePrefix("10.42.1.1/24"))})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = p.netns.Do(func(ns.NetNS) error {
		eth0, err := netlinksafe.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.LinkSetMTU(eth0, 1300)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = l.check(p)
	for _, want := range []string{"gateway 10.42.1.1/24 missing on cni0", "eth0 has MTU 1300, want 1380"} {
		if cniCode(err) != cnicode.CheckFailed || !strings.Contains(err.Error(), want) {
			t.Errorf("CHECK = %v, want code %d with %q", err, cnicode.CheckFailed, want)
		}
	}
}

// TestAddTurnsOnBridgeNetfilter: on a node whose bridged traffic bypasses
// iptables (net.bridge.bridge-nf-call-iptables=0, per network namespace),
// ADD turns it on, as it turns on forwarding: otherwise a pod could not
// reach a Service whose backend is on the same bridge (package bridgenf).
func TestAddTurnsOnBridgeNetfilter(t *testing.T) {
	l := newLab(t, true)
	path := filepath.Join("/proc/sys", bridgenf.Sysctl(false))
	read := func() string {
		var v []byte
		if err := l.inNode(func() error {
			var err error
			v, err = os.ReadFile(path)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(v))
	}
	if err := l.inNode(func() error { return os.WriteFile(path, []byte("0"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "0" {
		t.Fatalf("%s = %s after writing 0", path, got)
	}
	l.mustAdd(l.newPod())
	if got := read(); got != "1" {
		t.Errorf("%s = %s after ADD, want 1", path, got)
	}
}
