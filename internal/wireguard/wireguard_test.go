package wireguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeAuto, "auto": ModeAuto, "kernel": ModeKernel, "userspace": ModeUserspace} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseMode("wireguard-go"); err == nil {
		t.Error("ParseMode accepted wireguard-go")
	}
}

// uniqueName: UAPI sockets live in one directory for all namespaces.
func uniqueName(t testing.TB) string {
	name := "wgu" + testns.Suffix(t)
	t.Cleanup(func() { os.Remove(filepath.Join(socketDir, name+".sock")) })
	return name
}

func key(t testing.TB) wgtypes.Key {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestUserspaceDeviceLifecycle(t *testing.T) {
	testutil.RequireRoot(t)
	n := testns.New(t)
	name := uniqueName(t)
	k := key(t)
	var d *Device
	d, pid := ensureUserspace(t, n, Config{Name: name, Mode: ModeUserspace, PrivateKey: k, MTU: 1380, ListenPort: 51999})
	if d.Mode() != ModeUserspace || d.EnsureOps == 0 {
		t.Fatalf("mode %s ops %d", d.Mode(), d.EnsureOps)
	}
	if pid == os.Getpid() {
		t.Fatal("the device is served by the test process, not a device process of its own")
	}
	// The device process runs in the caller's namespace, not the host's.
	if _, err := netlink.LinkByName(name); err == nil {
		t.Fatalf("%s is in the test's own namespace", name)
	}
	testns.Do(t, n, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if l.Attrs().MTU != 1380 || l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("link mtu %d flags %v", l.Attrs().MTU, l.Attrs().Flags)
		}
		dev, err := d.Read()
		if err != nil {
			return err
		}
		if dev.PrivateKey != k || dev.ListenPort != 51999 {
			t.Errorf("device key/port = %v", dev.ListenPort)
		}
		return nil
	})
	// The UDP socket is in the device's namespace, not the test's.
	testns.Do(t, n, func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: 51999})
		if err == nil {
			c.Close()
			return errors.New("port 51999 is free in the device's namespace: wireguard-go bound elsewhere")
		}
		return nil
	})

	// Apply: add, no-op, remove.
	peer := mesh.Peer{Node: "b", PublicKey: key(t).PublicKey(), Endpoint: netip.MustParseAddrPort("192.0.2.1:51820"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.42.1.0/24")}, PersistentKeepalive: 25 * time.Second}
	var ops mesh.PeerOps
	testns.Do(t, n, func() (err error) { ops, err = d.Apply([]mesh.Peer{peer}); return })
	if ops != (mesh.PeerOps{Added: 1}) {
		t.Fatalf("add ops %+v", ops)
	}
	testns.Do(t, n, func() (err error) { ops, err = d.Apply([]mesh.Peer{peer}); return })
	if ops != (mesh.PeerOps{}) {
		t.Fatalf("no-op ops %+v", ops)
	}
	testns.Do(t, n, func() (err error) { ops, err = d.Apply(nil); return })
	if ops != (mesh.PeerOps{Removed: 1}) {
		t.Fatalf("remove ops %+v", ops)
	}

	// A kernel-mode Ensure refuses the userspace device.
	testns.Do(t, n, func() error {
		_, err := Ensure(Config{Name: name, Mode: ModeKernel, PrivateKey: k})
		if err == nil || !strings.Contains(err.Error(), "userspace WireGuard device but --wireguard=kernel") {
			t.Errorf("kernel-mode Ensure over a userspace device: %v", err)
		}
		return nil
	})

	// Delete: process, link and socket gone.
	testns.Do(t, n, func() error { return d.Delete() })
	requireGone(t, n, name, pid)
}

// ensureUserspace runs Ensure in n and makes sure the device process it
// spawns dies with the test, even on failure. It returns the process id.
func ensureUserspace(t testing.TB, n ns.NetNS, cfg Config) (*Device, int) {
	t.Helper()
	var d *Device
	var pid int
	testns.Do(t, n, func() error {
		var err error
		if d, err = Ensure(cfg); err != nil {
			return err
		}
		var ok bool
		if pid, ok = DevicePID(cfg.Name); !ok {
			return fmt.Errorf("no device process answers on %s's socket", cfg.Name)
		}
		return nil
	})
	t.Cleanup(func() {
		n.Do(func(ns.NetNS) error { d.Close(); return nil })
		syscall.Kill(pid, syscall.SIGKILL)
		os.Remove(logPath(cfg.Name))
	})
	return d, pid
}

// requireGone fails unless the device process pid, its link in n and its
// socket are all gone.
func requireGone(t *testing.T, n ns.NetNS, name string, pid int) {
	t.Helper()
	// The process is reaped by a goroutine of this test process.
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("device process %d still there: %v", pid, err)
	}
	testns.Do(t, n, func() error {
		if _, err := netlink.LinkByName(name); err == nil {
			t.Error("link still there")
		}
		return nil
	})
	if _, err := os.Stat(socketPath(name)); !os.IsNotExist(err) {
		t.Errorf("socket still there: %v", err)
	}
}

func TestEnsureRefusesAForeignLink(t *testing.T) {
	testutil.RequireRoot(t)
	n := testns.New(t)
	testns.Do(t, n, func() error {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "wgmesh0"}}); err != nil {
			return err
		}
		_, err := Ensure(Config{PrivateKey: key(t)})
		if err == nil || !strings.Contains(err.Error(), `"bridge" link, not a WireGuard device`) {
			t.Errorf("Ensure over a bridge: %v", err)
		}
		if err := Remove("wgmesh0"); err == nil {
			t.Error("Remove deleted a bridge")
		}
		if _, err := netlink.LinkByName("wgmesh0"); err != nil {
			t.Error("the bridge is gone")
		}
		return nil
	})
}

func TestAutoFallsBackToUserspaceWithoutModule(t *testing.T) {
	testutil.RequireRoot(t)
	n := testns.New(t)
	name := uniqueName(t)
	testns.Do(t, n, func() error {
		_, kerr := Ensure(Config{Name: name, Mode: ModeKernel, PrivateKey: key(t)})
		if kerr == nil {
			Remove(name)
			t.Skip("this kernel has WireGuard: the fallback is not exercised")
		}
		if !strings.Contains(kerr.Error(), "use --wireguard=auto or userspace") {
			t.Errorf("kernel mode error lacks advice: %v", kerr)
		}
		d, err := Ensure(Config{Name: name, Mode: ModeAuto, PrivateKey: key(t)})
		if err != nil {
			return err
		}
		defer d.Delete()
		if d.Mode() != ModeUserspace {
			t.Errorf("auto mode = %s", d.Mode())
		}
		return nil
	})
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{},
		{PrivateKey: wgtypes.Key{1}, Mode: "fast"},
		{PrivateKey: wgtypes.Key{1}, ListenPort: 70000},
		{PrivateKey: wgtypes.Key{1}, MTU: 100},
	} {
		if err := c.setDefaults(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestCheckTUN(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "tun")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{"/dev/null", ""}, // a character device, as /dev/net/tun is
		{filepath.Join(dir, "missing"), "does not exist"},
		{regular, "not a character device"},
		{dir, "not a character device"}, // what a runtime creates for a missing hostPath
	} {
		err := checkTUN(tc.path)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("checkTUN(%s) = %v, want %q", tc.path, err, tc.want)
		}
	}
}

// withoutTUN points the TUN check at a path that does not exist, as on a
// host without /dev/net/tun.
func withoutTUN(t *testing.T) {
	old := tunPath
	tunPath = filepath.Join(t.TempDir(), "net", "tun")
	t.Cleanup(func() { tunPath = old })
}

func TestUserspaceWithoutTUNSaysSo(t *testing.T) {
	testutil.RequireRoot(t)
	withoutTUN(t)
	n := testns.New(t)
	name := uniqueName(t)
	testns.Do(t, n, func() error {
		_, err := Ensure(Config{Name: name, Mode: ModeUserspace, PrivateKey: key(t)})
		if err == nil || !strings.Contains(err.Error(), "(--wireguard=userspace) needs "+tunPath+": it does not exist") ||
			!strings.Contains(err.Error(), "modprobe tun") {
			t.Errorf("userspace without TUN: %v", err)
		}
		if _, err := netlink.LinkByName(name); err == nil {
			t.Error("a link was left behind")
		}
		if _, ok := DevicePID(name); ok {
			t.Error("a device process was started")
		}
		return nil
	})
}

// With --wireguard=auto the TUN device matters only where the kernel has
// no WireGuard: there the error names both, else the kernel link is made.
func TestAutoWithoutTUNNeedsItOnlyForUserspace(t *testing.T) {
	testutil.RequireRoot(t)
	withoutTUN(t)
	n := testns.New(t)
	name := uniqueName(t)
	testns.Do(t, n, func() error {
		d, err := Ensure(Config{Name: name, Mode: ModeAuto, PrivateKey: key(t)})
		if err == nil {
			defer d.Delete()
			if d.Mode() != ModeKernel {
				t.Errorf("auto without TUN = %s, want kernel", d.Mode())
			}
			return nil
		}
		for _, want := range []string{"the kernel has none", "userspace WireGuard needs " + tunPath + ": it does not exist", "modprobe wireguard", "modprobe tun"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("auto without kernel WireGuard nor TUN: error lacks %q: %v", want, err)
			}
		}
		return nil
	})
}
