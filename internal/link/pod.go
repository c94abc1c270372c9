package link

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/internal/netconv"
)

// Route is a route for a pod interface. An invalid GW means on-link.
type Route struct {
	Dst netip.Prefix
	GW  netip.Addr
}

// ConfigurePodInterface puts addrs on the interface name, brings it up and
// adds routes through it. Call it inside the pod's network namespace.
//
// It does what the reference plugins' ipam.ConfigureIface does, in fewer
// kernel round trips and without that package's dependencies (iptables and
// nftables clients, whose initialisation every plugin run would pay for):
// IPv6 addresses are added with IFA_F_NODAD, because the IPAM guarantees
// they are unique and duplicate address detection would hold the pod for
// a second or two.
func ConfigurePodInterface(name string, addrs []netip.Prefix, routes []Route) error {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: netconv.IPNet(a)}
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
			enableIPv6(name)
		}
		if err := netlink.AddrAdd(l, addr); err != nil && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("add address %s to %s: %w", a, name, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	for _, r := range routes {
		route := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: netconv.IPNet(r.Dst.Masked())}
		if r.GW.IsValid() {
			route.Gw = r.GW.AsSlice()
		} else {
			route.Scope = netlink.SCOPE_LINK
		}
		if err := netlink.RouteAdd(route); err != nil && !errors.Is(err, syscall.EEXIST) {
			via := ""
			if r.GW.IsValid() {
				via = " via " + r.GW.String()
			}
			return fmt.Errorf("add route %s%s dev %s: %w", r.Dst, via, name, err)
		}
	}
	return nil
}

// enableIPv6 clears disable_ipv6 on the interface when a node's defaults
// set it; a no-op (one read) otherwise.
func enableIPv6(name string) {
	path := "/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6"
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 && b[0] == '0' {
		return
	}
	_ = os.WriteFile(path, []byte("0"), 0o644)
}
