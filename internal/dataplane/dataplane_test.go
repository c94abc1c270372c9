package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/internal/doctor"
	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/netconv"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// TestMeshConvergesIdempotentlyAndCleansUp drives three nodes through a
// whole life: mesh up and pods ping across nodes (past a wg-quick style
// broad route that doctor reports), a second apply changes nothing, a
// node leaves and exactly its peer and route go, and cleanup leaves
// nothing of wgmesh behind.
func TestMeshConvergesIdempotentlyAndCleansUp(t *testing.T) {
	testutil.RequireRoot(t)
	l := newLab(t, 3)
	a, b, c := l.nodes[0], l.nodes[1], l.nodes[2]
	all := l.nodes

	// A user's wg-quick left a broad route to the whole cluster CIDR on node a.
	testns.Do(t, a.netns, func() error {
		// (a bridge stands in for wg-quick's device: no dummy or wireguard module here)
		wg0 := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "wg0"}}
		if err := netlink.LinkAdd(wg0); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(wg0); err != nil {
			return err
		}
		dst := *netconv.IPNet(netip.MustParsePrefix("10.42.0.0/16"))
		return netlink.RouteAdd(&netlink.Route{LinkIndex: wg0.Attrs().Index, Dst: &dst, Scope: netlink.SCOPE_LINK})
	})

	for _, nd := range all {
		ch := l.apply(nd, all)
		// 2 peers, 2 routes; rules: 1 ip rule + iptables writes.
		if ch.PeersAdded != 2 || ch.RoutesAdded != 2 || ch.PeersRemoved != 0 || ch.RulesChanged == 0 {
			t.Fatalf("%s first apply: %+v", nd.name, ch)
		}
	}
	for _, pair := range [][2]*labNode{{a, b}, {a, c}, {b, c}, {c, a}} {
		if err := l.ping(pair[0], pair[1]); err != nil {
			t.Errorf("ping pod %s -> pod %s: %v", pair[0].name, pair[1].name, err)
		}
	}
	if t.Failed() {
		t.Logf("node a:\n%s", l.snapshot(a))
		t.FailNow()
	}

	t.Run("status shows peers with node names, handshakes and traffic", func(t *testing.T) {
		var st Status
		testns.Do(t, a.netns, func() error {
			var err error
			st, err = a.dp.Status(t.Context())
			return err
		})
		if st.Device != a.dev || st.Mode != "userspace" || st.ListenPort != 51820 || st.MTU != 1420 || len(st.Routes) != 2 || st.RouteTable != 87 {
			t.Errorf("status = %+v", st)
		}
		t.Logf("wg show:\n%s", mustRun(t, a.netns, "wg", "show", a.dev))
		if len(st.Peers) != 2 {
			t.Fatalf("peers = %+v", st.Peers)
		}
		for i, want := range []*labNode{b, c} {
			p := st.Peers[i]
			if p.Node != want.name || p.PublicKey != want.key.PublicKey().String() || p.LastHandshake.IsZero() || p.RxBytes == 0 || p.TxBytes == 0 ||
				p.Endpoint != netip.AddrPortFrom(want.under, 51820) || len(p.AllowedIPs) != 1 || p.AllowedIPs[0] != want.subnet {
				t.Errorf("peer %d = %+v", i, p)
			}
		}
	})

	t.Run("doctor reports the broad route and the mesh still works", func(t *testing.T) {
		state, problems := mesh.Desired(l.meshNodes(all)[0], l.meshNodes(all), mesh.Options{})
		var kernel doctor.Kernel
		testns.Do(t, a.netns, func() error {
			var err error
			kernel, err = doctor.Read(doctor.ReadConfig{Device: a.dev, Endpoint: a.under})
			return err
		})
		findings := doctor.Check(t.Context(), doctor.Input{Device: a.dev, Desired: state, Problems: problems, OurTable: 87, Kernel: kernel})
		var text []string
		for _, f := range findings {
			text = append(text, f.String())
		}
		t.Logf("doctor on node a:\n%s", strings.Join(text, "\n"))
		found := false
		for _, f := range findings {
			if f.ID == "ShadowingRoute" && strings.Contains(f.Message, "10.42.0.0/16 dev wg0") &&
				strings.Contains(f.Fix, "ip route del 10.42.0.0/16 dev wg0") && strings.Contains(f.Fix, "AllowedIPs") {
				found = true
			}
			if f.ID == "RouteMissing" || f.ID == "RouteWrongSrc" || f.ID == "IPForwardOff" || f.ID == "MTUTooLarge" {
				t.Errorf("unexpected finding: %s", f)
			}
		}
		if !found {
			t.Errorf("no ShadowingRoute finding for 10.42.0.0/16 dev wg0")
		}
	})

	t.Run("second apply changes nothing", func(t *testing.T) {
		for _, nd := range all {
			before := l.snapshot(nd)
			if ch := l.apply(nd, all); ch.Total() != 0 {
				t.Errorf("%s second apply made changes: %+v", nd.name, ch)
			}
			if after := l.snapshot(nd); after != before {
				t.Errorf("%s state changed on a no-op apply:\n--- before\n%s--- after\n%s", nd.name, before, after)
			}
		}
		t.Logf("node a after apply:\n%s", l.snapshot(a))
	})

	t.Run("a node leaves: exactly its peer and route go", func(t *testing.T) {
		left := []*labNode{a, b}
		for _, nd := range left {
			ch := l.apply(nd, left)
			want := Changes{PeersRemoved: 1, RoutesDeleted: 1}
			if ch != want {
				t.Errorf("%s: changes %+v, want %+v", nd.name, ch, want)
			}
			snap := l.snapshot(nd)
			if strings.Contains(snap, c.key.PublicKey().String()) || strings.Contains(snap, c.subnet.String()) {
				t.Errorf("%s still has node c:\n%s", nd.name, snap)
			}
		}
		if err := l.ping(a, b); err != nil {
			t.Errorf("ping a -> b after c left: %v", err)
		}
	})

	t.Run("cleanup leaves nothing", func(t *testing.T) {
		for _, nd := range all {
			testns.Do(t, nd.netns, func() error { return nd.dp.Cleanup(t.Context()) })
			nd.dp = nil
			if _, err := os.Stat(filepath.Join("/var/run/wireguard", nd.dev+".sock")); !os.IsNotExist(err) {
				t.Errorf("%s: UAPI socket still there (%v)", nd.name, err)
			}
			out := mustRun(t, nd.netns, "ip", "-d", "link", "show")
			if strings.Contains(out, nd.dev) {
				t.Errorf("%s: device still there:\n%s", nd.name, out)
			}
			for _, cmd := range [][]string{
				{"ip", "route", "show", "table", "all", "proto", "87"},
				{"ip", "rule", "show", "pref", "5187"},
				{"ip", "-6", "rule", "show", "pref", "5187"},
			} {
				if out := mustRun(t, nd.netns, cmd[0], cmd[1:]...); strings.TrimSpace(out) != "" {
					t.Errorf("%s: %v left:\n%s", nd.name, cmd, out)
				}
			}
			for _, table := range []string{"filter", "nat"} {
				if out := mustRun(t, nd.netns, "iptables", "-t", table, "-S"); strings.Contains(out, "WGMESH") {
					t.Errorf("%s: iptables %s still mentions WGMESH:\n%s", nd.name, table, out)
				}
			}
		}
		// The user's route is not ours: it stays.
		if out := mustRun(t, a.netns, "ip", "route", "show", "10.42.0.0/16"); !strings.Contains(out, "dev wg0") {
			t.Errorf("cleanup touched the user's route: %q", out)
		}
	})
}

// TestStalePeerOnDeviceIsRemoved: a peer on the device that the agent
// did not program (an old key of a reinstalled node, k3s-io/k3s#5216) is
// removed by the next Apply, and nothing else is touched.
func TestStalePeerOnDeviceIsRemoved(t *testing.T) {
	testutil.RequireRoot(t)
	l := newLab(t, 2)
	a, b := l.nodes[0], l.nodes[1]
	l.apply(a, l.nodes)
	// Someone (an older agent with another key for b) left a stale peer.
	testns.Do(t, a.netns, func() error {
		_, err := runHere("wg", "set", a.dev, "peer", "hwYaR4QOGmLzrDCnqgjAbx8jE5vl6fXkVYSYSOaUtUQ=", "allowed-ips", "10.99.0.0/24")
		return err
	})
	ch := l.apply(a, l.nodes)
	if ch != (Changes{PeersRemoved: 1}) {
		t.Fatalf("changes = %+v, want exactly the stale peer removed", ch)
	}
	if out := mustRun(t, a.netns, "wg", "show", a.dev, "peers"); strings.TrimSpace(out) != b.key.PublicKey().String() {
		t.Fatalf("peers = %q", out)
	}
}

// TestCleanupWithoutRunningAgent: `wgmesh-agent cleanup` after the agent
// stopped (its userspace device went with it) removes the rest.
func TestCleanupWithoutRunningAgent(t *testing.T) {
	testutil.RequireRoot(t)
	l := newLab(t, 2)
	a := l.nodes[0]
	l.apply(a, l.nodes)
	testns.Do(t, a.netns, func() error { return a.dp.Close() })
	a.dp = nil
	testns.Do(t, a.netns, func() error {
		return CleanupWithout(t.Context(), Config{Device: a.dev})
	})
	for _, cmd := range [][]string{
		{"ip", "route", "show", "table", "all", "proto", "87"},
		{"ip", "rule", "show", "pref", "5187"},
	} {
		if out := mustRun(t, a.netns, cmd[0], cmd[1:]...); strings.TrimSpace(out) != "" {
			t.Errorf("%v left:\n%s", cmd, out)
		}
	}
	if out := mustRun(t, a.netns, "iptables-save"); strings.Contains(out, "WGMESH") {
		t.Errorf("iptables still mentions WGMESH:\n%s", out)
	}
	if out := mustRun(t, a.netns, "ip", "link", "show", "cni0"); !strings.Contains(out, "cni0") {
		t.Errorf("cleanup removed the bridge (the plugin's): %s", out)
	}
}

// TestDualStackPodsPingOverIPv4Underlay: IPv6 pod subnets ride the same
// tunnels; each family's routes carry that family's gateway as source.
func TestDualStackPodsPingOverIPv4Underlay(t *testing.T) {
	testutil.RequireRoot(t)
	l := newLabStack(t, 2, true)
	a, b := l.nodes[0], l.nodes[1]
	for _, nd := range l.nodes {
		if ch := l.apply(nd, l.nodes); ch.PeersAdded != 1 || ch.RoutesAdded != 2 {
			t.Fatalf("%s: %+v", nd.name, ch)
		}
	}
	for _, pair := range [][2]*labNode{{a, b}, {b, a}} {
		if err := l.ping(pair[0], pair[1]); err != nil {
			t.Errorf("ping %s -> %s: %v", pair[0].name, pair[1].name, err)
		}
		if err := l.ping6(pair[0], pair[1]); err != nil {
			t.Errorf("ping6 %s -> %s: %v", pair[0].name, pair[1].name, err)
		}
	}
	snap := l.snapshot(a)
	t.Logf("node a:\n%s", snap)
	if !strings.Contains(snap, "fd42:0:0:1::/64 dev "+a.dev+" table 87 src fd42::1") {
		t.Errorf("no IPv6 route with the IPv6 gateway as source:\n%s", snap)
	}
	for _, nd := range l.nodes {
		if ch := l.apply(nd, l.nodes); ch.Total() != 0 {
			t.Errorf("%s: second apply %+v", nd.name, ch)
		}
	}
	if out := mustRun(t, a.netns, "ip6tables", "-t", "nat", "-S", "WGMESH-POSTRTG"); !strings.Contains(out, "! -d ff00::/8") {
		t.Errorf("ip6tables nat:\n%s", out)
	}
}

// TestAgentRestartRewritesNothingThatSurvived: a stopped and restarted
// agent finds its ip rule and iptables chains as it left them and writes
// none of them again: not even the userspace device, whose process
// outlives the agent, nor its peers and routes.
func TestAgentRestartRewritesNothingThatSurvived(t *testing.T) {
	testutil.RequireRoot(t)
	l := newLab(t, 2)
	a, b := l.nodes[0], l.nodes[1]
	for _, nd := range l.nodes {
		l.apply(nd, l.nodes)
	}
	testns.Do(t, a.netns, func() error { return a.dp.Close() }) // SIGTERM
	testns.Do(t, a.netns, func() error {
		var err error
		a.dp, err = New(a.cfg)
		return err
	})
	ch := l.apply(a, l.nodes)
	if ch != (Changes{}) {
		t.Fatalf("restart apply: %+v, want no change", ch)
	}
	if err := l.ping(a, b); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
}

// runHere runs a command in the namespace of the calling (locked) thread.
func runHere(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// TestApplyRecreatesAKilledDevice: node a's userspace device process is
// SIGKILLed; its peers go with it, while its TUN (persistent), tunnel
// addresses and the routes through it stay. CheckDevice says so, and the
// next Apply of the same state has a new process take the TUN over and
// writes the peers back: the node looks as it did before, and the pods
// reach each other.
func TestApplyRecreatesAKilledDevice(t *testing.T) {
	testutil.RequireRoot(t)
	l := newLab(t, 2)
	a, b := l.nodes[0], l.nodes[1]
	for _, nd := range l.nodes {
		l.apply(nd, l.nodes)
	}
	if err := l.ping(a, b); err != nil {
		t.Fatalf("ping before the kill: %v", err)
	}
	before := l.snapshot(a)
	var pid int
	testns.Do(t, a.netns, func() error {
		var ok bool
		if pid, ok = wireguard.DevicePID(a.dev); !ok {
			return fmt.Errorf("no device process serves %s", a.dev)
		}
		return syscall.Kill(pid, syscall.SIGKILL)
	})
	var lost error
	for i := 0; i < 200 && lost == nil; i++ {
		time.Sleep(10 * time.Millisecond)
		testns.Do(t, a.netns, func() error { lost = a.dp.CheckDevice(t.Context()); return nil })
	}
	if !errors.Is(lost, wireguard.ErrDeviceLost) {
		t.Fatalf("CheckDevice after SIGKILL: %v, want ErrDeviceLost", lost)
	}
	ch := l.apply(a, l.nodes)
	if ch.PeersAdded != 1 || ch.RoutesAdded != 0 || ch.LinksChanged == 0 {
		t.Errorf("Apply after the kill: %+v, want the peer and the device written again, the route kept", ch)
	}
	if after := l.snapshot(a); after != before {
		t.Errorf("node a after the recovery:\n%s\nbefore the kill:\n%s", after, before)
	}
	testns.Do(t, a.netns, func() error { return a.dp.CheckDevice(t.Context()) })
	if ch := l.apply(a, l.nodes); ch != (Changes{}) {
		t.Errorf("second Apply: %+v, want no change", ch)
	}
	if err := l.ping(a, b); err != nil {
		t.Errorf("ping after the recovery: %v", err)
	}
	if err := l.ping(b, a); err != nil {
		t.Errorf("ping back after the recovery: %v", err)
	}
}
