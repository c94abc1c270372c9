package subnetenv

import (
	"fmt"
	"net/netip"
)

// unusable are the address blocks a pod subnet must not touch: pods would
// get addresses the kernel treats as special (never routed, never
// forwarded, or not unicast at all).
var unusable = []struct {
	block netip.Prefix
	what  string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "all-zero (\"this network\", 0.0.0.0/8)"},
	{netip.MustParsePrefix("::/128"), "all-zero (the unspecified address ::)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback (127.0.0.0/8)"},
	{netip.MustParsePrefix("::1/128"), "loopback (::1)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (169.254.0.0/16)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local (fe80::/10)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast (224.0.0.0/4)"},
	{netip.MustParsePrefix("ff00::/8"), "multicast (ff00::/8)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved or broadcast (240.0.0.0/4)"},
}

// CheckPodPrefix tells whether p can hold pod addresses: a unicast range
// that overlaps none of the all-zero, loopback, link-local, multicast or
// reserved blocks. The error says which block p touches.
func CheckPodPrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("%s is not a valid prefix", p)
	}
	if p.Addr().Is4In6() {
		return fmt.Errorf("%s is an IPv4-mapped IPv6 prefix: use the IPv4 prefix", p)
	}
	for _, u := range unusable {
		if p.Overlaps(u.block) {
			return fmt.Errorf("%s is not a unicast range usable for pods: it overlaps %s", p, u.what)
		}
	}
	return nil
}
