package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/wgmesh/wgmesh/internal/bridgenf"
	"github.com/wgmesh/wgmesh/internal/cnicode"
	"github.com/wgmesh/wgmesh/internal/cniconf"
	"github.com/wgmesh/wgmesh/internal/faultpoint"
	"github.com/wgmesh/wgmesh/internal/ipam"
	"github.com/wgmesh/wgmesh/internal/link"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
)

// addition is one ADD in progress: each step fills in a field, and
// registers in undo how to take back what it made.
type addition struct {
	args   *skel.CmdArgs
	conf   *cniconf.Config
	env    subnetenv.Env
	netns  ns.NetNS
	mtu    int
	bridge *netlink.Bridge
	veth   link.Veth
	result *current.Result
	undo   cleanupStack
}

func cmdAdd(args *skel.CmdArgs) error {
	a := &addition{args: args}
	defer a.closeNetNS()
	// Each step that changes the system is followed by a fault point (a
	// test hook that can SIGKILL the process there): whatever a step leaves,
	// DEL, a retried ADD and GC must be able to undo.
	steps := []struct {
		run   func() *types.Error
		after string
	}{
		{a.loadConf, ""},
		{a.readSubnetEnv, ""},
		{a.openNetNS, ""},
		{a.ensureBridge, faultpoint.BridgeReady},
		{a.createVeth, faultpoint.VethReady},
		{a.allocateAddresses, faultpoint.AddressAssigned},
		{a.configurePodInterface, faultpoint.PodConfigured},
	}
	for _, step := range steps {
		if err := step.run(); err != nil {
			a.undo.run()
			return err
		}
		faultpoint.Reached(step.after)
	}
	faultpoint.Reached(faultpoint.BeforeResultSent)
	return types.PrintResult(a.result, a.conf.CNIVersion)
}

func (a *addition) loadConf() *types.Error {
	var err *types.Error
	a.conf, err = loadConf(a.args.StdinData)
	if err != nil {
		return err
	}
	if e := cniconf.ValidIfName("CNI_IFNAME", a.args.IfName); e != nil {
		return cniError(types.ErrInvalidEnvironmentVariables, e.Error(), nil)
	}
	return a.checkIPAMConf()
}

// checkIPAMConf refuses an ipam section that wgmesh-ipam would refuse, now,
// before the bridge and the veth exist: a bad range or a relative dataDir
// is found by the IPAM only after they were made. Only ADD checks: DEL and
// GC must keep working for whatever an older, laxer version set up.
func (a *addition) checkIPAMConf() *types.Error {
	if a.conf.IPAM.Type != cniconf.DefaultIPAMType {
		return nil
	}
	_, err := ipam.ParseConfig(a.conf.IPAMStdin)
	switch {
	case errors.Is(err, ipam.ErrMalformed):
		return cniError(types.ErrDecodingFailure, "cannot decode the ipam section", err)
	case err != nil:
		return cniError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid wgmesh netconf: %v", err), nil)
	}
	return nil
}

func (a *addition) readSubnetEnv() *types.Error {
	var err *types.Error
	a.env, err = readSubnetEnv(a.conf.SubnetFile, types.ErrTryAgainLater)
	a.mtu = a.conf.EffectiveMTU(a.env.MTU)
	return err
}

// openNetNS comes before anything is made, so a vanished sandbox costs
// nothing: no veth, no address.
func (a *addition) openNetNS() *types.Error {
	n, err := ns.GetNS(a.args.Netns)
	if err != nil {
		return cniError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("pod network namespace %s is gone or not a network namespace", a.args.Netns), err)
	}
	a.netns = n
	return nil
}

func (a *addition) closeNetNS() {
	if a.netns != nil {
		a.netns.Close()
	}
}

// ensureBridge makes cni0 carry the node subnets' gateways, lets the node
// forward pod traffic (to the mesh and to the world) and makes bridged pod
// traffic pass iptables (package bridgenf).
func (a *addition) ensureBridge() *types.Error {
	br, _, err := link.EnsureBridge(link.BridgeConfig{Name: a.conf.Bridge, MTU: a.mtu, Gateways: gateways(a.env)})
	if err != nil {
		return cniError(cnicode.LinkSetup, fmt.Sprintf("cannot set up bridge %s", a.conf.Bridge), err)
	}
	a.bridge = br
	v4, v6 := false, false
	for _, s := range a.env.Subnets() {
		if err := enableForwarding(s.Addr().Is6()); err != nil {
			return cniError(cnicode.LinkSetup, "cannot enable IP forwarding", err)
		}
		v4, v6 = v4 || s.Addr().Is4(), v6 || s.Addr().Is6()
	}
	// Best effort: without it only Services whose backend is on this
	// node's bridge fail; the pod must not. The agent retries at every
	// resync and doctor reports it (BridgeNetfilterOff).
	_, _ = bridgenf.Ensure("/proc/sys", v4, v6)
	return nil
}

func (a *addition) createVeth() *types.Error {
	owner := link.Owner{Network: a.conf.Name, ContainerID: a.args.ContainerID, IfName: a.args.IfName}
	v, err := link.CreateVeth(link.VethConfig{
		Owner:         owner,
		ContainerName: a.args.IfName,
		NetNSFd:       int(a.netns.Fd()),
		MTU:           a.mtu,
		Bridge:        a.bridge,
		Hairpin:       a.conf.Hairpin(),
	})
	if errors.Is(err, link.ErrContainerIfExists) {
		return cniError(cnicode.IfaceExists, fmt.Sprintf("pod already has an interface %s", a.args.IfName), err)
	}
	if err != nil {
		return cniError(cnicode.LinkSetup, fmt.Sprintf("cannot create the veth pair for %s", a.args.IfName), err)
	}
	a.veth = v
	a.undo.push(func() { _, _ = link.DeleteHostVeth(v.HostName) })
	return nil
}

// Indexes into result.Interfaces.
const (
	ifBridge = iota
	ifHost
	ifContainer
)

func (a *addition) allocateAddresses() *types.Error {
	ipamType, stdin := a.conf.IPAM.Type, a.conf.IPAMStdin
	r, err := invoke.DelegateAdd(context.TODO(), ipamType, stdin, nil)
	if err != nil {
		return delegateError(ipamType, "ADD", err)
	}
	// From here on an address is reserved: give it back on any failure.
	a.undo.push(func() { _ = invoke.DelegateDel(context.TODO(), ipamType, stdin, nil) })
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return cniError(cnicode.IPAM, fmt.Sprintf("ipam %s returned a result wgmesh cannot read", ipamType), err)
	}
	if len(res.IPs) == 0 {
		return cniError(cnicode.IPAM, fmt.Sprintf("ipam %s returned no address", ipamType), nil)
	}
	res.Interfaces = []*current.Interface{
		ifBridge:    {Name: a.bridge.Name, Mac: a.bridge.HardwareAddr.String(), Mtu: a.mtu},
		ifHost:      {Name: a.veth.HostName, Mac: a.veth.HostMAC.String(), Mtu: a.mtu},
		ifContainer: {Name: a.veth.ContainerName, Mac: a.veth.ContainerMAC.String(), Mtu: a.mtu, Sandbox: a.args.Netns},
	}
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(ifContainer)
		if err := a.ensureGatewayFor(ipc); err != nil {
			return err
		}
	}
	res.CNIVersion = current.ImplementedSpecVersion
	a.result = res
	return nil
}

// ensureGatewayFor makes sure the gateway the IPAM gave a pod address is on
// the bridge. For the node subnets it already is; this covers explicit
// IPAM ranges outside them.
func (a *addition) ensureGatewayFor(ipc *current.IPConfig) *types.Error {
	if ipc.Gateway == nil {
		return cniError(cnicode.IPAM, fmt.Sprintf("ipam %s gave %s without a gateway", a.conf.IPAM.Type, ipc.Address.String()), nil)
	}
	gw, ok := netip.AddrFromSlice(ipc.Gateway)
	if !ok {
		return cniError(cnicode.IPAM, fmt.Sprintf("ipam %s gave an invalid gateway %v", a.conf.IPAM.Type, ipc.Gateway), nil)
	}
	ones, _ := ipc.Address.Mask.Size()
	want := netip.PrefixFrom(gw.Unmap(), ones)
	for _, have := range gateways(a.env) {
		if have == want {
			return nil
		}
	}
	if err := link.EnsureAddress(a.bridge, want); err != nil {
		return cniError(cnicode.LinkSetup, fmt.Sprintf("cannot put gateway %s on bridge %s", want, a.bridge.Name), err)
	}
	return nil
}

// configurePodInterface puts the addresses and routes on the pod's
// interface and brings it up. A route without a gateway goes via the
// gateway of the address of its family.
func (a *addition) configurePodInterface() *types.Error {
	var addrs []netip.Prefix
	gw := map[bool]netip.Addr{} // is IPv4 -> gateway
	for _, ipc := range a.result.IPs {
		addr, _ := netip.AddrFromSlice(ipc.Address.IP)
		ones, _ := ipc.Address.Mask.Size()
		addr = addr.Unmap()
		addrs = append(addrs, netip.PrefixFrom(addr, ones))
		if g, ok := netip.AddrFromSlice(ipc.Gateway); ok && !gw[addr.Is4()].IsValid() {
			gw[addr.Is4()] = g.Unmap()
		}
	}
	var routes []link.Route
	for _, r := range a.result.Routes {
		dst, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		dst = dst.Unmap()
		via, ok := netip.AddrFromSlice(r.GW)
		if !ok {
			via = gw[dst.Is4()]
		}
		routes = append(routes, link.Route{Dst: netip.PrefixFrom(dst, ones), GW: via.Unmap()})
	}
	err := a.netns.Do(func(ns.NetNS) error {
		return link.ConfigurePodInterface(a.args.IfName, addrs, routes)
	})
	if err != nil {
		return cniError(cnicode.LinkSetup, fmt.Sprintf("cannot configure %s in the pod", a.args.IfName), err)
	}
	return nil
}

// enableForwarding turns on IP forwarding in the node's namespace, writing
// only when it is off (one read in the common case).
func enableForwarding(v6 bool) error {
	path := "/proc/sys/net/ipv4/ip_forward"
	if v6 {
		path = "/proc/sys/net/ipv6/conf/all/forwarding"
	}
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 && b[0] == '1' {
		return nil
	}
	return os.WriteFile(path, []byte("1"), 0o644)
}

// cleanupStack holds the undo actions of the steps done so far; run takes
// them back newest first. A stack, not a defer keyed on err, so that no
// early return can skip it.
type cleanupStack []func()

func (c *cleanupStack) push(f func()) { *c = append(*c, f) }

func (c *cleanupStack) run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
	*c = nil
}
