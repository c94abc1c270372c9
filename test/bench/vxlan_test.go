package main

import (
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// The network section's reference must be flannel's datapath, not just any
// VXLAN that happens to pass packets: the device, the per-node entries and
// the rules as flannel's vxlan backend writes them, pods reaching each
// other through it, and nothing left once the lab's cleanup ran.
func TestFlannelVXLANAsFlannelProgramsIt(t *testing.T) {
	testutil.RequireRoot(t)
	c := &testns.Cleanup{}
	cleaned := false
	t.Cleanup(func() {
		if !cleaned {
			c.Run()
		}
	})
	l, err := newLab(c, 1420)
	if err != nil {
		t.Fatal(err)
	}
	a, b, err := flannelNodes(l, false) // pings pod a -> pod b
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(b.pod, a.podIP, 5*time.Second); err != nil {
		t.Errorf("pod b -> pod a: %v", err)
	}
	if err := ping(a.netns, b.gw, 5*time.Second); err != nil {
		t.Errorf("node a -> node b's cni0 gateway: %v", err)
	}

	macs := map[*labNode]string{}
	for _, nd := range []*labNode{a, b} {
		if err := nd.netns.In(func() error {
			l, err := netlink.LinkByName(flannelDev)
			if err != nil {
				return err
			}
			macs[nd] = l.Attrs().HardwareAddr.String()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ nd, remote *labNode }{{a, b}, {b, a}} {
		nd, remote := tc.nd, tc.remote
		if err := nd.netns.In(func() error {
			eth0, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			l, err := netlink.LinkByName(flannelDev)
			if err != nil {
				return err
			}
			vx, ok := l.(*netlink.Vxlan)
			if !ok {
				t.Fatalf("%s: %s is a %q link", nd.name, flannelDev, l.Type())
			}
			if vx.VxlanId != 1 || vx.Port != 8472 || vx.Learning || vx.MTU != 1450 || vx.VtepDevIndex != eth0.Attrs().Index ||
				vx.SrcAddr.String() != nd.under.String() || vx.OperState == netlink.OperDown {
				t.Errorf("%s: %s = VNI %d port %d learning %v MTU %d vtep dev %d src %s state %s; want VNI 1 port 8472 learning off MTU 1450 vtep dev eth0 (%d) src %s, up",
					nd.name, flannelDev, vx.VxlanId, vx.Port, vx.Learning, vx.MTU, vx.VtepDevIndex, vx.SrcAddr, vx.OperState, eth0.Attrs().Index, nd.under)
			}
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			if len(addrs) != 1 || addrs[0].IPNet.String() != nd.subnet.Addr().String()+"/32" {
				t.Errorf("%s: %s addresses %v, want %s/32", nd.name, flannelDev, addrs, nd.subnet.Addr())
			}
			routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			var found bool
			for _, r := range routes {
				if r.Dst != nil && r.Dst.String() == remote.subnet.String() {
					found = true
					if r.Gw.String() != remote.subnet.Addr().String() || r.Flags&syscall.RTNH_F_ONLINK == 0 {
						t.Errorf("%s: route %s via %s flags %#x, want via %s onlink", nd.name, r.Dst, r.Gw, r.Flags, remote.subnet.Addr())
					}
				}
			}
			if !found {
				t.Errorf("%s: no route to %s on %s: %v", nd.name, remote.subnet, flannelDev, routes)
			}
			neighs, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			if !hasNeigh(neighs, remote.subnet.Addr(), macs[remote]) {
				t.Errorf("%s: no permanent neighbour %s lladdr %s on %s: %+v", nd.name, remote.subnet.Addr(), macs[remote], flannelDev, neighs)
			}
			fdb, err := netlink.NeighList(l.Attrs().Index, syscall.AF_BRIDGE)
			if err != nil {
				return err
			}
			if !hasNeigh(fdb, remote.under, macs[remote]) {
				t.Errorf("%s: no permanent FDB entry %s dst %s on %s: %+v", nd.name, macs[remote], remote.under, flannelDev, fdb)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if tx := linkStats(nd.netns, flannelDev, "tx"); tx.packets == 0 {
			t.Errorf("%s: nothing left through %s: the pings took another way", nd.name, flannelDev)
		}
	}

	cleaned = true
	c.Run()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range []*labNode{a, b} {
		for _, n := range []*netNS{nd.netns, nd.pod} {
			if strings.Contains(string(out), n.Name) {
				t.Errorf("namespace %s left after cleanup", n.Name)
			}
		}
	}
}

func hasNeigh(ns []netlink.Neigh, ip netip.Addr, mac string) bool {
	for _, n := range ns {
		if n.IP.String() == ip.String() && n.HardwareAddr.String() == mac && n.State == netlink.NUD_PERMANENT {
			return true
		}
	}
	return false
}
