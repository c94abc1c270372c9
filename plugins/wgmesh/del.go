package main

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/wgmesh/wgmesh/internal/cnicode"
	"github.com/wgmesh/wgmesh/internal/link"
)

// cmdDel releases the pod's addresses, then removes its veth pair. Every
// part tolerates "already gone": the netns may have been destroyed (which
// takes the veth with it), the IPAM state may be gone, DEL may come twice.
// It never needs the pod's netns: the host end's name is derived from the
// container ID and interface name, and deleting it deletes the pair.
func cmdDel(args *skel.CmdArgs) error {
	conf, cerr := loadConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	if err := invoke.DelegateDel(context.TODO(), conf.IPAM.Type, conf.IPAMStdin, nil); err != nil {
		return delegateError(conf.IPAM.Type, "DEL", err)
	}
	name := link.HostVethName(args.ContainerID, args.IfName)
	if _, err := link.DeleteHostVeth(name); err != nil {
		return cniError(cnicode.LinkSetup, fmt.Sprintf("cannot remove veth %s of %s", name, args.IfName), err)
	}
	return nil
}
