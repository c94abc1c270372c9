// Package link creates and removes the kernel links of the wgmesh CNI
// plugin: the pod bridge (with the node subnets' gateway addresses), the
// veth pairs that connect pods to it, and the addresses and routes of the
// pod end. The agent's data plane sets up the bridge through it too, so
// there is one way the bridge is made.
//
// It owns the bridge it is told to use (created when absent, adopted when
// present, never deleted), the veths whose alias it wrote (see Owner) or
// that it can prove it made before the alias was written (see halfMade),
// and the pod interface it configures. It never touches other links, routes or
// addresses, and it runs in whatever network namespace its caller is in:
// callers switch namespaces, not it.
package link

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/internal/faultpoint"
	"github.com/wgmesh/wgmesh/internal/netconv"
)

// BridgeConfig is what the bridge must look like.
type BridgeConfig struct {
	Name string
	MTU  int
	// Gateways are the bridge addresses, each with the prefix length of its
	// subnet (10.42.1.1/24), so the kernel adds the connected route.
	Gateways []netip.Prefix
}

// EnsureBridge is the one place the pod bridge is set up. The agent's data
// plane calls it before any pod exists (peer routes take the gateway as
// their source) and the plugin calls it on every ADD; whichever runs first,
// the bridge ends up the same. A missing bridge is created with a fixed
// MAC, the MTU and up (see createBridge); an existing one is adopted as it
// is. Either way it then ignores router advertisements, is up and carries
// the gateway addresses. It adds what is missing and changes nothing else,
// so concurrent callers (many ADDs at once, the agent) all succeed. The MTU
// of an existing bridge is left alone: the agent and the plugin read it
// from different sources and must not undo each other's. It never deletes
// the bridge. writes counts the kernel changes made: 0 when all was there.
func EnsureBridge(cfg BridgeConfig) (br *netlink.Bridge, writes int, err error) {
	br, err = bridgeByName(cfg.Name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		var created bool
		br, created, err = createBridge(cfg)
		if created {
			writes++
		}
	}
	if err != nil {
		return nil, writes, err
	}
	if noRouterAdvertisements(cfg.Name) {
		writes++
	}
	if br.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(br); err != nil {
			return nil, writes, fmt.Errorf("set bridge %s up: %w", cfg.Name, err)
		}
		writes++
	}
	for _, gw := range cfg.Gateways {
		added, err := ensureAddress(br, gw)
		if err != nil {
			return nil, writes, err
		}
		if added {
			writes++
		}
	}
	return br, writes, nil
}

func bridgeByName(name string) (*netlink.Bridge, error) {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, fmt.Errorf("%s exists but is a %s, not a bridge", name, l.Type())
	}
	return br, nil
}

// createBridge creates the bridge up, with the MTU and a fixed random MAC:
// without a MAC of its own, a bridge takes the lowest MAC of its ports and
// changes it as pods come and go, which breaks the pods' ARP entries for
// the gateway. All three go in the creating request, so a bridge is never
// seen without them. created is false when another caller made it first.
func createBridge(cfg BridgeConfig) (br *netlink.Bridge, created bool, err error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = cfg.Name
	attrs.MTU = cfg.MTU
	attrs.Flags = net.FlagUp
	attrs.HardwareAddr = RandomMAC()
	err = netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
	if err != nil && !errors.Is(err, syscall.EEXIST) {
		return nil, false, fmt.Errorf("create bridge %s: %w", cfg.Name, err)
	}
	created = err == nil
	faultpoint.Reached(faultpoint.BridgeCreated)
	br, err = bridgeByName(cfg.Name)
	return br, created, err
}

// noRouterAdvertisements makes the bridge ignore IPv6 router advertisements:
// wgmesh owns the bridge's routes. Every EnsureBridge checks it (one
// read), so a bridge whose creator was killed before writing it gets it
// from the next call. It reports whether it wrote.
func noRouterAdvertisements(name string) bool {
	path := "/proc/sys/net/ipv6/conf/" + name + "/accept_ra"
	if b, err := os.ReadFile(path); err != nil || (len(b) > 0 && b[0] == '0') {
		return false // no IPv6 on this node, or already off
	}
	return os.WriteFile(path, []byte("0"), 0o644) == nil
}

// EnsureAddress adds the gateway addr to the bridge l unless it is already
// there (see ensureAddress).
func EnsureAddress(l netlink.Link, addr netip.Prefix) error {
	_, err := ensureAddress(l, addr)
	return err
}

// ensureAddress adds a gateway address in one netlink request, no dump:
// EEXIST means another caller put it there first, and added is false. An
// IPv6 gateway skips duplicate address detection: pods use it as their
// next hop, and the node as its source, the moment it is there, not after
// DAD (which does not even start while the bridge has no port).
func ensureAddress(l netlink.Link, addr netip.Prefix) (added bool, err error) {
	a := &netlink.Addr{IPNet: netconv.IPNet(addr)}
	if addr.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	err = netlink.AddrAdd(l, a)
	if errors.Is(err, syscall.EEXIST) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("add address %s to %s: %w", addr, l.Attrs().Name, err)
	}
	return true, nil
}

// RandomMAC returns a random locally administered unicast MAC.
func RandomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	_, _ = rand.Read(mac) // crypto/rand.Read never fails on Linux
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// Owner identifies the attachment a host veth belongs to. It is written into
// the link's alias, so GC can find the veths of a network without any state
// outside the kernel.
type Owner struct {
	Network     string
	ContainerID string
	IfName      string
}

const aliasPrefix = "wgmesh "

// maxAliasField bounds each field of the alias. The kernel refuses an alias
// of IFALIASZ (256) bytes or more, and neither CNI network names nor
// container IDs have a length limit; with fields of at most 64 bytes and an
// interface name of at most 15, an alias is at most 162 bytes.
const maxAliasField = 64

// Alias renders o as a link alias ("wgmesh net=N id=C if=I"). A network
// name or container ID longer than 64 bytes is shortened (see shorten), so
// the alias always fits the kernel's limit.
func (o Owner) Alias() string {
	return fmt.Sprintf("%snet=%s id=%s if=%s", aliasPrefix, shorten(o.Network), shorten(o.ContainerID), shorten(o.IfName))
}

// shorten keeps s when it fits maxAliasField, else its first 40 bytes, '~'
// and 16 hex digits of its SHA-256: still unique, still recognisable.
// CNI names and IDs never contain '~' or spaces, so it is unambiguous.
func shorten(s string) string {
	if len(s) <= maxAliasField {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return s[:40] + "~" + hex.EncodeToString(sum[:8])
}

// ParseAlias reverses Alias; ok is false for aliases wgmesh did not write.
// Fields that Alias shortened come back shortened: compare them with
// SameNetwork, not ==.
func ParseAlias(s string) (o Owner, ok bool) {
	rest, found := strings.CutPrefix(s, aliasPrefix)
	if !found {
		return Owner{}, false
	}
	for _, f := range strings.Fields(rest) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "net":
			o.Network = v
		case "id":
			o.ContainerID = v
		case "if":
			o.IfName = v
		}
	}
	return o, o.Network != "" && o.ContainerID != "" && o.IfName != ""
}

// SameNetwork reports whether o (parsed from an alias) names network.
func (o Owner) SameNetwork(network string) bool {
	return o.Network == shorten(network)
}

// HostVethName is the host-side veth name of an attachment: "wgm" and 12
// hex digits of a hash of the container ID and interface name. Being
// derived, DEL finds the veth without entering the pod's netns, and a
// retried ADD finds the leftover of a killed one. It is also half of the
// proof that a veth is ours (see halfMade).
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return "wgm" + hex.EncodeToString(sum[:6])
}

// hostVethName matches every name HostVethName can return.
var hostVethName = regexp.MustCompile(`^wgm[0-9a-f]{12}$`)

// halfMade reports whether l is a host veth that CreateVeth made but did not
// finish labelling: a process killed between creating the pair and setting
// the alias (the kernel ignores an alias sent with RTM_NEWLINK, so the two
// cannot be one request). Such a link is ours beyond reasonable doubt:
//   - its name has HostVethName's shape (the caller derived it, or GC checks
//     the shape);
//   - it is a veth without an alias, attached to no bridge (CreateVeth sets
//     the alias before it attaches);
//   - its peer lives in another network namespace: CreateVeth creates the
//     pod end directly in the pod's netns, in the same request as the host
//     end, so this holds from the instant the pair exists.
func halfMade(l netlink.Link) bool {
	a := l.Attrs()
	return l.Type() == "veth" && hostVethName.MatchString(a.Name) && a.Alias == "" && a.MasterIndex == 0 && a.NetNsID >= 0
}

// VethConfig describes a pod's veth pair.
type VethConfig struct {
	Owner         Owner
	ContainerName string // CNI_IFNAME
	NetNSFd       int    // the pod's network namespace
	MTU           int
	Bridge        netlink.Link
	Hairpin       bool
}

// Veth is the pair that CreateVeth made.
type Veth struct {
	HostName, ContainerName string
	HostMAC, ContainerMAC   net.HardwareAddr
}

// ErrContainerIfExists means the pod already has an interface called like
// CNI_IFNAME.
var ErrContainerIfExists = errors.New("interface already exists in the pod's network namespace")

// CreateVeth creates the pair in one request from the node's namespace: the
// host end up, with alias, MTU and MAC; the container end directly in the
// pod's namespace under its final name (down, the caller configures it).
// Then it attaches the host end to the bridge with the hairpin setting.
// A leftover host end of the same attachment (an ADD killed half-way) is
// replaced. On error nothing is left behind.
func CreateVeth(cfg VethConfig) (Veth, error) {
	v := Veth{
		HostName:      HostVethName(cfg.Owner.ContainerID, cfg.Owner.IfName),
		ContainerName: cfg.ContainerName,
		HostMAC:       RandomMAC(),
		ContainerMAC:  RandomMAC(),
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = v.HostName
	attrs.MTU = cfg.MTU
	attrs.Flags = net.FlagUp
	attrs.HardwareAddr = v.HostMAC
	veth := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         cfg.ContainerName,
		PeerHardwareAddr: v.ContainerMAC,
		PeerMTU:          uint32(cfg.MTU),
		PeerNamespace:    netlink.NsFd(cfg.NetNSFd),
	}
	err := netlink.LinkAdd(veth)
	if errors.Is(err, syscall.EEXIST) {
		removed, derr := DeleteHostVeth(v.HostName)
		if derr != nil {
			return Veth{}, derr
		}
		if !removed {
			return Veth{}, fmt.Errorf("%s: %w", cfg.ContainerName, ErrContainerIfExists)
		}
		err = netlink.LinkAdd(veth)
		if errors.Is(err, syscall.EEXIST) {
			return Veth{}, fmt.Errorf("%s: %w", cfg.ContainerName, ErrContainerIfExists)
		}
	}
	if err != nil {
		return Veth{}, fmt.Errorf("create veth %s/%s: %w", v.HostName, cfg.ContainerName, err)
	}
	if err := attach(veth, cfg.Owner, cfg.Bridge, cfg.Hairpin); err != nil {
		_, _ = DeleteHostVeth(v.HostName)
		return Veth{}, err
	}
	return v, nil
}

// attach labels the host end with its owner (the kernel ignores an alias
// given at creation) and puts it on the bridge. Until the alias is set the
// veth is recognised as ours by halfMade; the alias must come before the
// bridge, which halfMade relies on.
func attach(host *netlink.Veth, owner Owner, br netlink.Link, hairpin bool) error {
	faultpoint.Reached(faultpoint.VethCreated)
	if err := netlink.LinkSetAlias(host, owner.Alias()); err != nil {
		return fmt.Errorf("set alias on %s: %w", host.Name, err)
	}
	faultpoint.Reached(faultpoint.VethAliased)
	if err := netlink.LinkSetMasterByIndex(host, br.Attrs().Index); err != nil {
		return fmt.Errorf("attach %s to bridge %s: %w", host.Name, br.Attrs().Name, err)
	}
	if hairpin {
		faultpoint.Reached(faultpoint.VethAttached)
		if err := netlink.LinkSetHairpin(host, true); err != nil {
			return fmt.Errorf("set hairpin on %s: %w", host.Name, err)
		}
	}
	return nil
}

// DeleteHostVeth deletes a host veth (and with it the pod end). removed is
// false when there was no such link, which is not an error: DEL is
// idempotent. It deletes a veth with a wgmesh alias, or one that halfMade
// proves is ours (a killed ADD's); any other link of that name is left
// alone.
func DeleteHostVeth(name string) (removed bool, err error) {
	l, err := netlinksafe.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up %s: %w", name, err)
	}
	if !ours(l) {
		return false, fmt.Errorf("%s exists but is not a wgmesh veth (type %s, alias %q); not deleting it", name, l.Type(), l.Attrs().Alias)
	}
	if err := netlink.LinkDel(l); err != nil {
		if errors.Is(err, syscall.ENODEV) { // gone meanwhile: the pod's netns was destroyed
			return false, nil
		}
		return false, fmt.Errorf("delete %s: %w", name, err)
	}
	return true, nil
}

// ours reports whether l is a host veth wgmesh made: labelled, or half made.
func ours(l netlink.Link) bool {
	if l.Type() != "veth" {
		return false
	}
	if _, ok := ParseAlias(l.Attrs().Alias); ok {
		return true
	}
	return halfMade(l)
}

// OwnedVeth is a host veth of a network: labelled with its alias, or half
// made (Owner is then the zero value: the alias that would name it was
// never written).
type OwnedVeth struct {
	Name  string
	Owner Owner
}

// HalfMade reports whether the veth is a killed ADD's leftover without alias.
func (v OwnedVeth) HalfMade() bool { return v.Owner == Owner{} }

// OwnedVeths lists, in one dump, the host veths wgmesh created for network
// and the half-made ones (see halfMade). A half-made veth carries no
// network name; it is listed for every network, because it can only be the
// leftover of an ADD killed in the instant between two netlink requests,
// or an ADD in that very instant, which then fails cleanly and is retried.
func OwnedVeths(network string) ([]OwnedVeth, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []OwnedVeth
	for _, l := range links {
		if l.Type() != "veth" {
			continue
		}
		if o, ok := ParseAlias(l.Attrs().Alias); ok && o.SameNetwork(network) {
			out = append(out, OwnedVeth{Name: l.Attrs().Name, Owner: o})
		} else if halfMade(l) {
			out = append(out, OwnedVeth{Name: l.Attrs().Name})
		}
	}
	return out, nil
}
