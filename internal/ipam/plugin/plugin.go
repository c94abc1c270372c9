// Package plugin is the CNI boundary of wgmesh-ipam: one function per CNI
// command (ADD, DEL, CHECK, GC, STATUS) that parses the configuration
// (package ipam), finds the ranges (explicit, or the node subnet(s) in
// subnet.env), lets package pool do the allocation, and turns every failure
// into a CNI error with the spec's code, once.
//
// It touches only subnet.env (read) and the allocation directory (through
// package pool); never a network namespace or a link.
package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"

	"github.com/wgmesh/wgmesh/internal/cnicode"
	"github.com/wgmesh/wgmesh/internal/faultpoint"
	"github.com/wgmesh/wgmesh/internal/ipam"
	"github.com/wgmesh/wgmesh/internal/ipam/pool"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
)

// Plugin implements the CNI commands. The zero value logs nowhere.
type Plugin struct {
	Log *slog.Logger
}

func (p *Plugin) log() *slog.Logger {
	if p.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Log
}

// Add allocates one address per range set (or returns the ones the
// attachment already holds) and prints the result.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	cfg, sets, err := parseWithRanges(args)
	if err != nil {
		return err
	}
	pl, err := pool.Open(cfg.DataDir, cfg.Network)
	if err != nil {
		return types.NewError(cnicode.StateFailure, err.Error(), "")
	}
	defer pl.Close()

	att := attachment(args)
	allocs, err := pl.Allocate(att, sets)
	if errors.Is(err, pool.ErrExhausted) {
		return types.NewError(cnicode.RangeExhausted, err.Error(), "")
	} else if err != nil {
		return types.NewError(cnicode.StateFailure, err.Error(), "")
	}

	faultpoint.Reached(faultpoint.IPAMReserved)
	res, err := result(cfg, allocs, sets).GetAsVersion(cfg.CNIVersion)
	if err != nil {
		// Nothing was printed: the runtime sees a failure, so hold nothing.
		releaseErr := pl.Release(att)
		return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("convert result to cniVersion %q: %v", cfg.CNIVersion, err), errString(releaseErr))
	}
	if err := res.Print(); err != nil {
		releaseErr := pl.Release(att)
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("print result: %v", err), errString(releaseErr))
	}
	for _, a := range allocs {
		p.log().Info("address allocated", "network", cfg.Network, "containerID", att.ContainerID, "ifname", att.IfName, "address", a.Address, "gateway", a.Gateway)
	}
	return nil
}

// Del releases the attachment's addresses. It needs neither subnet.env nor
// an existing allocation directory: DEL must succeed whatever is left.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	cfg, err := parseForRelease(args)
	if err != nil {
		return err
	}
	pl, err := pool.OpenExisting(cfg.DataDir, cfg.Network)
	if err != nil {
		return types.NewError(cnicode.StateFailure, err.Error(), "")
	}
	if pl == nil {
		return nil // nothing was ever allocated in this network
	}
	defer pl.Close()
	att := attachment(args)
	if err := pl.Release(att); err != nil {
		return types.NewError(cnicode.StateFailure, err.Error(), "")
	}
	p.log().Info("addresses released", "network", cfg.Network, "containerID", att.ContainerID, "ifname", att.IfName)
	return nil
}

// Check verifies that the attachment holds exactly the addresses of
// prevResult, and that they are still inside the configured ranges.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	cfg, sets, err := parseWithRanges(args)
	if err != nil {
		return err
	}
	att := attachment(args)
	pl, err := pool.OpenExisting(cfg.DataDir, cfg.Network)
	if err != nil {
		return types.NewError(cnicode.StateFailure, err.Error(), "")
	}
	if pl == nil {
		return types.NewError(cnicode.CheckFailed, fmt.Sprintf("no address allocated for container %s interface %s: %s does not exist", att.ContainerID, att.IfName, cfg.DataDir+"/"+cfg.Network), "")
	}
	defer pl.Close()
	held, err := pl.Lookup(att)
	if err != nil {
		return types.NewError(cnicode.StateFailure, err.Error(), "")
	}
	if len(held) == 0 {
		return types.NewError(cnicode.CheckFailed, fmt.Sprintf("no address allocated for container %s interface %s in %s", att.ContainerID, att.IfName, pl.Dir()), "")
	}
	for _, a := range held {
		if !inAny(sets, a) {
			return types.NewError(cnicode.CheckFailed, fmt.Sprintf("address %s of container %s interface %s is outside the current ranges (did the node subnet change?)", a, att.ContainerID, att.IfName), "")
		}
	}
	prev, err := prevAddrs(args.StdinData)
	if err != nil {
		return err
	}
	if prev == nil {
		return nil // no prevResult to compare against: existence is all we can check
	}
	slices.SortFunc(held, netip.Addr.Compare)
	if !slices.Equal(held, prev) {
		return types.NewError(cnicode.CheckFailed, fmt.Sprintf("container %s interface %s holds %v, prevResult says %v", att.ContainerID, att.IfName, held, prev), "")
	}
	return nil
}

// GC releases every allocation whose attachment is not in
// cni.dev/valid-attachments, and every orphan left by a killed process.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	cfg, err := parseForRelease(args)
	if err != nil {
		return err
	}
	if !cfg.HasValidAttachments {
		// Releasing everything because a caller forgot the list would take
		// the address of every running pod.
		return types.NewError(types.ErrInvalidNetworkConfig, "GC needs cni.dev/valid-attachments (an empty list releases every address); refusing to guess", "")
	}
	pl, err := pool.OpenExisting(cfg.DataDir, cfg.Network)
	if err != nil {
		return types.NewError(cnicode.StateFailure, err.Error(), "")
	}
	if pl == nil {
		return nil
	}
	defer pl.Close()
	freed, err := pl.GC(cfg.ValidAttachments)
	for _, a := range freed {
		p.log().Info("stale address released", "network", cfg.Network, "address", a)
	}
	if err != nil {
		return types.NewError(cnicode.StateFailure, err.Error(), "")
	}
	return nil
}

// Status reports whether ADD can work now: with explicit ranges always,
// otherwise once the agent has written a valid subnet.env.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	cfg, err := parse(args)
	if err != nil {
		return err
	}
	if cfg.Ranges != nil {
		return nil
	}
	if _, err := subnetenv.Read(cfg.SubnetFile); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, subnetEnvMessage(cfg.SubnetFile, err), "")
	}
	return nil
}

func parse(args *skel.CmdArgs) (ipam.Config, error) {
	return cniConfig(ipam.ParseConfig(args.StdinData))
}

// parseWithRanges is parse, then the ranges to allocate from (ADD, CHECK).
func parseWithRanges(args *skel.CmdArgs) (ipam.Config, []allocator.RangeSet, error) {
	cfg, err := parse(args)
	if err != nil {
		return cfg, nil, err
	}
	sets, err := rangeSets(cfg)
	return cfg, sets, err
}

// parseForRelease is parse for DEL and GC: only what finds the allocations
// (see ipam.ParseReleaseConfig).
func parseForRelease(args *skel.CmdArgs) (ipam.Config, error) {
	return cniConfig(ipam.ParseReleaseConfig(args.StdinData))
}

// cniConfig turns a parse error into the CNI error with the spec's code.
func cniConfig(cfg ipam.Config, err error) (ipam.Config, error) {
	switch {
	case errors.Is(err, ipam.ErrMalformed):
		return cfg, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	case err != nil:
		return cfg, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	return cfg, nil
}

// rangeSets are the explicit ranges, or the node subnet(s) of subnet.env.
func rangeSets(cfg ipam.Config) ([]allocator.RangeSet, error) {
	if cfg.Ranges != nil {
		return cfg.Ranges, nil
	}
	env, err := subnetenv.Read(cfg.SubnetFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, types.NewError(types.ErrTryAgainLater, subnetEnvMessage(cfg.SubnetFile, err), "")
	} else if err != nil {
		return nil, types.NewError(cnicode.SubnetEnvInvalid, subnetEnvMessage(cfg.SubnetFile, err), "")
	}
	return ipam.RangesFromEnv(env), nil
}

func subnetEnvMessage(path string, err error) string {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Sprintf("wgmesh agent not ready: it has not written %s yet", path)
	}
	// err names the file already (os.ReadFile and subnetenv.Read say it).
	return fmt.Sprintf("invalid node subnet file (written by the wgmesh agent): %v", err)
}

func attachment(args *skel.CmdArgs) ipam.Attachment {
	return ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
}

func inAny(sets []allocator.RangeSet, a netip.Addr) bool {
	for _, s := range sets {
		if s.Contains(a.AsSlice()) {
			return true
		}
	}
	return false
}

// result is the CNI result for allocs, in the library's net types.
func result(cfg ipam.Config, allocs []pool.Allocation, sets []allocator.RangeSet) *current.Result {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	for _, a := range allocs {
		res.IPs = append(res.IPs, &current.IPConfig{
			Address: net.IPNet{IP: net.IP(a.Address.Addr().AsSlice()), Mask: net.CIDRMask(a.Address.Bits(), a.Address.Addr().BitLen())},
			Gateway: net.IP(a.Gateway.AsSlice()),
		})
	}
	res.Routes = cfg.ResultRoutes(sets)
	return res
}

// prevAddrs returns the sorted addresses of the prevResult in conf, or nil
// when there is none.
func prevAddrs(conf []byte) ([]netip.Addr, error) {
	var nc types.PluginConf
	if err := json.Unmarshal(conf, &nc); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode prevResult: %v", err), "")
	}
	if nc.RawPrevResult == nil {
		return nil, nil
	}
	if err := version.ParsePrevResult(&nc); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	prev, err := current.NewResultFromResult(nc.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("convert prevResult: %v", err), "")
	}
	out := []netip.Addr{}
	for _, ipc := range prev.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return "releasing the allocation also failed: " + err.Error()
}
