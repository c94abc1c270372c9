package main

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// cmdStatus (CNI 1.1) says whether the node can take pods: subnet.env is
// written and valid, the mesh device exists and is up, and the IPAM is
// ready. Otherwise code 50, and the runtime keeps the node NotReady.
func cmdStatus(args *skel.CmdArgs) error {
	conf, cerr := loadConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	if _, err := readSubnetEnv(conf.SubnetFile, types.ErrPluginNotAvailable); err != nil {
		return err
	}
	wg := conf.WireguardInterface
	l, err := netlinksafe.LinkByName(wg)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return cniError(types.ErrPluginNotAvailable, fmt.Sprintf("mesh device %s does not exist (is wgmesh-agent running?)", wg), nil)
	}
	if err != nil {
		return cniError(types.ErrPluginNotAvailable, fmt.Sprintf("cannot look up mesh device %s", wg), err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return cniError(types.ErrPluginNotAvailable, fmt.Sprintf("mesh device %s is down", wg), nil)
	}
	if err := invoke.DelegateStatus(context.TODO(), conf.IPAM.Type, conf.IPAMStdin, nil); err != nil {
		return delegateError(conf.IPAM.Type, "STATUS", err)
	}
	return nil
}
