// Command wgmesh-ipam is the wgmesh IPAM plugin: it hands out pod addresses
// from the node subnet(s) in /run/wgmesh/subnet.env (or explicit ranges).
// A CNI runtime or the wgmesh plugin runs it; it is not meant for people.
//
// main only wires: the commands live in internal/ipam/plugin.
package main

import (
	"log/slog"
	"os"
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/wgmesh/wgmesh/internal/ipam/plugin"
)

func init() {
	// As every reference plugin: keep main on one OS thread, so nothing the
	// process does can ever run on a thread in another network namespace.
	runtime.LockOSThread()
}

func main() {
	// stdout carries the CNI result; logs go to stderr, which runtimes keep.
	p := &plugin.Plugin{Log: slog.New(slog.NewTextHandler(os.Stderr, nil)).With("plugin", "wgmesh-ipam")}
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    p.Add,
		Del:    p.Del,
		Check:  p.Check,
		GC:     p.GC,
		Status: p.Status,
	}, version.All, "wgmesh-ipam: pod addresses from the wgmesh node subnet (CNI spec 0.1.0-1.1.0)")
}
