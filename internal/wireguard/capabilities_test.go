package wireguard

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// The DaemonSet's agent runs with NET_ADMIN and NET_RAW, not SYS_ADMIN, so
// its device process may not enter a network namespace (setns). It starts
// in its node's namespace and must open its UDP port there all the same:
// in the kubelet lab every socket open failed with "operation not
// permitted" and no handshake was ever sent.
func TestUserspaceDeviceWithoutSysAdminOpensItsPort(t *testing.T) {
	testutil.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv") // util-linux
	if err != nil {
		t.Fatalf("setpriv (util-linux) not found: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	n := testns.New(t)
	name := uniqueName(t)
	cmd := exec.Command("nsenter", "--net="+n.Path(), setpriv, "--bounding-set=-sys_admin", "--",
		exe, DeviceSubcommand, "--interface", name, "--mtu", "1420")
	cmd.Env = append(os.Environ(), deviceEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	waitUntil(t, 10*time.Second, func() error {
		var got int
		var ok bool
		_ = n.Do(func(ns.NetNS) error { got, ok = DevicePID(name); return nil }) // it answers for its own namespace only
		if !ok || got != pid {
			return fmt.Errorf("device process %d not answering on its socket:\n%s", pid, out.String())
		}
		return nil
	})
	if capEff(t, pid)&(1<<21) != 0 { // CAP_SYS_ADMIN
		t.Fatal("the device process still has CAP_SYS_ADMIN")
	}

	const port = 51899
	wg, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer wg.Close()
	k := key(t)
	p := port
	if err := wg.ConfigureDevice(name, wgtypes.Config{PrivateKey: &k, ListenPort: &p}); err != nil {
		t.Fatal(err)
	}
	testns.Do(t, n, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	// /proc/PID/net/udp lists the sockets of the process's namespace.
	want := fmt.Sprintf(":%04X ", port)
	waitUntil(t, 10*time.Second, func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp", pid))
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), want) {
			return fmt.Errorf("no UDP socket on port %d in the device's namespace; device log:\n%s", port, out.String())
		}
		return nil
	})
}

func capEff(t *testing.T, pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			c, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
	t.Fatalf("no CapEff in /proc/%d/status", pid)
	return 0
}

func waitUntil(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
