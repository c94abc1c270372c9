package netconv

import (
	"net"
	"net/netip"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, s := range []string{"10.42.1.0/24", "10.42.1.1/24", "0.0.0.0/0", "fd00:42::/64", "fd00:42::1/128", "::/0"} {
		p := netip.MustParsePrefix(s)
		n := IPNet(p)
		if n.String() != s {
			t.Errorf("IPNet(%s) = %s", s, n)
		}
		if back, ok := Prefix(*n); !ok || back != p.Masked() {
			t.Errorf("Prefix(IPNet(%s)) = %s %v, want %s", s, back, ok, p.Masked())
		}
	}
}

func TestPrefixOfSixteenByteIPv4(t *testing.T) {
	// net.ParseIP gives 16 bytes for IPv4; a 32-bit mask keeps it IPv4.
	n := net.IPNet{IP: net.ParseIP("10.42.1.7"), Mask: net.CIDRMask(24, 32)}
	if p, ok := Prefix(n); !ok || p != netip.MustParsePrefix("10.42.1.0/24") {
		t.Errorf("got %s %v", p, ok)
	}
	n.Mask = net.CIDRMask(120, 128)
	if p, ok := Prefix(n); !ok || p != netip.MustParsePrefix("10.42.1.0/24") {
		t.Errorf("16-byte mask: got %s %v", p, ok)
	}
	if _, ok := Prefix(net.IPNet{}); ok {
		t.Error("empty IPNet converted")
	}
}

func TestAddrUnmaps(t *testing.T) {
	if a := Addr(net.ParseIP("10.0.0.1")); a != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("got %s", a)
	}
	if a := Addr(nil); a.IsValid() {
		t.Errorf("nil IP gave %s", a)
	}
}
