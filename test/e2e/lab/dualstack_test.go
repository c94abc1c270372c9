package lab

import (
	"net/netip"
	"slices"
	"testing"
)

func TestDualStackSettings(t *testing.T) {
	v4, ds := Config{}, Config{DualStack: true}
	for _, c := range []struct{ got, want string }{
		{v4.ClusterCIDRs(), "10.42.0.0/16"},
		{ds.ClusterCIDRs(), "10.42.0.0/16,fd42::/56"},
		{v4.ServiceCIDRs(), "10.43.0.0/16"},
		{ds.ServiceCIDRs(), "10.43.0.0/16,fd43::/112"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if got := v4.nodeCIDRFlags(); !slices.Equal(got, []string{"--node-cidr-mask-size", "24"}) {
		t.Errorf("IPv4 kube-controller-manager flags %v", got)
	}
	if got := ds.nodeCIDRFlags(); !slices.Equal(got, []string{"--node-cidr-mask-size-ipv4", "24", "--node-cidr-mask-size-ipv6", "64"}) {
		t.Errorf("dual-stack kube-controller-manager flags %v", got)
	}
	for in, want := range map[string]string{"172.31.0.11": "fd31::11", "172.31.0.2": "fd31::2", "172.31.0.105": "fd31::105"} {
		got := underlayAddr6(netip.MustParseAddr(in))
		if got != netip.MustParseAddr(want) || !UnderlayPrefix6.Contains(got) {
			t.Errorf("underlayAddr6(%s) = %s, want %s", in, got, want)
		}
	}
}
