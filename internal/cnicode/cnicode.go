// Package cnicode is the one list of the CNI error codes wgmesh defines. The
// CNI spec reserves 0-99; those are the Err* constants of
// github.com/containernetworking/cni/pkg/types, used directly. 100 and up
// are ours, shared by the wgmesh and wgmesh-ipam plugins, so one number means
// one thing whichever plugin reports it (docs/cni-plugin.md lists them all,
// with what a user sees and does).
package cnicode

const (
	// RangeExhausted (wgmesh-ipam): every address of a range set is in use.
	RangeExhausted uint = 100
	// SubnetEnvInvalid: subnet.env exists but cannot be read or parsed, or
	// names an unusable subnet.
	SubnetEnvInvalid uint = 101
	// StateFailure (wgmesh-ipam): the allocation directory cannot be
	// created, locked, read or written.
	StateFailure uint = 102
	// CheckFailed: CHECK found the pod's network (wgmesh) or its allocation
	// (wgmesh-ipam) differs from the result of its ADD or the current ranges.
	CheckFailed uint = 103
	// LinkSetup (wgmesh): the kernel refused a bridge, veth, address or route.
	LinkSetup uint = 110
	// IPAM (wgmesh): the IPAM plugin could not be run or gave an unusable
	// result. Errors the IPAM reports itself keep the IPAM's code.
	IPAM uint = 111
	// IfaceExists (wgmesh): the pod already has an interface named
	// CNI_IFNAME.
	IfaceExists uint = 112
)
