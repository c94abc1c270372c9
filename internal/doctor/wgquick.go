package doctor

import "fmt"

// endpointOnWireGuardFindings: a node whose address (its InternalIP, the
// mesh's endpoint) sits on another WireGuard device, typically wg-quick's
// wg0 of the hand-made mesh wgmesh replaces. wgmesh's tunnel then runs
// inside that one (it works, with less MTU), and so does k3s's own
// traffic: the migration step "wg-quick down wg0" cuts this node off from
// every peer and from the cluster. The fix is an order of steps.
func endpointOnWireGuardFindings(in Input) []Finding {
	wg := in.Kernel.UnderlayWireGuard
	if wg == nil {
		return nil
	}
	peers := "its peers"
	if wg.Peers >= 0 {
		peers = fmt.Sprintf("its %d peer(s)", wg.Peers)
	}
	addr := "this node's address"
	if in.Kernel.NodeAddr.IsValid() {
		addr = fmt.Sprintf("this node's address %s", in.Kernel.NodeAddr)
	}
	return []Finding{{
		ID:       "EndpointOnWireGuard",
		Severity: SeverityWarning,
		Message: fmt.Sprintf("%s (its InternalIP, which the mesh and k3s use) is on %s, a %s WireGuard device that is not %s: "+
			"wgmesh's tunnel runs inside it, through %s; `wg-quick down %s` now cuts this node off from every peer and from the cluster",
			addr, wg.Name, wg.Kind, in.Device, peers, wg.Name),
		Fix: fmt.Sprintf("move off %[1]s before taking it down, on every node: (1) give k3s the underlay address (config.yaml node-ip: <underlay IP>; "+
			"servers also advertise-address, agents a server URL outside %[1]s) and restart k3s there, or for the mesh alone "+
			"kubectl annotate node <node> wgmesh.io/force-endpoint=<underlay IP>:51820; (2) wait until `wgmesh-agent status` shows every peer "+
			"at its underlay endpoint with a fresh handshake and doctor no longer reports this; (3) only then wg-quick down %[1]s && systemctl disable wg-quick@%[1]s "+
			"(docs/troubleshooting.md, \"The node's address is on wg-quick's wg0\")", wg.Name),
	}}
}
