package main

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/wgmesh/wgmesh/internal/cniconf"
)

// The error codes a user can see. 0-99 are the CNI spec's; 100 and up are
// ours. Every error leaves the plugin through one of these, in the CNI
// error format ({"code", "msg", "details"}), never as a bare 999.
const (
	// CodeInvalidEnv: CNI_NETNS names no network namespace (the sandbox
	// vanished) or CNI_IFNAME is not a valid interface name.
	CodeInvalidEnv = types.ErrInvalidEnvironmentVariables // 4
	// CodeDecode: the netconf is not JSON of the right shape.
	CodeDecode = types.ErrDecodingFailure // 6
	// CodeInvalidConf: the netconf decodes but a field is invalid.
	CodeInvalidConf = types.ErrInvalidNetworkConfig // 7
	// CodeTryAgain: subnet.env does not exist yet: the agent has not
	// finished starting. The runtime retries the ADD.
	CodeTryAgain = types.ErrTryAgainLater // 11
	// CodeNotAvailable: STATUS says the node cannot take pods yet.
	CodeNotAvailable = types.ErrPluginNotAvailable // 50

	// Our own codes share one numbering with wgmesh-ipam's (100 there is
	// "address range exhausted", 102 "allocation state failure"), so one
	// number means one thing whichever plugin reports it.

	// CodeSubnetEnvInvalid: subnet.env exists but cannot be parsed.
	CodeSubnetEnvInvalid = 101
	// CodeCheckFailed: CHECK found the pod's network differs from the
	// result of its ADD.
	CodeCheckFailed = 103
	// CodeLinkSetup: the kernel refused a bridge, veth, address or route.
	CodeLinkSetup = 110
	// CodeIPAM: the IPAM plugin could not be run or gave an unusable
	// result. (Errors the IPAM reports itself keep the IPAM's code.)
	CodeIPAM = 111
	// CodeIfaceExists: the pod already has an interface named CNI_IFNAME.
	CodeIfaceExists = 112
)

// cniError builds the error the runtime sees: msg says what failed, details
// carry the underlying cause.
func cniError(code uint, msg string, cause error) *types.Error {
	details := ""
	if cause != nil {
		details = cause.Error()
	}
	return &types.Error{Code: code, Msg: msg, Details: details}
}

// confError classifies a netconf parse error as 6 (cannot decode) or 7.
func confError(err error) *types.Error {
	if errors.Is(err, cniconf.ErrDecode) {
		return cniError(CodeDecode, "cannot decode the wgmesh netconf", err)
	}
	return cniError(CodeInvalidConf, fmt.Sprintf("invalid wgmesh netconf: %v", err), nil)
}

// delegateError keeps the code of an error the IPAM plugin reported (an
// exhausted range, its own invalid config) and labels it with the IPAM's
// name; anything else (binary not found, killed) becomes CodeIPAM.
func delegateError(ipamType, verb string, err error) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		return &types.Error{Code: te.Code, Msg: fmt.Sprintf("ipam %s %s: %s", ipamType, verb, te.Msg), Details: te.Details}
	}
	return cniError(CodeIPAM, fmt.Sprintf("ipam %s %s failed", ipamType, verb), err)
}
