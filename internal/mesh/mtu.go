package mesh

// WireGuard encapsulation overhead: outer IP header (20 or 40) + UDP (8) +
// WireGuard header and tag (32).
const (
	OverheadIPv4 = 60
	OverheadIPv6 = 80
)

// PodMTU is the MTU for the WireGuard device, the bridge and every pod veth
// (design rule 5 in docs/dataplane.md): explicit when set (> 0), else the
// underlay MTU minus the WireGuard overhead of the underlay's family.
func PodMTU(explicit, underlayMTU int, ipv6Underlay bool) int {
	if explicit > 0 {
		return explicit
	}
	if ipv6Underlay {
		return underlayMTU - OverheadIPv6
	}
	return underlayMTU - OverheadIPv4
}
