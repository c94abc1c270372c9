package doctor

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzFilterEvaluation: any `iptables -S` text parses, and evaluating a
// pod's probe through it ends (loops, deep jumps, odd words) with a
// verdict that names what decided it.
func FuzzFilterEvaluation(f *testing.F) {
	f.Add(ufwDefault)
	f.Add(firewalldIptables)
	f.Add(kubeRouter + "\n" + ufwDefault)
	f.Add("-P INPUT DROP\n-N A\n-A INPUT -j A\n-A A -j A\n-A A -j INPUT")
	f.Add("-A INPUT ! -s 10.0.0.0/8 -m mark --mark 0x1/0x1 -m multiport --dports 1:2,x -j MARK --set-xmark 0x1/0xffffffff")
	f.Fuzz(func(t *testing.T, s string) {
		filter := ParseFilter(strings.Split(s, "\n"))
		v := filter.evalInput(probe{src: netip.MustParseAddr("10.42.3.2"), dst: netip.MustParseAddr("192.0.2.10"),
			iif: "cni0", proto: "tcp", dport: 10250, ctstates: []string{"NEW"}})
		if v.by == "" {
			t.Fatalf("verdict without a reason for %q", s)
		}
	})
}
