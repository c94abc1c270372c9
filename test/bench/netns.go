package main

import (
	"fmt"
	"os"

	"github.com/wgmesh/wgmesh/internal/testns"
)

// prefix names every namespace wgmesh-bench creates: wgbench-<pid>-<role>.
// The pid lets sweep tell a leftover of a killed run from a live one.
const prefix = "wgbench-"

// devPrefix names WireGuard devices (and so their UAPI sockets): wgb<pid>x<i>.
const devPrefix = "wgb"

// netNS is a namespace of the harness, internal/testns.
type netNS = testns.Named

// newNetNS creates wgbench-<pid>-<role> with lo up; c removes it.
func newNetNS(c *testns.Cleanup, role string) (*netNS, error) {
	return testns.NewNamed(c, fmt.Sprintf("%s%d-%s", prefix, os.Getpid(), role))
}

// sweep removes the namespaces and sockets of earlier runs that were
// killed (whose pid is no longer alive).
func sweep() ([]string, error) { return testns.SweepDead(prefix, devPrefix) }

// devName is a WireGuard device name unique on the machine (UAPI sockets
// share one directory across namespaces), at most 15 bytes.
func devName(i int) string { return fmt.Sprintf("%s%dx%d", devPrefix, os.Getpid(), i) }
