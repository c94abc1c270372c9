package uninstall

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/wgmesh/wgmesh/internal/install"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// A node after wgmesh ran on it, with other vendors' files beside wgmesh's:
// Node removes wgmesh's (in the standard and k3s dirs), the bridge and the
// agent's state, and nothing else; a second run removes nothing.
func TestNodeRemovesOnlyWgmeshState(t *testing.T) {
	testutil.RequireRoot(t)
	root := t.TempDir()
	ours := []string{
		"/etc/cni/net.d/10-wgmesh.conflist",
		"/opt/cni/bin/wgmesh", "/opt/cni/bin/wgmesh-ipam",
		"/var/lib/rancher/k3s/agent/etc/cni/net.d/10-wgmesh.conflist",
		"/var/lib/rancher/k3s/data/0123abcd/bin/wgmesh",
		"/var/lib/cni/networks/wgmesh/10.42.0.2",
		"/var/lib/cni/results/wgmesh-0123-eth0",
		"/run/wgmesh/subnet.env",
		"/var/lib/wgmesh/private.key",
	}
	theirs := []string{
		"/etc/cni/net.d/20-other.conflist",
		"/opt/cni/bin/portmap", "/opt/cni/bin/bridge",
		"/var/lib/rancher/k3s/data/0123abcd/bin/flannel",
		"/var/lib/cni/networks/other/10.1.0.2",
		"/var/lib/cni/results/other-0123-eth0",
	}
	for _, p := range append(slices.Clone(ours), theirs...) {
		hp := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(hp, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n := testns.New(t)
	for _, br := range []string{"cni0", "keep0"} {
		if _, err := testns.Run(n, "ip", "link", "add", br, "type", "bridge"); err != nil {
			t.Fatal(err)
		}
	}
	o := Options{
		Install: install.Options{HostRoot: root, ContainerdConfig: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"},
		Device:  "wgmesh0", Mode: wireguard.ModeAuto, Bridge: "cni0",
		SubnetFile: "/run/wgmesh/subnet.env", PrivateKey: "/var/lib/wgmesh/private.key",
		CNIStateDir: "/var/lib/cni", Network: "wgmesh",
	}
	var removed []string
	testns.Do(t, n, func() error {
		var err error
		removed, err = Node(context.Background(), o)
		return err
	})
	for _, p := range ours {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
	for _, p := range theirs {
		if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
			t.Errorf("someone else's %s: %v", p, err)
		}
	}
	for _, d := range []string{"/run/wgmesh", "/var/lib/wgmesh"} {
		if _, err := os.Lstat(filepath.Join(root, d)); !os.IsNotExist(err) {
			t.Errorf("empty agent dir %s left behind", d)
		}
	}
	if !slices.Contains(removed, "link cni0") {
		t.Errorf("removed %v: no link cni0", removed)
	}
	testns.Do(t, n, func() error {
		if _, err := netlinksafe.LinkByName("cni0"); err == nil {
			t.Error("cni0 still exists")
		}
		if _, err := netlinksafe.LinkByName("keep0"); err != nil {
			t.Errorf("another bridge: %v", err)
		}
		return nil
	})
	testns.Do(t, n, func() error {
		again, err := Node(context.Background(), o)
		if len(again) != 0 {
			t.Errorf("second run removed %v", again)
		}
		return err
	})
}
