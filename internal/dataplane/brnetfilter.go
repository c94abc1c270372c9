package dataplane

import (
	"net/netip"

	"github.com/wgmesh/wgmesh/internal/bridgenf"
)

// bridgeNetfilter makes bridged pod traffic pass iptables (see package
// bridgenf for why) for the cluster's families, on every Apply: whoever
// turns it off is overridden at the next resync. It never turns it off.
// It returns the sysctls it changed. A failure does not fail Apply, since
// pod to pod works without it: br_netfilter not loaded (doctor reports
// BridgeNetfilterOff), or /proc/sys read-only, as it is in the DaemonSet's
// unprivileged agent container, where the CNI plugin (run by the runtime
// as root on the host, at every pod start) sets it instead. It is logged
// once per distinct reason.
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
		d.log.Warn("cannot make bridged pod traffic pass iptables (the CNI plugin tries again at every pod start): until it does, a pod cannot reach a Service whose backend is on its own node; see wgmesh-agent doctor (BridgeNetfilterOff)", "error", reason)
	}
	d.bnfWarned = reason
	return n
}

// ensureBridgeNetfilter is bridgenf.Ensure for the families of clusters.
func ensureBridgeNetfilter(root string, clusters []netip.Prefix) (int, error) {
	v4, v6 := false, false
	for _, c := range clusters {
		v4 = v4 || c.Addr().Is4()
		v6 = v6 || c.Addr().Is6()
	}
	return bridgenf.Ensure(root, v4, v6)
}
