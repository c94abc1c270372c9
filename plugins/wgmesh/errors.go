package main

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/wgmesh/wgmesh/internal/cnicode"
	"github.com/wgmesh/wgmesh/internal/cniconf"
)

// Every error leaves the plugin with one of the CNI spec's codes (types.Err*)
// or one of ours (package cnicode), in the CNI error format
// ({"code", "msg", "details"}), never as a bare 999. Spec codes it uses:
// ErrInvalidEnvironmentVariables (4: CNI_NETNS names no network namespace,
// or CNI_IFNAME is not a valid interface name), ErrDecodingFailure (6),
// ErrInvalidNetworkConfig (7), ErrTryAgainLater (11: subnet.env does not
// exist yet, the agent has not finished starting; the runtime retries) and
// ErrPluginNotAvailable (50: STATUS says the node cannot take pods yet).

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
		return cniError(types.ErrDecodingFailure, "cannot decode the wgmesh netconf", err)
	}
	return cniError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid wgmesh netconf: %v", err), nil)
}

// delegateError keeps the code of an error the IPAM plugin reported (an
// exhausted range, its own invalid config) and labels it with the IPAM's
// name; anything else (binary not found, killed) becomes cnicode.IPAM.
func delegateError(ipamType, verb string, err error) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		return &types.Error{Code: te.Code, Msg: fmt.Sprintf("ipam %s %s: %s", ipamType, verb, te.Msg), Details: te.Details}
	}
	return cniError(cnicode.IPAM, fmt.Sprintf("ipam %s %s failed", ipamType, verb), err)
}
