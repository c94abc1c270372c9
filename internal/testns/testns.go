// Package testns is the one network-namespace harness of the unit tests
// and of make bench: namespaces removed when the test (or the benchmark
// section) ends, the underlay bridge that joins them as nodes, bridges and
// pods on them. Tests use the testing.TB forms (New, NewUnderlay, AddPod);
// wgmesh-bench, which has no testing.T, uses NewNamed with a Cleanup and
// the error-returning forms (Bridge, Plug, WirePod). It is apart
// from internal/testutil because it pulls in the CNI namespace packages
// (and with them cgo), which tests that copy their own static binary into a
// chroot must not link.
package testns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/internal/netconv"
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

// UnderlayBridge is the underlay namespace's bridge.
const UnderlayBridge = "br0"

// NewUnderlay creates the underlay namespace and its bridge; both go when
// the test ends.
func NewUnderlay(t testing.TB) Underlay {
	t.Helper()
	u := Underlay{New(t)}
	if err := Bridge(u, UnderlayBridge, 0); err != nil {
		t.Fatalf("underlay: %v", err)
	}
	return u
}

// Attach plugs node into the underlay (Plug); the test fails on error.
func (u Underlay) Attach(t testing.TB, node ns.NetNS, port string, addr netip.Prefix) {
	t.Helper()
	if err := Plug(u, node, port, addr); err != nil {
		t.Fatal(err)
	}
}

// AddPod makes a pod for node: a new namespace, wired by WirePod with a
// host end named vp<random>.
func AddPod(t testing.TB, node ns.NetNS, bridge string, mtu int, addrs ...netip.Prefix) ns.NetNS {
	t.Helper()
	pod := New(t)
	if err := WirePod(node, pod, "vp"+Suffix(t), bridge, mtu, addrs...); err != nil {
		t.Fatal(err)
	}
	return pod
}

// Bridge adds the bridge name in n (mtu 0: the kernel's default) with
// addrs, and sets it up.
func Bridge(n ns.NetNS, name string, mtu int, addrs ...netip.Prefix) error {
	return n.Do(func(ns.NetNS) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge %s: %w", name, err)
		}
		for _, a := range addrs {
			if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: netconv.IPNet(a)}); err != nil {
				return fmt.Errorf("address %s on %s: %w", a, name, err)
			}
		}
		return netlink.LinkSetUp(br)
	})
}

// Plug plugs node into the underlay under: node gets eth0 (MTU 1500) with
// addr and lo up; the other end of the veth, named port, joins br0.
func Plug(under, node ns.NetNS, port string, addr netip.Prefix) error {
	err := node.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: port}); err != nil {
			return fmt.Errorf("add underlay veth: %w", err)
		}
		peer, err := netlink.LinkByName(port)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(peer, int(under.Fd())); err != nil {
			return err
		}
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(eth0, &netlink.Addr{IPNet: netconv.IPNet(addr)}); err != nil {
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
	if err != nil {
		return err
	}
	return under.Do(func(ns.NetNS) error {
		peer, err := netlink.LinkByName(port)
		if err != nil {
			return err
		}
		br, err := netlink.LinkByName(UnderlayBridge)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(peer, br); err != nil {
			return err
		}
		return netlink.LinkSetUp(peer)
	})
}

// WirePod networks the namespace pod as a pod of node: its eth0 (MTU mtu)
// has addrs, lo up, and a default route per family through that subnet's
// gateway (its first address, where wgmesh puts it); the host end of the
// veth, named host, joins bridge in node. IPv6 addresses skip DAD, so they
// are usable at once.
func WirePod(node, pod ns.NetNS, host, bridge string, mtu int, addrs ...netip.Prefix) error {
	err := node.Do(func(ns.NetNS) error {
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
	if err != nil {
		return err
	}
	return pod.Do(func(ns.NetNS) error {
		eth, err := netlink.LinkByName("podeth")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetName(eth, "eth0"); err != nil {
			return err
		}
		for _, a := range addrs {
			addr := &netlink.Addr{IPNet: netconv.IPNet(a)}
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
}
