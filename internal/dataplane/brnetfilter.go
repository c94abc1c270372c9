package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Bridged pod traffic and netfilter.
//
// A pod that reaches a Service whose chosen backend sits on the same
// bridge sends its request through the gateway (routed: kube-proxy's DNAT
// sees it and rewrites the ClusterIP to the backend), but the backend's
// reply goes straight back to the client across cni0: switched, not
// routed. Unless the bridge hands its frames to iptables
// (net.bridge.bridge-nf-call-iptables=1, br_netfilter), conntrack never
// sees the reply and never rewrites its source back to the ClusterIP, so
// the client gets an answer from an address it never asked and drops it.
// The same holds for kube-router's network policy chains, which must see
// traffic between two pods of one node. k3s sets the sysctl on its nodes;
// on a plain kubelet node nobody may have. The agent owns cni0, so it
// sets it, for each family of the cluster, on every Apply (level
// triggered: whoever turns it off again is overridden at the next
// resync), and never turns it off (kube-proxy relies on it too). Since
// Linux 5.3 the setting is per network namespace.
//
// When br_netfilter is not loaded (/proc/sys/net/bridge is absent) or the
// agent may not write /proc/sys, the mesh itself still works: Apply only
// warns, and `wgmesh-agent doctor` reports BridgeNetfilterOff with the fix.

// BridgeNFSysctl is the bridge-netfilter sysctl (relative to /proc/sys)
// for one family.
func BridgeNFSysctl(v6 bool) string {
	if v6 {
		return "net/bridge/bridge-nf-call-ip6tables"
	}
	return "net/bridge/bridge-nf-call-iptables"
}

// ErrBridgeNetfilterMissing: the br_netfilter module is not loaded, so
// there is no sysctl to set.
var ErrBridgeNetfilterMissing = errors.New("br_netfilter is not loaded (no /proc/sys/net/bridge)")

// ensureBridgeNetfilter sets the bridge-netfilter sysctl to 1 for each
// family in clusters, under root (/proc/sys), in the calling thread's
// network namespace. It returns the number of sysctls it changed (0 when
// they were already 1).
func ensureBridgeNetfilter(root string, clusters []netip.Prefix) (int, error) {
	changed := 0
	var errs []error
	for _, v6 := range []bool{false, true} {
		if !hasFamily(clusters, v6) {
			continue
		}
		path := filepath.Join(root, BridgeNFSysctl(v6))
		cur, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			return changed, ErrBridgeNetfilterMissing
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

func hasFamily(ps []netip.Prefix, v6 bool) bool {
	for _, p := range ps {
		if p.Addr().Is6() == v6 {
			return true
		}
	}
	return false
}

// bridgeNetfilter runs ensureBridgeNetfilter for the cluster's families and
// returns the sysctls it changed. A failure does not fail Apply (pod to pod
// works without it); it is logged once per distinct reason, and doctor
// reports it.
func (d *Dataplane) bridgeNetfilter() int {
	n, err := ensureBridgeNetfilter("/proc/sys", d.cfg.ClusterCIDRs)
	if n > 0 {
		d.log.Info("sysctl set: bridged pod traffic now passes iptables (kube-proxy's DNAT for same-node backends, network policies)",
			"sysctl", "net.bridge.bridge-nf-call-iptables=1", "changed", n)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	reason := ""
	if err != nil {
		reason = err.Error()
	}
	if reason != "" && reason != d.bnfWarned {
		d.log.Warn("cannot make bridged pod traffic pass iptables: a pod cannot reach a Service whose backend is on its own node; see wgmesh-agent doctor (BridgeNetfilterOff)", "error", reason)
	}
	d.bnfWarned = reason
	return n
}
