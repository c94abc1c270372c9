//go:build tools

// Package tools pins the reference CNI plugins that the conflist chains after
// wgmesh (portmap, bandwidth) and that tests and benchmarks compare against
// (bridge, host-local, loopback), so `make ref-plugins` builds them at the
// version go.mod names.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/bandwidth"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
