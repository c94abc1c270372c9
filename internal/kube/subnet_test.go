package kube

import (
	"net/netip"
	"testing"
)

func TestSubnetLeaseNameRoundTrip(t *testing.T) {
	for _, tc := range []struct{ prefix, name string }{
		{"10.42.3.0/24", "wgmesh-subnet-10-42-3-0-24"},
		{"10.42.0.0/16", "wgmesh-subnet-10-42-0-0-16"},
		{"fd00:42::/64", "wgmesh-subnet-fd00-0042-0000-0000-0000-0000-0000-0000-64"},
	} {
		p := netip.MustParsePrefix(tc.prefix)
		if got := SubnetLeaseName(p); got != tc.name {
			t.Errorf("SubnetLeaseName(%s) = %s, want %s", p, got, tc.name)
		}
		back, ok := ParseSubnetLeaseName(tc.name)
		if !ok || back != p {
			t.Errorf("ParseSubnetLeaseName(%s) = %s, %v", tc.name, back, ok)
		}
	}
}

func TestParseSubnetLeaseNameRejectsNonCanonical(t *testing.T) {
	for _, name := range []string{
		"wgmesh-subnet-10-42-3-1-24",           // host bits
		"wgmesh-subnet-010-42-3-0-24",          // leading zero
		"wgmesh-subnet-10-42-3-0-33",           // bad length
		"wgmesh-subnet-10-42-3-24",             // too few parts
		"other-10-42-3-0-24",                   // not ours
		"wgmesh-subnet-fd00-42-0-0-0-0-0-0-64", // IPv6 not expanded
	} {
		if p, ok := ParseSubnetLeaseName(name); ok {
			t.Errorf("ParseSubnetLeaseName(%q) = %s, want rejection", name, p)
		}
	}
}

func TestSubnetsEnumeratesInOrder(t *testing.T) {
	var got []string
	err := Subnets(netip.MustParsePrefix("10.42.0.0/22"), 24, func(p netip.Prefix) bool {
		got = append(got, p.String())
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24", "10.42.3.0/24"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	// The end of the address space stops cleanly.
	var last []string
	Subnets(netip.MustParsePrefix("255.255.255.0/24"), 25, func(p netip.Prefix) bool { last = append(last, p.String()); return true })
	if len(last) != 2 || last[1] != "255.255.255.128/25" {
		t.Errorf("end of space: %v", last)
	}
	var six []string
	Subnets(netip.MustParsePrefix("fd00::/63"), 64, func(p netip.Prefix) bool { six = append(six, p.String()); return true })
	if len(six) != 2 || six[1] != "fd00:0:0:1::/64" {
		t.Errorf("ipv6: %v", six)
	}
	if err := Subnets(netip.MustParsePrefix("10.42.0.0/16"), 8, func(netip.Prefix) bool { return true }); err == nil {
		t.Error("a node subnet larger than the cluster CIDR was accepted")
	}
}

func FuzzParseSubnetLeaseName(f *testing.F) {
	f.Add("wgmesh-subnet-10-42-3-0-24")
	f.Add("wgmesh-subnet-fd00-0042-0000-0000-0000-0000-0000-0000-64")
	f.Fuzz(func(t *testing.T, name string) {
		p, ok := ParseSubnetLeaseName(name)
		if !ok {
			return
		}
		if SubnetLeaseName(p) != name {
			t.Fatalf("%q parsed to %s, which names %q", name, p, SubnetLeaseName(p))
		}
	})
}
