package doctor

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/coreos/go-iptables/iptables"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/wgmesh/wgmesh/internal/firewall"
	"github.com/wgmesh/wgmesh/internal/mesh"
)

// ReadConfig says what to read.
type ReadConfig struct {
	// Device is the WireGuard device (wgmesh0).
	Device string
	// Endpoint is this node's own endpoint IP; the underlay is the interface
	// holding it. Invalid: the underlay is the one with the default route.
	Endpoint netip.Addr
	// SysctlRoot is /proc/sys (tests may point it elsewhere).
	SysctlRoot string
	// Routes are the peer routes (destination, the gateway as src): the
	// kernel is asked where a packet to each goes (Kernel.Lookups).
	Routes []mesh.Route
	// Bridge is the pods' bridge (cni0): a pod's packets come in on it.
	// Empty: only lookups as the node itself.
	Bridge string
	// Subnets are this node's pod subnets (names the subnet of a lookup
	// to our own pods; optional).
	Subnets []netip.Prefix
}

// Read gathers the kernel facts Check needs, from the network namespace of
// the calling thread. Facts it cannot read stay unknown; the errors are
// returned joined, next to everything that was read.
func Read(cfg ReadConfig) (Kernel, error) {
	var k Kernel
	var errs []error
	if cfg.SysctlRoot == "" {
		cfg.SysctlRoot = "/proc/sys"
	}
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		errs = append(errs, fmt.Errorf("list routes: %w", err))
	}
	names := map[int]string{}
	links, err := netlinksafe.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
		if l.Attrs().Name == cfg.Device {
			k.DeviceMTU = l.Attrs().MTU
		}
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, ok := prefixOf(r)
		if !ok {
			continue
		}
		src, _ := netip.AddrFromSlice(r.Src)
		k.Routes = append(k.Routes, Route{
			Table: r.Table, Protocol: int(r.Protocol), Type: routeType(r.Type), Dst: dst,
			Dev: names[r.LinkIndex], Src: src.Unmap(),
		})
	}

	lookups, err := readLookups(cfg, names)
	if err != nil {
		errs = append(errs, err)
	}
	k.Lookups = lookups

	k.IPv4Forward = readBool(filepath.Join(cfg.SysctlRoot, "net/ipv4/ip_forward"), &errs)
	k.IPv6Forward = readBool(filepath.Join(cfg.SysctlRoot, "net/ipv6/conf/all/forwarding"), nil)
	k.RPFilterAll = readInt(filepath.Join(cfg.SysctlRoot, "net/ipv4/conf/all/rp_filter"), &errs)
	if cfg.Device != "" {
		k.RPFilterDevice = readInt(filepath.Join(cfg.SysctlRoot, "net/ipv4/conf", cfg.Device, "rp_filter"), nil)
	}

	k.NodeAddr = cfg.Endpoint
	for _, t := range []struct {
		proto iptables.Protocol
		into  **Filter
	}{{iptables.ProtocolIPv4, &k.Filter}, {iptables.ProtocolIPv6, &k.Filter6}} {
		if lines, err := readFilter(t.proto); err != nil {
			errs = append(errs, err)
		} else {
			f := ParseFilter(lines)
			*t.into = &f
		}
	}
	if tables, err := readNftTables(); err != nil {
		errs = append(errs, err)
	} else {
		k.NftTables = tables
	}
	if cfg.Bridge != "" {
		if _, err := os.Stat(filepath.Join(cfg.SysctlRoot, "net/bridge")); errors.Is(err, os.ErrNotExist) {
			k.BridgeNetfilterMissing = true
		} else {
			k.BridgeNFCallIPTables = readBool(filepath.Join(cfg.SysctlRoot, "net/bridge/bridge-nf-call-iptables"), &errs)
			k.BridgeNFCallIP6Tables = readBool(filepath.Join(cfg.SysctlRoot, "net/bridge/bridge-nf-call-ip6tables"), nil)
		}
	}

	if fw, err := firewall.New().ReadForward(false); err != nil {
		errs = append(errs, err)
	} else {
		k.ForwardPolicy, k.ForwardJump = fw.Policy, fw.JumpFound
	}

	if dev, mtu, v6, err := underlay(cfg.Endpoint); err != nil {
		errs = append(errs, err)
	} else {
		k.UnderlayDev, k.UnderlayMTU, k.UnderlayIPv6 = dev, mtu, v6
		if cfg.Endpoint.IsValid() && dev != "" && dev != cfg.Device {
			wg, err := wireGuardLink(dev)
			if err != nil {
				errs = append(errs, err)
			}
			k.UnderlayWireGuard = wg
		}
	}
	return k, errors.Join(errs...)
}

func prefixOf(r netlink.Route) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(r.Dst.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := r.Dst.Mask.Size()
	ip = ip.Unmap()
	if ip.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(ip, ones).Masked(), true
}

func routeType(t int) string {
	switch t {
	case unix.RTN_UNICAST, unix.RTN_UNSPEC:
		return "unicast"
	case unix.RTN_LOCAL:
		return "local"
	case unix.RTN_BROADCAST:
		return "broadcast"
	case unix.RTN_MULTICAST:
		return "multicast"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_ANYCAST:
		return "anycast"
	}
	return strconv.Itoa(t)
}

// underlay finds the interface carrying endpoint (or the default route).
func underlay(endpoint netip.Addr) (dev string, mtu int, v6 bool, err error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return "", 0, false, fmt.Errorf("list links: %w", err)
	}
	if endpoint.IsValid() {
		for _, l := range links {
			addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				continue
			}
			for _, a := range addrs {
				if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == endpoint {
					return l.Attrs().Name, l.Attrs().MTU, endpoint.Is6(), nil
				}
			}
		}
		return "", 0, false, fmt.Errorf("no interface holds the node endpoint %s", endpoint)
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlinksafe.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			continue
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			for _, l := range links {
				if l.Attrs().Index == r.LinkIndex {
					return l.Attrs().Name, l.Attrs().MTU, fam == netlink.FAMILY_V6, nil
				}
			}
		}
	}
	return "", 0, false, nil // no default route: underlay unknown, MTU check skipped
}

func readBool(path string, errs *[]error) *bool {
	n := readInt(path, errs)
	if n == nil {
		return nil
	}
	b := *n != 0
	return &b
}

func readInt(path string, errs *[]error) *int {
	b, err := os.ReadFile(path)
	if err != nil {
		if errs != nil && !errors.Is(err, os.ErrNotExist) {
			*errs = append(*errs, fmt.Errorf("read %s: %w", path, err))
		}
		return nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		if errs != nil {
			*errs = append(*errs, fmt.Errorf("parse %s: %w", path, err))
		}
		return nil
	}
	return &n
}

// readFilter lists every chain of one family's filter table.
func readFilter(proto iptables.Protocol) ([]string, error) {
	ipt, err := iptables.NewWithProtocol(proto)
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	chains, err := ipt.ListChains("filter")
	if err != nil {
		return nil, fmt.Errorf("list filter chains: %w", err)
	}
	var all []string
	for _, c := range chains {
		ls, err := ipt.List("filter", c)
		if err != nil {
			return nil, fmt.Errorf("list filter chain %s: %w", c, err)
		}
		all = append(all, ls...)
	}
	return all, nil
}

// readNftTables lists the nftables tables as "family name" ("inet
// firewalld"), with one netlink dump (the image has no nft program).
func readNftTables() ([]string, error) {
	c, err := mdnetlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	defer c.Close()
	msgs, err := c.Execute(mdnetlink.Message{
		Header: mdnetlink.Header{
			Type:  mdnetlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETTABLE),
			Flags: mdnetlink.Request | mdnetlink.Dump,
		},
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0}, // nfgenmsg
	})
	if err != nil {
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	families := map[byte]string{unix.NFPROTO_INET: "inet", unix.NFPROTO_IPV4: "ip", unix.NFPROTO_IPV6: "ip6",
		unix.NFPROTO_ARP: "arp", unix.NFPROTO_BRIDGE: "bridge", unix.NFPROTO_NETDEV: "netdev"}
	var out []string
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := mdnetlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			continue
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_TABLE_NAME {
				out = append(out, families[m.Data[0]]+" "+ad.String())
			}
		}
	}
	return out, nil
}

// wireGuardLink describes dev when it is a WireGuard device: a kernel one
// (link type wireguard) or a userspace one (wg-quick with wireguard-go: a
// TUN device whose UAPI socket answers to its name); nil otherwise.
func wireGuardLink(dev string) (*WireGuardLink, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", dev, err)
	}
	kind := ""
	switch l.Type() {
	case "wireguard":
		kind = "kernel"
	case "tuntap", "tun":
		kind = "userspace"
	default:
		return nil, nil
	}
	c, err := wgctrl.New()
	if err != nil {
		if kind == "kernel" {
			return &WireGuardLink{Name: dev, Kind: kind, Peers: -1}, nil
		}
		return nil, fmt.Errorf("open wgctrl: %w", err)
	}
	defer c.Close()
	d, err := c.Device(dev)
	if err != nil {
		if kind == "kernel" {
			return &WireGuardLink{Name: dev, Kind: kind, Peers: -1}, nil
		}
		return nil, nil // a TUN device that is not WireGuard (a VPN client, ...)
	}
	return &WireGuardLink{Name: dev, Kind: kind, Peers: len(d.Peers), ListenPort: d.ListenPort}, nil
}
