// Package faultpoint is a TEST HOOK, not a feature: it lets tests SIGKILL a
// plugin process at a named point of its work, to prove that whatever a
// killed ADD leaves behind is undone by DEL, a retried ADD or GC.
//
// A point does nothing unless the process was started with
// WGMESH_TEST_KILL_AT set to its name; no runtime sets that variable. The
// cost on the normal path is one string comparison per point. It owns
// nothing and touches nothing but its own process.
package faultpoint

import (
	"os"
	"syscall"
	"time"
)

// EnvVar names the point at which the process kills itself.
const EnvVar = "WGMESH_TEST_KILL_AT"

// The points, in the order an ADD passes them. Each sits between two
// changes to the system, where a kill leaves the most to clean up.
const (
	BridgeCreated    = "bridge-created"    // bridge made, not yet configured
	BridgeReady      = "bridge-ready"      // bridge up with gateways, no veth yet
	VethCreated      = "veth-created"      // pair made, no alias yet
	VethAliased      = "veth-aliased"      // alias set, not on the bridge yet
	VethAttached     = "veth-attached"     // on the bridge, hairpin not set yet
	VethReady        = "veth-ready"        // veth done, IPAM not asked yet
	IPAMReserved     = "ipam-reserved"     // wgmesh-ipam: address files written, no result printed
	AddressAssigned  = "address-assigned"  // wgmesh: address reserved, pod interface not configured
	PodConfigured    = "pod-configured"    // pod interface configured, result not printed
	BeforeResultSent = "before-result-out" // result complete, not yet written to stdout
)

// All lists every point, for tests that walk through them.
var All = []string{BridgeCreated, BridgeReady, VethCreated, VethAliased, VethAttached, VethReady, IPAMReserved, AddressAssigned, PodConfigured, BeforeResultSent}

var killAt = os.Getenv(EnvVar)

// Reached kills the process with SIGKILL if it was told to die at point.
// When the process leads its process group, or its parent does (the test
// started the plugin in a group of its own, and a delegated IPAM runs in
// its parent's), the whole group dies: the plugin and the IPAM together, as
// when the node loses power. Otherwise only this process dies.
func Reached(point string) {
	if killAt == "" || killAt != point {
		return
	}
	target := os.Getpid()
	if g := syscall.Getpgrp(); g == os.Getpid() || g == os.Getppid() {
		target = -g
	}
	_ = syscall.Kill(target, syscall.SIGKILL)
	for { // the signal is already pending; never run on past the point
		time.Sleep(time.Second)
	}
}
