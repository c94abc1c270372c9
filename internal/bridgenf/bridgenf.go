// Package bridgenf makes bridged pod traffic pass iptables: it sets
// net.bridge.bridge-nf-call-iptables (and -ip6tables) to 1, per family, in
// the calling thread's network namespace (the setting is per namespace
// since Linux 5.3). It only ever turns the setting on.
//
// Why: a pod that reaches a Service whose chosen backend sits on the same
// bridge sends its request through the gateway (routed: kube-proxy's DNAT
// rewrites the ClusterIP to the backend), but the backend's reply goes
// straight back to the client across the bridge: switched, not routed.
// Unless the bridge hands its frames to iptables, conntrack never sees the
// reply and never rewrites its source back to the ClusterIP, so the client
// gets an answer from an address it never asked and drops it. Network
// policy chains (k3s's kube-router) likewise miss traffic between two pods
// of one node. k3s sets it on its nodes; on a plain kubelet node nobody may
// have. wgmesh owns cni0, so both its CNI plugin (on every ADD, running as
// root on the host) and its agent (on every reconcile) set it; when the
// br_netfilter module is not loaded, or /proc/sys is read-only, doctor
// reports BridgeNetfilterOff with the fix.
package bridgenf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Sysctl is the bridge-netfilter sysctl (relative to /proc/sys) of one
// family.
func Sysctl(v6 bool) string {
	if v6 {
		return "net/bridge/bridge-nf-call-ip6tables"
	}
	return "net/bridge/bridge-nf-call-iptables"
}

// ErrMissing: the br_netfilter module is not loaded, so there is no sysctl
// to set.
var ErrMissing = errors.New("br_netfilter is not loaded (no /proc/sys/net/bridge)")

// Ensure sets the sysctl to 1 for IPv4 (if v4) and IPv6 (if v6) under root
// (normally /proc/sys). It returns how many it changed (0 when they were
// already 1).
func Ensure(root string, v4, v6 bool) (int, error) {
	changed := 0
	var errs []error
	for _, fam := range []struct{ on, v6 bool }{{v4, false}, {v6, true}} {
		if !fam.on {
			continue
		}
		path := filepath.Join(root, Sysctl(fam.v6))
		cur, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			return changed, ErrMissing
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", path, err))
			continue
		}
		if strings.TrimSpace(string(cur)) == "1" {
			continue
		}
		if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("set %s=1: %w", path, err))
			continue
		}
		changed++
	}
	return changed, errors.Join(errs...)
}
