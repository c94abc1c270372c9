package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/wgmesh/wgmesh/internal/cnicode"
	"github.com/wgmesh/wgmesh/internal/link"
)

// cmdGC (CNI 1.1) hands the list of valid attachments to the IPAM, which
// releases every address held by an attachment not on it, then deletes the
// host veths this network made for attachments not on it (normally already
// gone with their pod's netns).
func cmdGC(args *skel.CmdArgs) error {
	conf, cerr := loadConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	valid, err := validAttachments(args.StdinData)
	if err != nil {
		return cniError(types.ErrDecodingFailure, "cannot decode cni.dev/valid-attachments", err)
	}
	if err := invoke.DelegateGC(context.TODO(), conf.IPAM.Type, conf.IPAMStdin, nil); err != nil {
		return delegateError(conf.IPAM.Type, "GC", err)
	}
	if valid == nil {
		// No list at all is not "nothing is valid": do not guess.
		fmt.Fprintf(os.Stderr, "wgmesh: GC without cni.dev/valid-attachments: no veth removed\n")
		return nil
	}
	owned, err := link.OwnedVeths(conf.Name)
	if err != nil {
		return cniError(cnicode.LinkSetup, "cannot list veths for GC", err)
	}
	// A veth is matched to its attachment by its name, which is derived from
	// the attachment: that works for half-made veths (no alias) and for
	// aliases whose container ID was shortened.
	keep := make(map[string]bool, len(valid))
	for a := range valid {
		keep[link.HostVethName(a.containerID, a.ifName)] = true
	}
	for _, v := range owned {
		if keep[v.Name] {
			continue
		}
		if _, err := link.DeleteHostVeth(v.Name); err != nil {
			return cniError(cnicode.LinkSetup, fmt.Sprintf("cannot remove stale veth %s", v.Name), err)
		}
		if v.HalfMade() {
			fmt.Fprintf(os.Stderr, "wgmesh: GC removed veth %s left without its alias by a killed ADD\n", v.Name)
			continue
		}
		fmt.Fprintf(os.Stderr, "wgmesh: GC removed veth %s of %s/%s\n", v.Name, v.Owner.ContainerID, v.Owner.IfName)
	}
	return nil
}

type attachment struct{ containerID, ifName string }

// validAttachments reads cni.dev/valid-attachments; nil when it is absent
// (an empty list gives an empty, non-nil set).
func validAttachments(stdin []byte) (map[attachment]bool, error) {
	var c struct {
		Valid *[]types.GCAttachment `json:"cni.dev/valid-attachments"`
	}
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, err
	}
	if c.Valid == nil {
		return nil, nil
	}
	out := make(map[attachment]bool, len(*c.Valid))
	for _, a := range *c.Valid {
		out[attachment{a.ContainerID, a.IfName}] = true
	}
	return out, nil
}
