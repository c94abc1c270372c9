package wireguard

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// TestUserspaceDeviceSurvivesAgentRestart: two userspace devices in two
// namespaces joined by a veth; one side's "agent" closes its Device and a
// new one Ensures again. The new agent adopts the running device process
// (same link, same peers, no write) and a ping across the mesh loses
// nothing meanwhile. Remove then leaves no process, link or socket.
func TestUserspaceDeviceSurvivesAgentRestart(t *testing.T) {
	testutil.RequireRoot(t)
	a, b := newPair(t)
	na, nb, db, cb, pidB := a.ns, b.ns, b.dev, b.cfg, b.pid
	toA := b.toPeer
	a.apply(t, a.toPeer)
	b.apply(t, b.toPeer)
	var indexB int
	testns.Do(t, nb, func() error {
		l, err := netlink.LinkByName(cb.Name)
		indexB = l.Attrs().Index
		return err
	})
	if out, err := pingFrom(na, "-c", "3", "-W", "2", "10.99.0.2"); err != nil {
		t.Fatalf("no ping across the mesh before the restart: %v\n%s", err, out)
	}

	// Ping every 10 ms while b's agent restarts.
	var pingOut bytes.Buffer
	pingDone := make(chan error, 1)
	testns.Do(t, na, func() error {
		ping := exec.Command("ping", "-n", "-q", "-i", "0.01", "-c", "250", "-W", "1", "10.99.0.2")
		ping.Stdout, ping.Stderr = &pingOut, &pingOut
		if err := ping.Start(); err != nil { // forked here: in na
			return err
		}
		go func() { pingDone <- ping.Wait() }()
		return nil
	})
	time.Sleep(500 * time.Millisecond)
	testns.Do(t, nb, func() error { return db.Close() }) // the old agent stops (SIGTERM)
	db2, pidB2 := ensureUserspace(t, nb, cb)             // the new agent starts
	if pidB2 != pidB {
		t.Errorf("device process %d replaced by %d", pidB, pidB2)
	}
	if db2.EnsureOps != 0 || db2.Mode() != ModeUserspace {
		t.Errorf("adopting Ensure: %d writes, mode %s", db2.EnsureOps, db2.Mode())
	}
	testns.Do(t, nb, func() error {
		l, err := netlink.LinkByName(cb.Name)
		if err != nil {
			return err
		}
		if l.Attrs().Index != indexB {
			t.Errorf("ifindex %d became %d", indexB, l.Attrs().Index)
		}
		dev, err := db2.Read()
		if err != nil {
			return err
		}
		if len(dev.Peers) != 1 || dev.Peers[0].PublicKey != a.cfg.PrivateKey.PublicKey() {
			t.Errorf("peers after the restart: %+v", dev.Peers)
		}
		ops, err := db2.Apply(toA)
		if err != nil {
			return err
		}
		if ops != (mesh.PeerOps{}) {
			t.Errorf("Apply after the restart changed %+v", ops)
		}
		return nil
	})
	<-pingDone
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindSubmatch(pingOut.Bytes())
	if m == nil {
		t.Fatalf("no ping summary:\n%s", pingOut.String())
	}
	sent, _ := strconv.Atoi(string(m[1]))
	recv, _ := strconv.Atoi(string(m[2]))
	t.Logf("across the restart: %d of %d pings lost", sent-recv, sent)
	if sent == 0 || sent != recv {
		t.Errorf("%d of %d pings lost across the agent restart", sent-recv, sent)
	}

	testns.Do(t, nb, func() error { return Remove(cb.Name) })
	requireGone(t, nb, cb.Name, pidB)
}

func addrUp(link, cidr string) error {
	l, err := netlink.LinkByName(link)
	if err != nil {
		return err
	}
	ip, ipnet, err := net.ParseCIDR(cidr)
	if err != nil {
		return err
	}
	ipnet.IP = ip
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipnet}); err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

func pingFrom(n ns.NetNS, args ...string) (out []byte, err error) {
	n.Do(func(ns.NetNS) error {
		out, err = exec.Command("ping", args...).CombinedOutput()
		return nil
	})
	return out, err
}

// TestDeviceProcessStopsWhenItsLinkIsDeleted: `ip link del` of the TUN is
// enough to stop the device process; it leaves no socket behind.
func TestDeviceProcessStopsWhenItsLinkIsDeleted(t *testing.T) {
	testutil.RequireRoot(t)
	n := testns.New(t)
	cfg := Config{Name: uniqueName(t), Mode: ModeUserspace, PrivateKey: key(t)}
	d, pid := ensureUserspace(t, n, cfg)
	testns.Do(t, n, func() error { return d.Close() })
	testns.Do(t, n, func() error {
		l, err := netlink.LinkByName(cfg.Name)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
	requireGone(t, n, cfg.Name, pid)
}

// TestEnsureWaitsForAnExitingDeviceProcess: removing a device's UAPI
// socket makes its process stop, but its TUN goes only when the process
// has closed it. An Ensure in that moment (what the converge benchmark
// did on every run) used to fail with "exists as a TUN device without a
// WireGuard UAPI socket"; it waits for the TUN to go and creates a new
// device.
func TestEnsureWaitsForAnExitingDeviceProcess(t *testing.T) {
	testutil.RequireRoot(t)
	n := testns.New(t)
	cfg := Config{Name: uniqueName(t), Mode: ModeUserspace, PrivateKey: key(t)}
	d, pid := ensureUserspace(t, n, cfg)
	testns.Do(t, n, func() error { return d.Close() })
	if err := os.Remove(socketPath(cfg.Name)); err != nil {
		t.Fatal(err)
	}
	d2, pid2 := ensureUserspace(t, n, cfg)
	if pid2 == pid || d2.EnsureOps == 0 {
		t.Errorf("Ensure after the socket was removed: process %d (was %d), %d writes; want a new device", pid2, pid, d2.EnsureOps)
	}
	testns.Do(t, n, func() error { return errors.Join(d2.Check(), Remove(cfg.Name)) })
	requireGone(t, n, cfg.Name, pid2)
}

// TestCheckSeesAKilledDeviceProcess: Check is quiet while the device
// serves and says ErrDeviceLost once its process was SIGKILLed; Ensure
// then creates a new device in its place.
func TestCheckSeesAKilledDeviceProcess(t *testing.T) {
	testutil.RequireRoot(t)
	n := testns.New(t)
	cfg := Config{Name: uniqueName(t), Mode: ModeUserspace, PrivateKey: key(t)}
	d, pid := ensureUserspace(t, n, cfg)
	testns.Do(t, n, func() error { return d.Check() })
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("Check: %v", requireLost(t, n, d))
	testns.Do(t, n, func() error { return d.Close() })
	d2, pid2 := ensureUserspace(t, n, cfg)
	if pid2 == pid {
		t.Fatalf("still process %d", pid)
	}
	testns.Do(t, n, func() error { return errors.Join(d2.Check(), Remove(cfg.Name)) })
	requireGone(t, n, cfg.Name, pid2)
	os.Remove(logPath(cfg.Name)) // the killed process's log stays for the post-mortem
}

// TestKilledDeviceProcessLeavesItsTUNToTheNext: the TUN is persistent. A
// device process killed with everything else in its pod (a DaemonSet
// rollout) leaves wgmesh0 with its addresses and routes, up, so the node
// keeps its mesh device (the CNI plugin's STATUS) while no process runs;
// the next Ensure starts a process that takes the same link over. Remove
// then deletes it.
func TestKilledDeviceProcessLeavesItsTUNToTheNext(t *testing.T) {
	testutil.RequireRoot(t)
	n := testns.New(t)
	cfg := Config{Name: uniqueName(t), Mode: ModeUserspace, PrivateKey: key(t), ListenPort: 51820}
	d, pid := ensureUserspace(t, n, cfg)
	var index int
	testns.Do(t, n, func() error {
		if err := addrUp(cfg.Name, "10.99.0.1/32"); err != nil {
			return err
		}
		l, err := netlink.LinkByName(cfg.Name)
		if err != nil {
			return err
		}
		index = l.Attrs().Index
		_, dst, _ := net.ParseCIDR("10.99.1.0/24")
		return netlink.RouteAdd(&netlink.Route{LinkIndex: index, Dst: dst})
	})
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	requireKept := func(when string) {
		t.Helper()
		testns.Do(t, n, func() error {
			l, err := netlink.LinkByName(cfg.Name)
			if err != nil {
				return fmt.Errorf("%s: %w", when, err)
			}
			if l.Attrs().Index != index || l.Attrs().Flags&net.FlagUp == 0 {
				return fmt.Errorf("%s: link index %d (was %d), flags %v", when, l.Attrs().Index, index, l.Attrs().Flags)
			}
			routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			for _, r := range routes {
				if r.Dst != nil && r.Dst.String() == "10.99.1.0/24" {
					return nil
				}
			}
			return fmt.Errorf("%s: route to 10.99.1.0/24 gone (%v)", when, routes)
		})
	}
	requireLost(t, n, d)
	requireKept("process killed")
	testns.Do(t, n, func() error { return d.Close() })
	d2, pid2 := ensureUserspace(t, n, cfg)
	if pid2 == pid {
		t.Fatalf("still process %d", pid)
	}
	requireKept("taken over")
	testns.Do(t, n, func() error { return errors.Join(d2.Check(), Remove(cfg.Name)) })
	requireGone(t, n, cfg.Name, pid2)
	os.Remove(logPath(cfg.Name))

	// Killed and never taken over: Remove deletes the detached TUN and
	// the dead process's socket.
	_, pid3 := ensureUserspace(t, n, cfg)
	if err := syscall.Kill(pid3, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && syscall.Kill(pid3, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	testns.Do(t, n, func() error { return Remove(cfg.Name) })
	requireGone(t, n, cfg.Name, pid3)
	if _, err := os.Stat(socketPath(cfg.Name)); !os.IsNotExist(err) {
		t.Errorf("the killed process's socket is left: %v", err)
	}
	os.Remove(logPath(cfg.Name))
}

// requireLost waits up to a second for d.Check to say ErrDeviceLost (its
// process was killed) and returns that error.
func requireLost(t *testing.T, n ns.NetNS, d *Device) error {
	t.Helper()
	var err error
	for i := 0; i < 100; i++ {
		testns.Do(t, n, func() error { err = d.Check(); return nil })
		if err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(err, ErrDeviceLost) {
		t.Fatalf("Check after SIGKILL: %v, want ErrDeviceLost", err)
	}
	return err
}
