package firewall

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func render(rules map[string][]Rule) string {
	var b strings.Builder
	for _, chain := range []string{ChainForward, ChainPostrouting} {
		for _, r := range rules[chain] {
			b.WriteString(r.String() + "\n")
		}
	}
	return b.String()
}

func TestDesiredRules(t *testing.T) {
	dual := Rules{ClusterCIDRs: pfx("10.42.0.0/16", "fd42::/56"), PodSubnets: pfx("10.42.3.0/24", "fd42:0:0:3::/64"), Masquerade: true}
	for _, tt := range []struct {
		name string
		r    Rules
		v6   bool
		want string
	}{
		{"ipv4 with masquerade", dual, false, `-A WGMESH-FORWARD -s 10.42.0.0/16 -m comment --comment "wgmesh: forward from pods" -j ACCEPT
-A WGMESH-FORWARD -d 10.42.0.0/16 -m comment --comment "wgmesh: forward to pods" -j ACCEPT
-A WGMESH-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "wgmesh: kube-proxy masquerades it" -j RETURN
-A WGMESH-POSTRTG -s 10.42.0.0/16 -d 10.42.0.0/16 -m comment --comment "wgmesh: pod to pod" -j RETURN
-A WGMESH-POSTRTG ! -s 10.42.0.0/16 -d 10.42.3.0/24 -m comment --comment "wgmesh: to our pods from outside" -j RETURN
-A WGMESH-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "wgmesh: pods leaving the cluster" -j MASQUERADE --random-fully
`},
		{"ipv6 with masquerade", dual, true, `-A WGMESH-FORWARD -s fd42::/56 -m comment --comment "wgmesh: forward from pods" -j ACCEPT
-A WGMESH-FORWARD -d fd42::/56 -m comment --comment "wgmesh: forward to pods" -j ACCEPT
-A WGMESH-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "wgmesh: kube-proxy masquerades it" -j RETURN
-A WGMESH-POSTRTG -s fd42::/56 -d fd42::/56 -m comment --comment "wgmesh: pod to pod" -j RETURN
-A WGMESH-POSTRTG ! -s fd42::/56 -d fd42:0:0:3::/64 -m comment --comment "wgmesh: to our pods from outside" -j RETURN
-A WGMESH-POSTRTG -s fd42::/56 ! -d ff00::/8 -m comment --comment "wgmesh: pods leaving the cluster" -j MASQUERADE --random-fully
`},
		{"no masquerade: forward only", Rules{ClusterCIDRs: pfx("10.42.0.0/16"), PodSubnets: pfx("10.42.3.0/24")}, false, `-A WGMESH-FORWARD -s 10.42.0.0/16 -m comment --comment "wgmesh: forward from pods" -j ACCEPT
-A WGMESH-FORWARD -d 10.42.0.0/16 -m comment --comment "wgmesh: forward to pods" -j ACCEPT
`},
		{"no cluster CIDR: nothing", Rules{PodSubnets: pfx("10.42.3.0/24"), Masquerade: true}, false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := render(DesiredRules(tt.r, tt.v6)); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func sh(t *testing.T, n ns.NetNS, args ...string) string {
	t.Helper()
	var out []byte
	var err error
	n.Do(func(ns.NetNS) error { out, err = exec.Command(args[0], args[1:]...).CombinedOutput(); return nil })
	if err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
	return string(out)
}

func apply(t *testing.T, n ns.NetNS, m *Manager, r Rules) int {
	t.Helper()
	var changed int
	var err error
	n.Do(func(ns.NetNS) error { changed, err = m.Apply(r); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return changed
}

func saveAll(t *testing.T, n ns.NetNS) string {
	return sh(t, n, "iptables", "-S") + sh(t, n, "iptables", "-t", "nat", "-S") +
		sh(t, n, "ip6tables", "-S") + sh(t, n, "ip6tables", "-t", "nat", "-S")
}

func TestApplyIdempotentDualStackAndCleanup(t *testing.T) {
	testutil.RequireRoot(t)
	n := testns.New(t)
	// Someone else's rules, which must survive everything we do.
	sh(t, n, "iptables", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "DROP")
	sh(t, n, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth9", "-j", "MASQUERADE")
	sh(t, n, "iptables", "-P", "FORWARD", "DROP")
	pristine := saveAll(t, n)

	m := New()
	r := Rules{ClusterCIDRs: pfx("10.42.0.0/16", "fd42::/56"), PodSubnets: pfx("10.42.3.0/24", "fd42:0:0:3::/64"), Masquerade: true}
	if got := apply(t, n, m, r); got == 0 {
		t.Fatal("first apply changed nothing")
	}
	state := saveAll(t, n)
	t.Logf("after apply:\n%s", state)
	if got := apply(t, n, m, r); got != 0 {
		t.Fatalf("second apply made %d changes", got)
	}
	if again := saveAll(t, n); again != state {
		t.Fatalf("no-op apply changed rules:\n%s\n---\n%s", state, again)
	}
	filter := sh(t, n, "iptables", "-S", "FORWARD")
	// Our FORWARD jump is appended (after the user's rule, where kube-router's
	// policy chains stay ahead of it); the nat jump is first.
	if !strings.Contains(filter, "-A FORWARD -s 192.0.2.0/24 -j DROP\n-A FORWARD -m comment --comment \"wgmesh: wgmesh-forward\" -j WGMESH-FORWARD") {
		t.Errorf("FORWARD:\n%s", filter)
	}
	if nat := sh(t, n, "iptables", "-t", "nat", "-S", "POSTROUTING"); !strings.HasPrefix(strings.SplitN(nat, "\n", 3)[1], "-A POSTROUTING -m comment --comment \"wgmesh: wgmesh-postrtg\"") {
		t.Errorf("POSTROUTING:\n%s", nat)
	}
	var fw ForwardState
	n.Do(func(ns.NetNS) error { fw, _ = m.ReadForward(false); return nil })
	if fw != (ForwardState{Policy: "DROP", JumpFound: true}) {
		t.Errorf("ReadForward = %+v", fw)
	}

	// A chain someone edited is rewritten.
	sh(t, n, "iptables", "-t", "nat", "-I", ChainPostrouting, "1", "-j", "ACCEPT")
	if got := apply(t, n, m, r); got == 0 {
		t.Fatal("edited chain not repaired")
	}
	if again := saveAll(t, n); again != state {
		t.Fatalf("repair left a difference:\n%s\n---\n%s", state, again)
	}

	// Masquerade off: the nat chain and its jump go, FORWARD stays.
	r.Masquerade = false
	apply(t, n, m, r)
	if nat := sh(t, n, "iptables", "-t", "nat", "-S"); strings.Contains(nat, "WGMESH") {
		t.Errorf("nat still has WGMESH:\n%s", nat)
	}
	if !strings.Contains(sh(t, n, "iptables", "-S"), "WGMESH-FORWARD") {
		t.Error("FORWARD chain gone with masquerade")
	}

	var err error
	n.Do(func(ns.NetNS) error { _, err = m.Cleanup(); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if got := saveAll(t, n); got != pristine {
		t.Fatalf("cleanup did not restore the pristine rules:\n%s\n---\n%s", pristine, got)
	}
	// Cleanup twice is fine.
	n.Do(func(ns.NetNS) error { _, err = m.Cleanup(); return nil })
	if err != nil {
		t.Fatal(err)
	}
}
