// Command wgmesh is the wgmesh CNI plugin: it connects a pod to the node's
// bridge (cni0) with a veth pair and gives it addresses from wgmesh-ipam.
// Traffic to other nodes leaves through the WireGuard mesh the agent keeps.
//
// A CNI runtime runs it (ADD, DEL, CHECK, GC, STATUS); it is not for people.
// Each command lives in its own file; kernel work is in internal/link.
package main

import (
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
)

func init() {
	// Namespace switches are per OS thread: keep main on one thread, so
	// nothing ever runs on a thread left in a pod's network namespace.
	runtime.LockOSThread()
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	}, version.All, "wgmesh: pod bridge + veth for the wgmesh WireGuard mesh (CNI spec 0.3.0-1.1.0)")
}
