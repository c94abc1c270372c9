// Package testns gives tests network namespaces that are removed when the
// test ends, and the underlay that joins them as test nodes. It is apart
// from internal/testutil because it pulls in the CNI namespace packages
// (and with them cgo), which tests that copy their own static binary into a
// chroot must not link.
package testns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// New creates a network namespace for the test and removes it when the test
// ends, whatever its outcome.
func New(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		_ = testutils.UnmountNS(n)
	})
	return n
}

// Do runs f in n on a locked thread and fails the test on error.
func Do(t testing.TB, n ns.NetNS, f func() error) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatal(err)
	}
}

// Run runs a command in n; a failure's error carries the command and its
// output.
func Run(n ns.NetNS, name string, args ...string) (string, error) {
	var out []byte
	var err error
	if nerr := n.Do(func(ns.NetNS) error { out, err = exec.Command(name, args...).CombinedOutput(); return nil }); nerr != nil {
		return "", nerr
	}
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Suffix is a random six hex digits, for names that must not collide with
// another test's: userspace WireGuard sockets live in one directory shared
// by every namespace.
func Suffix(t testing.TB) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Underlay is a namespace with a bridge, br0, that stands for the network
// between test nodes.
type Underlay struct{ ns.NetNS }

// NewUnderlay creates the underlay namespace and its bridge; both go when
// the test ends.
func NewUnderlay(t testing.TB) Underlay {
	t.Helper()
	u := Underlay{New(t)}
	Do(t, u, func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("add underlay bridge: %w", err)
		}
		return netlink.LinkSetUp(br)
	})
	return u
}

// Attach plugs node into the underlay: node gets eth0 (MTU 1500) with addr
// and lo up; the other end of the veth, named port, joins br0.
func (u Underlay) Attach(t testing.TB, node ns.NetNS, port string, addr netip.Prefix) {
	t.Helper()
	Do(t, node, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: port}); err != nil {
			return fmt.Errorf("add underlay veth: %w", err)
		}
		peer, err := netlink.LinkByName(port)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(peer, int(u.Fd())); err != nil {
			return err
		}
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		ipn := &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}
		if err := netlink.AddrAdd(eth0, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("address %s on eth0: %w", addr, err)
		}
		if err := netlink.LinkSetUp(eth0); err != nil {
			return err
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	Do(t, u, func() error {
		peer, err := netlink.LinkByName(port)
		if err != nil {
			return err
		}
		br, err := netlink.LinkByName("br0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(peer, br); err != nil {
			return err
		}
		return netlink.LinkSetUp(peer)
	})
}

// AddPod makes a pod for node: a namespace whose eth0 (MTU mtu) has addrs,
// lo up, and a default route per family through that subnet's gateway (its
// first address, where wgmesh puts it); the host end of the veth joins
// bridge in node. IPv6 addresses skip DAD, so they are usable at once.
func AddPod(t testing.TB, node ns.NetNS, bridge string, mtu int, addrs ...netip.Prefix) ns.NetNS {
	t.Helper()
	pod := New(t)
	host := "vp" + Suffix(t)
	Do(t, node, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MTU: mtu}, PeerName: "podeth"}); err != nil {
			return fmt.Errorf("add pod veth: %w", err)
		}
		br, err := netlink.LinkByName(bridge)
		if err != nil {
			return err
		}
		hostEnd, err := netlink.LinkByName(host)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(hostEnd, br); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(hostEnd); err != nil {
			return err
		}
		podEnd, err := netlink.LinkByName("podeth")
		if err != nil {
			return err
		}
		return netlink.LinkSetNsFd(podEnd, int(pod.Fd()))
	})
	Do(t, pod, func() error {
		eth, err := netlink.LinkByName("podeth")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetName(eth, "eth0"); err != nil {
			return err
		}
		for _, a := range addrs {
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}}
			if a.Addr().Is6() {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := netlink.AddrAdd(eth, addr); err != nil {
				return fmt.Errorf("address %s on the pod's eth0: %w", a, err)
			}
		}
		if err := netlink.LinkSetUp(eth); err != nil {
			return err
		}
		if lo, err := netlink.LinkByName("lo"); err == nil {
			_ = netlink.LinkSetUp(lo)
		}
		for _, a := range addrs {
			gw := a.Masked().Addr().Next()
			if err := netlink.RouteAdd(&netlink.Route{Gw: gw.AsSlice(), LinkIndex: eth.Attrs().Index}); err != nil {
				return fmt.Errorf("default route via %s: %w", gw, err)
			}
		}
		return nil
	})
	return pod
}
