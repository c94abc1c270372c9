package link

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// The kernel's limit on an alias: IFALIASZ (256) bytes including the NUL.
const maxKernelAlias = 255

func TestAliasFitsTheKernelWhateverTheNames(t *testing.T) {
	long := strings.Repeat("n", 300)
	for _, o := range []Owner{
		{Network: "wgmesh", ContainerID: "abc", IfName: "eth0"},
		{Network: long, ContainerID: strings.Repeat("c", 1000), IfName: "eth012345678901"},
		{Network: long[:64], ContainerID: long[:65], IfName: "e"},
	} {
		a := o.Alias()
		if len(a) > maxKernelAlias {
			t.Errorf("alias of %d bytes for network of %d, container ID of %d bytes", len(a), len(o.Network), len(o.ContainerID))
		}
		got, ok := ParseAlias(a)
		if !ok || !got.SameNetwork(o.Network) {
			t.Errorf("ParseAlias(%q) = %+v, %v: does not name network %.20q...", a, got, ok, o.Network)
		}
	}
	// Shortened names stay distinct.
	a := Owner{Network: long + "a", ContainerID: "c", IfName: "eth0"}.Alias()
	b := Owner{Network: long + "b", ContainerID: "c", IfName: "eth0"}.Alias()
	if a == b {
		t.Errorf("two long network names give the same alias %q", a)
	}
}

func FuzzAliasFitsAndParses(f *testing.F) {
	f.Add("wgmesh", "0123456789abcdef", "eth0")
	f.Add(strings.Repeat("x", 200), strings.Repeat("y", 200), "eth012345678901")
	f.Fuzz(func(t *testing.T, network, id, ifName string) {
		// The names CNI allows (skel validates them before any command).
		valid := func(s string) bool {
			return s != "" && !strings.ContainsFunc(s, func(r rune) bool {
				return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-')
			})
		}
		if !valid(network) || !valid(id) || !valid(ifName) || len(ifName) > 15 {
			return
		}
		o := Owner{Network: network, ContainerID: id, IfName: ifName}
		a := o.Alias()
		if len(a) > maxKernelAlias {
			t.Fatalf("alias of %d bytes", len(a))
		}
		got, ok := ParseAlias(a)
		if !ok || !got.SameNetwork(network) || got.IfName != ifName {
			t.Fatalf("ParseAlias(%q) = %+v, %v", a, got, ok)
		}
		if len(network) <= maxAliasField && len(id) <= maxAliasField && got != o {
			t.Fatalf("short names did not round-trip: %+v != %+v", got, o)
		}
	})
}

// The reason halfMade exists: the kernel drops an alias sent in the request
// that creates a link (vishvananda/netlink does send IFLA_IFALIAS with
// RTM_NEWLINK; rtnl_newlink never applies it), so the alias can only come
// in a second request, and an ADD can be killed between the two.
func TestKernelIgnoresAliasAtCreation(t *testing.T) {
	testutil.RequireRoot(t)
	node, pod := testns.New(t), testns.New(t)
	err := node.Do(func(ns.NetNS) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "wgmalias"
		attrs.Alias = "wgmesh net=t id=c if=eth0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(pod.Fd()))}); err != nil {
			return err
		}
		l, err := netlinksafe.LinkByName("wgmalias")
		if err != nil {
			return err
		}
		if l.Attrs().Alias != "" {
			return fmt.Errorf("the kernel kept the alias %q given at creation: CreateVeth could label the veth in its creating request, and halfMade could go", l.Attrs().Alias)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// halfMadePair makes what an ADD killed right after creating the pair
// leaves: the host end named for the attachment, no alias, no bridge, the
// pod end in the pod's netns.
func halfMadePair(t *testing.T, pod ns.NetNS, containerID string) string {
	t.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = HostVethName(containerID, "eth0")
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(pod.Fd()))}); err != nil {
		t.Fatalf("create half-made pair: %v", err)
	}
	return attrs.Name
}

func TestHalfMadeVethIsOursToDelete(t *testing.T) {
	testutil.RequireRoot(t)
	node, pod := testns.New(t), testns.New(t)
	id := fmt.Sprintf("c%x", rand.Uint64())
	err := node.Do(func(ns.NetNS) error {
		name := halfMadePair(t, pod, id)
		owned, err := OwnedVeths("any-network")
		if err != nil {
			return err
		}
		if len(owned) != 1 || owned[0].Name != name || !owned[0].HalfMade() {
			return fmt.Errorf("OwnedVeths = %+v, want the half-made %s", owned, name)
		}
		if removed, err := DeleteHostVeth(name); !removed || err != nil {
			return fmt.Errorf("DeleteHostVeth(half-made %s) = %v, %v", name, removed, err)
		}
		if linkExists(pod, "eth0") {
			return fmt.Errorf("the pod end survived its host end")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A retried ADD replaces the half-made pair of the same attachment.
func TestCreateVethReplacesHalfMadePair(t *testing.T) {
	testutil.RequireRoot(t)
	node, pod := testns.New(t), testns.New(t)
	owner := Owner{Network: "t", ContainerID: fmt.Sprintf("c%x", rand.Uint64()), IfName: "eth0"}
	err := node.Do(func(ns.NetNS) error {
		br, _, err := EnsureBridge(BridgeConfig{Name: "br0", MTU: 1400})
		if err != nil {
			return err
		}
		halfMadePair(t, pod, owner.ContainerID)
		v, err := CreateVeth(VethConfig{Owner: owner, ContainerName: "eth0", NetNSFd: int(pod.Fd()), MTU: 1400, Bridge: br})
		if err != nil {
			return fmt.Errorf("CreateVeth over a half-made pair: %w", err)
		}
		l, err := netlinksafe.LinkByName(v.HostName)
		if err != nil || l.Attrs().Alias != owner.Alias() {
			return fmt.Errorf("host veth after retry: %v, %v", l, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Links that look a little like a half-made veth but are not proven ours are
// left alone: a foreign alias, a peer in the same namespace, a port of some
// bridge, a name without HostVethName's shape.
func TestLinksNotProvenOursAreNotDeleted(t *testing.T) {
	testutil.RequireRoot(t)
	node, pod := testns.New(t), testns.New(t)
	err := node.Do(func(ns.NetNS) error {
		mk := func(name, peer string, peerNS ns.NetNS) (netlink.Link, error) {
			attrs := netlink.NewLinkAttrs()
			attrs.Name = name
			v := &netlink.Veth{LinkAttrs: attrs, PeerName: peer}
			if peerNS != nil {
				v.PeerNamespace = netlink.NsFd(int(peerNS.Fd()))
			}
			if err := netlink.LinkAdd(v); err != nil {
				return nil, fmt.Errorf("create %s: %w", name, err)
			}
			return netlinksafe.LinkByName(name)
		}
		foreign, err := mk(HostVethName("a", "eth0"), "p1", pod)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetAlias(foreign, "someone else's"); err != nil {
			return err
		}
		if _, err := mk(HostVethName("b", "eth0"), "p2", nil); err != nil { // peer beside it
			return err
		}
		onBridge, err := mk(HostVethName("c", "eth0"), "p3", pod)
		if err != nil {
			return err
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "otherbr"
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return err
		}
		br, err := netlinksafe.LinkByName("otherbr")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMasterByIndex(onBridge, br.Attrs().Index); err != nil {
			return err
		}
		if _, err := mk("wgmnothex00000", "p4", pod); err != nil {
			return err
		}
		names := []string{HostVethName("a", "eth0"), HostVethName("b", "eth0"), HostVethName("c", "eth0"), "wgmnothex00000"}
		for _, n := range names {
			if removed, err := DeleteHostVeth(n); removed || err == nil {
				return fmt.Errorf("DeleteHostVeth(%s) = %v, %v: deleted a link not proven ours", n, removed, err)
			}
		}
		owned, err := OwnedVeths("t")
		if err != nil {
			return err
		}
		if len(owned) != 0 {
			return fmt.Errorf("OwnedVeths lists links not proven ours: %+v", owned)
		}
		links, err := netlinksafe.LinkList()
		if err != nil {
			return err
		}
		for _, n := range names {
			if !slices.ContainsFunc(links, func(l netlink.Link) bool { return l.Attrs().Name == n }) {
				return fmt.Errorf("%s is gone", n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func linkExists(n ns.NetNS, name string) bool {
	found := false
	_ = n.Do(func(ns.NetNS) error {
		_, err := netlinksafe.LinkByName(name)
		found = err == nil
		return nil
	})
	return found
}
