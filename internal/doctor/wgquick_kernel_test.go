package doctor

import (
	"context"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// endpointFinding reads n as doctor does, the node's address being node,
// and returns its EndpointOnWireGuard finding, if any.
func endpointFinding(t *testing.T, n ns.NetNS, node netip.Addr) *Finding {
	t.Helper()
	var k Kernel
	testns.Do(t, n, func() error {
		k, _ = Read(ReadConfig{Device: "wgmesh0", Endpoint: node})
		return nil
	})
	for _, f := range Check(context.Background(), Input{Device: "wgmesh0", Kernel: k}) {
		if f.ID == "EndpointOnWireGuard" {
			return &f
		}
	}
	return nil
}

// A node migrated from a hand-made wg-quick mesh: its InternalIP is the
// address of a WireGuard device (here a userspace one, as wg-quick makes
// with wireguard-go) that is not wgmesh0. doctor names the device and the
// order of steps; a node whose address is on an ordinary link gets nothing.
func TestDoctorNamesAWireGuardDeviceHoldingTheNodesAddress(t *testing.T) {
	testutil.RequireRoot(t)
	n := testns.New(t)
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	name := "wq" + testns.Suffix(t)
	var dev *wireguard.Device
	testns.Do(t, n, func() error {
		dev, err = wireguard.Ensure(wireguard.Config{Name: name, Mode: wireguard.ModeUserspace, PrivateKey: key, ListenPort: 51821})
		return err
	})
	t.Cleanup(func() {
		pid, ok := 0, false
		n.Do(func(ns.NetNS) error {
			pid, ok = wireguard.DevicePID(name)
			dev.Delete()
			return nil
		})
		if ok {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	run(t, n, "ip", "addr", "add", "10.99.0.1/24", "dev", name)
	run(t, n, "ip", "link", "set", name, "up")
	addNodeLink(t, n, netip.MustParseAddr("192.0.2.10"))

	f := endpointFinding(t, n, netip.MustParseAddr("10.99.0.1"))
	if f == nil {
		t.Fatal("no EndpointOnWireGuard finding for an InternalIP on a userspace WireGuard device")
	}
	t.Logf("doctor: %s", f)
	for _, want := range []string{"10.99.0.1", "is on " + name + ", a userspace WireGuard device", "wg-quick down " + name,
		"node-ip", "wgmesh.io/force-endpoint", "only then wg-quick down " + name + " && systemctl disable wg-quick@" + name} {
		if !strings.Contains(f.String(), want) {
			t.Errorf("%q not in the finding", want)
		}
	}
	if f := endpointFinding(t, n, netip.MustParseAddr("192.0.2.10")); f != nil {
		t.Errorf("address on a veth: %s", f)
	}
}
