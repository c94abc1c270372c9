package main

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/internal/cnicode"
	"github.com/wgmesh/wgmesh/internal/link"
)

// cmdCheck compares the pod's network as it is with the result of its ADD
// (prevResult) and says precisely what differs.
func cmdCheck(args *skel.CmdArgs) error {
	conf, cerr := loadConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	if conf.RawPrevResult == nil {
		return cniError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult (the result of ADD)", nil)
	}
	if err := version.ParsePrevResult(&conf.NetConf.NetConf); err != nil {
		return cniError(types.ErrDecodingFailure, "cannot decode prevResult", err)
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return cniError(types.ErrDecodingFailure, "cannot convert prevResult", err)
	}
	if err := invoke.DelegateCheck(context.TODO(), conf.IPAM.Type, conf.IPAMStdin, nil); err != nil {
		return delegateError(conf.IPAM.Type, "CHECK", err)
	}
	var problems []string
	problems = append(problems, checkHostSide(args, conf.Bridge, prev)...)
	// perr is a *types.Error: kept out of err (an error) so that a nil
	// pointer never becomes a non-nil interface.
	podProblems, perr := checkPodSide(args, prev)
	if perr != nil {
		return perr
	}
	problems = append(problems, podProblems...)
	if len(problems) > 0 {
		return cniError(cnicode.CheckFailed, strings.Join(problems, "; "), nil)
	}
	return nil
}

// checkHostSide: the host veth exists, is up and is a port of the bridge,
// and the bridge carries the gateway of every pod address.
func checkHostSide(args *skel.CmdArgs, bridge string, prev *current.Result) []string {
	name := link.HostVethName(args.ContainerID, args.IfName)
	host, err := netlinksafe.LinkByName(name)
	if err != nil {
		return []string{fmt.Sprintf("host veth %s missing", name)}
	}
	br, err := netlinksafe.LinkByName(bridge)
	if err != nil {
		return []string{fmt.Sprintf("bridge %s missing", bridge)}
	}
	var out []string
	if host.Attrs().MasterIndex != br.Attrs().Index {
		out = append(out, fmt.Sprintf("host veth %s is not on bridge %s", name, bridge))
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		out = append(out, fmt.Sprintf("host veth %s is down", name))
	}
	return append(out, checkGateways(br, prev)...)
}

func checkGateways(br netlink.Link, prev *current.Result) []string {
	addrs, err := netlinksafe.AddrList(br, netlink.FAMILY_ALL)
	if err != nil {
		return []string{fmt.Sprintf("cannot list addresses of %s: %v", br.Attrs().Name, err)}
	}
	var out []string
	for _, ipc := range prev.IPs {
		if ipc.Gateway == nil {
			continue
		}
		gw := net.IPNet{IP: ipc.Gateway, Mask: ipc.Address.Mask}
		found := false
		for _, a := range addrs {
			found = found || a.IPNet.String() == gw.String()
		}
		if !found {
			out = append(out, fmt.Sprintf("gateway %s missing on %s", gw.String(), br.Attrs().Name))
		}
	}
	return out
}

// checkPodSide compares the container interface, its addresses and its
// routes with prev.
func checkPodSide(args *skel.CmdArgs, prev *current.Result) ([]string, *types.Error) {
	idx := -1
	for i, intf := range prev.Interfaces {
		if intf.Name == args.IfName && intf.Sandbox != "" {
			idx = i
		}
	}
	if idx < 0 {
		return nil, cniError(types.ErrInvalidNetworkConfig, fmt.Sprintf("prevResult has no interface %s in a sandbox", args.IfName), nil)
	}
	want := prev.Interfaces[idx]
	var problems []string
	err := ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(args.IfName)
		if err != nil {
			problems = append(problems, fmt.Sprintf("interface %s missing in the pod", args.IfName))
			return nil
		}
		problems = append(problems, compareLink(l, want)...)
		problems = append(problems, compareAddrs(l, prev, idx)...)
		problems = append(problems, compareRoutes(l, prev)...)
		return nil
	})
	if err != nil {
		return nil, cniError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("cannot enter pod network namespace %s", args.Netns), err)
	}
	return problems, nil
}

func compareLink(l netlink.Link, want *current.Interface) []string {
	var out []string
	a := l.Attrs()
	if want.Mac != "" && !strings.EqualFold(a.HardwareAddr.String(), want.Mac) {
		out = append(out, fmt.Sprintf("%s has MAC %s, want %s", a.Name, a.HardwareAddr, want.Mac))
	}
	if want.Mtu != 0 && a.MTU != want.Mtu {
		out = append(out, fmt.Sprintf("%s has MTU %d, want %d", a.Name, a.MTU, want.Mtu))
	}
	if a.Flags&net.FlagUp == 0 {
		out = append(out, fmt.Sprintf("%s is down", a.Name))
	}
	return out
}

func compareAddrs(l netlink.Link, prev *current.Result, idx int) []string {
	addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return []string{fmt.Sprintf("cannot list addresses of %s: %v", l.Attrs().Name, err)}
	}
	have := map[string]bool{}
	for _, a := range addrs {
		have[a.IPNet.String()] = true
	}
	var out []string
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface != idx {
			continue
		}
		if !have[ipc.Address.String()] {
			out = append(out, fmt.Sprintf("address %s missing in %s", ipc.Address.String(), l.Attrs().Name))
		}
	}
	return out
}

func compareRoutes(l netlink.Link, prev *current.Result) []string {
	routes, err := netlinksafe.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		return []string{fmt.Sprintf("cannot list routes of %s: %v", l.Attrs().Name, err)}
	}
	var out []string
	for _, want := range prev.Routes {
		gw := want.GW
		if gw == nil {
			gw = gatewayOfFamily(prev, want.Dst.IP.To4() != nil)
		}
		if !hasRoute(routes, want.Dst, gw) {
			via := ""
			if gw != nil {
				via = " via " + gw.String()
			}
			out = append(out, fmt.Sprintf("route %s%s missing in %s", want.Dst.String(), via, l.Attrs().Name))
		}
	}
	return out
}

func gatewayOfFamily(prev *current.Result, v4 bool) net.IP {
	for _, ipc := range prev.IPs {
		if ipc.Gateway != nil && (ipc.Gateway.To4() != nil) == v4 {
			return ipc.Gateway
		}
	}
	return nil
}

func hasRoute(routes []netlink.Route, dst net.IPNet, gw net.IP) bool {
	for _, r := range routes {
		if !sameDst(r, dst) {
			continue
		}
		if gw == nil || r.Gw.Equal(gw) {
			return true
		}
	}
	return false
}

// sameDst compares a kernel route's destination with a result's; netlink
// reports a default route with a nil Dst.
func sameDst(r netlink.Route, dst net.IPNet) bool {
	if r.Dst == nil {
		ones, _ := dst.Mask.Size()
		return ones == 0 && (r.Family == netlink.FAMILY_V4) == (dst.IP.To4() != nil)
	}
	return r.Dst.String() == dst.String()
}
