package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/wgmesh/wgmesh/internal/cnicode"
	"github.com/wgmesh/wgmesh/internal/cniconf"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
)

func loadConf(stdin []byte) (*cniconf.Config, *types.Error) {
	c, err := cniconf.Parse(stdin)
	if err != nil {
		return nil, confError(err)
	}
	return c, nil
}

// readSubnetEnv reads the agent's subnet.env. notReadyCode is the code for
// "not written yet": 11 (try again) for ADD, 50 (not available) for STATUS.
func readSubnetEnv(path string, notReadyCode uint) (subnetenv.Env, *types.Error) {
	env, err := subnetenv.Read(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return env, cniError(notReadyCode, fmt.Sprintf("wgmesh agent not ready: %s does not exist yet", path), err)
	case err != nil:
		code := uint(cnicode.SubnetEnvInvalid)
		if notReadyCode == types.ErrPluginNotAvailable {
			code = types.ErrPluginNotAvailable
		}
		// err names the file and line already.
		return env, cniError(code, fmt.Sprintf("invalid subnet.env (written by wgmesh-agent): %v", err), nil)
	}
	return env, nil
}

// gateways are the bridge addresses for the node subnets: the first host
// address of each, with the subnet's prefix length (10.42.1.1/24). The
// IPAM never hands these out.
func gateways(env subnetenv.Env) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range env.Subnets() {
		out = append(out, netip.PrefixFrom(s.Addr().Next(), s.Bits()))
	}
	return out
}
