package link

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

func TestAliasRoundTrip(t *testing.T) {
	o := Owner{Network: "wgmesh", ContainerID: "abc123", IfName: "eth0"}
	got, ok := ParseAlias(o.Alias())
	if !ok || got != o {
		t.Fatalf("ParseAlias(%q) = %+v, %v", o.Alias(), got, ok)
	}
	for _, s := range []string{"", "cali123", "wgmesh net=x", "wgmesh id=a if=b"} {
		if _, ok := ParseAlias(s); ok {
			t.Errorf("ParseAlias(%q) accepted a foreign alias", s)
		}
	}
}

func TestHostVethNameIsStableAndShort(t *testing.T) {
	a, b := HostVethName("c1", "eth0"), HostVethName("c1", "eth0")
	if a != b || len(a) > 15 || a == HostVethName("c1", "eth1") || a == HostVethName("c2", "eth0") {
		t.Fatalf("HostVethName not stable/unique/short: %q %q", a, b)
	}
}

func TestBridgeAndVethLifecycle(t *testing.T) {
	testutil.RequireRoot(t)
	node, pod := testns.New(t), testns.New(t)
	brName := fmt.Sprintf("br%x", rand.Uint32())
	gw := netip.MustParsePrefix("10.77.1.1/24")
	owner := Owner{Network: "test", ContainerID: fmt.Sprintf("c%x", rand.Uint64()), IfName: "eth0"}

	err := node.Do(func(ns.NetNS) error {
		cfg := BridgeConfig{Name: brName, MTU: 1380, Gateways: []netip.Prefix{gw}}
		br, _, err := EnsureBridge(cfg)
		if err != nil {
			return err
		}
		if _, n, err := EnsureBridge(cfg); err != nil || n != 0 { // idempotent
			return fmt.Errorf("second EnsureBridge: %d writes, %v", n, err)
		}
		addrs, err := netlinksafe.AddrList(br, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.77.1.1/24" {
			return fmt.Errorf("bridge addresses %v, %v", addrs, err)
		}
		v, err := CreateVeth(VethConfig{Owner: owner, ContainerName: "eth0", NetNSFd: int(pod.Fd()), MTU: 1380, Bridge: br, Hairpin: true})
		if err != nil {
			return err
		}
		host, err := netlinksafe.LinkByName(v.HostName)
		if err != nil {
			return err
		}
		if a := host.Attrs(); a.MTU != 1380 || a.MasterIndex != br.Index || a.Alias != owner.Alias() || a.HardwareAddr.String() != v.HostMAC.String() {
			return fmt.Errorf("host veth attrs: mtu %d master %d alias %q mac %s", a.MTU, a.MasterIndex, a.Alias, a.HardwareAddr)
		}
		if pi := host.Attrs().Protinfo; pi != nil && !pi.Hairpin {
			return fmt.Errorf("hairpin not set")
		}
		owned, err := OwnedVeths("test")
		if err != nil || len(owned) != 1 || owned[0].Owner != owner {
			return fmt.Errorf("OwnedVeths = %v, %v", owned, err)
		}
		// The pod already has an eth0 (of another attachment): refused, and
		// the refused attempt leaves no host veth behind.
		other := Owner{Network: "test", ContainerID: owner.ContainerID + "x", IfName: "eth0"}
		_, err = CreateVeth(VethConfig{Owner: other, ContainerName: "eth0", NetNSFd: int(pod.Fd()), MTU: 1380, Bridge: br})
		if !errors.Is(err, ErrContainerIfExists) {
			return fmt.Errorf("CreateVeth with eth0 taken = %v, want ErrContainerIfExists", err)
		}
		if _, err := netlinksafe.LinkByName(HostVethName(other.ContainerID, "eth0")); err == nil {
			return fmt.Errorf("refused CreateVeth left its host veth")
		}
		// A retried ADD of the same attachment replaces the leftover pair.
		if v, err = CreateVeth(VethConfig{Owner: owner, ContainerName: "eth0", NetNSFd: int(pod.Fd()), MTU: 1380, Bridge: br}); err != nil {
			return fmt.Errorf("retried CreateVeth: %w", err)
		}
		if err := pod.Do(func(ns.NetNS) error {
			l, err := netlinksafe.LinkByName("eth0")
			if err != nil {
				return err
			}
			if l.Attrs().MTU != 1380 || l.Attrs().HardwareAddr.String() != v.ContainerMAC.String() {
				return fmt.Errorf("pod end attrs %+v", l.Attrs())
			}
			return nil
		}); err != nil {
			return fmt.Errorf("in pod: %w", err)
		}
		if removed, err := DeleteHostVeth(v.HostName); !removed || err != nil {
			return fmt.Errorf("DeleteHostVeth = %v, %v", removed, err)
		}
		if removed, err := DeleteHostVeth(v.HostName); removed || err != nil {
			return fmt.Errorf("second DeleteHostVeth = %v, %v", removed, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDeleteHostVethRefusesForeignLink(t *testing.T) {
	testutil.RequireRoot(t)
	node := testns.New(t)
	err := node.Do(func(ns.NetNS) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "wgmforeign"
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return err
		}
		if _, err := DeleteHostVeth("wgmforeign"); err == nil {
			return fmt.Errorf("deleted a bridge that wgmesh did not create")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestConfigurePodInterface(t *testing.T) {
	testutil.RequireRoot(t)
	node, pod := testns.New(t), testns.New(t)
	err := node.Do(func(ns.NetNS) error {
		br, _, err := EnsureBridge(BridgeConfig{Name: "br0", MTU: 1400, Gateways: []netip.Prefix{netip.MustParsePrefix("10.77.1.1/24")}})
		if err != nil {
			return err
		}
		_, err = CreateVeth(VethConfig{Owner: Owner{"t", "c", "eth0"}, ContainerName: "eth0", NetNSFd: int(pod.Fd()), MTU: 1400, Bridge: br})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = pod.Do(func(ns.NetNS) error {
		addrs := []netip.Prefix{netip.MustParsePrefix("10.77.1.5/24"), netip.MustParsePrefix("fd77::5/64")}
		routes := []Route{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), GW: netip.MustParseAddr("10.77.1.1")},
			{Dst: netip.MustParsePrefix("::/0"), GW: netip.MustParseAddr("fd77::1")},
			{Dst: netip.MustParsePrefix("192.0.2.0/24")}, // on-link
		}
		if err := ConfigurePodInterface("eth0", addrs, routes); err != nil {
			return err
		}
		l, err := netlinksafe.LinkByName("eth0")
		if err != nil {
			return err
		}
		got, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, a := range got {
			have[a.IPNet.String()] = true
			if a.IP.String() == "fd77::5" && a.Flags&0x40 /* IFA_F_TENTATIVE */ != 0 {
				return fmt.Errorf("fd77::5 is tentative: DAD was not skipped")
			}
		}
		if !have["10.77.1.5/24"] || !have["fd77::5/64"] {
			return fmt.Errorf("addresses %v", got)
		}
		rs, err := netlinksafe.RouteList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		var n int
		for _, r := range rs {
			if r.Gw != nil || (r.Dst != nil && r.Dst.String() == "192.0.2.0/24") {
				n++
			}
		}
		if n != 3 {
			return fmt.Errorf("want 2 default routes and 1 on-link route, got %v", rs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
