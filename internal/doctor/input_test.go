package doctor

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/mesh"
)

// ufwDefault is `iptables -S` of Ubuntu's ufw enabled with "default deny
// incoming" and "ufw allow 22/tcp" (the chains that matter for INPUT).
const ufwDefault = `-P INPUT DROP
-P FORWARD DROP
-P OUTPUT ACCEPT
-N ufw-after-input
-N ufw-after-logging-input
-N ufw-before-input
-N ufw-before-logging-input
-N ufw-logging-deny
-N ufw-not-local
-N ufw-reject-input
-N ufw-skip-to-policy-input
-N ufw-track-input
-N ufw-user-input
-A INPUT -j ufw-before-logging-input
-A INPUT -j ufw-before-input
-A INPUT -j ufw-after-input
-A INPUT -j ufw-after-logging-input
-A INPUT -j ufw-reject-input
-A INPUT -j ufw-track-input
-A ufw-after-input -p udp -m udp --dport 137 -j ufw-skip-to-policy-input
-A ufw-after-input -p tcp -m tcp --dport 445 -j ufw-skip-to-policy-input
-A ufw-after-input -m addrtype --dst-type BROADCAST -j ufw-skip-to-policy-input
-A ufw-after-logging-input -m limit --limit 3/min --limit-burst 10 -j LOG --log-prefix "[UFW BLOCK] "
-A ufw-before-input -i lo -j ACCEPT
-A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-before-input -m conntrack --ctstate INVALID -j ufw-logging-deny
-A ufw-before-input -m conntrack --ctstate INVALID -j DROP
-A ufw-before-input -p icmp -m icmp --icmp-type 3 -j ACCEPT
-A ufw-before-input -p udp -m udp --sport 67 --dport 68 -j ACCEPT
-A ufw-before-input -j ufw-not-local
-A ufw-before-input -d 224.0.0.251/32 -p udp -m udp --dport 5353 -j ACCEPT
-A ufw-before-input -j ufw-user-input
-A ufw-logging-deny -m conntrack --ctstate INVALID -m limit --limit 3/min --limit-burst 10 -j RETURN
-A ufw-not-local -m addrtype --dst-type LOCAL -j RETURN
-A ufw-not-local -m addrtype --dst-type MULTICAST -j RETURN
-A ufw-not-local -m limit --limit 3/min --limit-burst 10 -j ufw-logging-deny
-A ufw-not-local -j DROP
-A ufw-skip-to-policy-input -j DROP
-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT`

// firewalldIptables is firewalld with its iptables backend (CentOS 7),
// public zone with ssh.
const firewalldIptables = `-P INPUT ACCEPT
-N INPUT_ZONES
-N INPUT_ZONES_SOURCE
-N INPUT_direct
-N IN_public
-N IN_public_allow
-N IN_public_deny
-N IN_public_log
-N IN_trusted
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -j INPUT_direct
-A INPUT -j INPUT_ZONES_SOURCE
-A INPUT -j INPUT_ZONES
-A INPUT -m conntrack --ctstate INVALID -j DROP
-A INPUT -j REJECT --reject-with icmp-host-prohibited
-A INPUT_ZONES -i eth0 -g IN_public
-A INPUT_ZONES -g IN_public
-A IN_public -j IN_public_log
-A IN_public -j IN_public_deny
-A IN_public -j IN_public_allow
-A IN_public -p icmp -j ACCEPT
-A IN_public_allow -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW,UNTRACKED -j ACCEPT
-A IN_trusted -j ACCEPT`

// kubeRouter is what k3s's network policy controller puts first in INPUT:
// policy-compliant pod traffic is ACCEPTed by mark, set in the chain of a
// pod some NetworkPolicy selects (here 10.42.0.9, not the probed pod).
const kubeRouter = `-N KUBE-ROUTER-INPUT
-N KUBE-POD-FW-ABC
-I INPUT -m comment --comment "kube-router netpol - 4IA2OSFRMVNDXBVV" -j KUBE-ROUTER-INPUT
-A KUBE-ROUTER-INPUT -d 10.43.0.0/16 -m comment --comment "allow traffic to primary/secondary cluster IP range - TZZOAXOCHPHEHX7M" -j RETURN
-A KUBE-ROUTER-INPUT -p tcp -m comment --comment "allow LOCAL TCP traffic to node ports - LR7XO7NXDBGQJD2M" -m addrtype --dst-type LOCAL -m multiport --dports 30000:32767 -j RETURN
-A KUBE-ROUTER-INPUT -s 10.42.0.9/32 -m comment --comment "rule to jump traffic from POD name:web namespace: default to POD FW chain" -j KUBE-POD-FW-ABC
-A KUBE-ROUTER-INPUT -m comment --comment "rule to explicitly ACCEPT traffic that comply to network policies" -m mark --mark 0x20000/0x20000 -j ACCEPT
-A KUBE-POD-FW-ABC -j MARK --set-xmark 0x20000/0x20000`

func filterOf(rules ...string) *Filter {
	var lines []string
	var inserts []string
	for _, r := range rules {
		for _, l := range strings.Split(r, "\n") {
			if strings.HasPrefix(l, "-I INPUT ") {
				inserts = append(inserts, "-A INPUT "+strings.TrimPrefix(l, "-I INPUT "))
				continue
			}
			lines = append(lines, l)
		}
	}
	f := ParseFilter(append(inserts, lines...))
	return &f
}

func TestInputFindings(t *testing.T) {
	node := netip.MustParseAddr("192.168.1.10")
	for _, tt := range []struct {
		name   string
		filter *Filter
		want   Severity // "" no finding
		text   []string
	}{
		{name: "no firewall", filter: filterOf("-P INPUT ACCEPT")},
		{name: "plain policy DROP", filter: filterOf("-P INPUT DROP\n-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"),
			want: SeverityError, text: []string{`"policy DROP of INPUT"`, "iptables -I INPUT -s 10.42.0.0/16 -j ACCEPT", "TCP 10250", "TCP 6443"}},
		{name: "policy DROP, cluster CIDR accepted", filter: filterOf("-P INPUT DROP\n-A INPUT -s 10.42.0.0/16 -j ACCEPT")},
		{name: "policy DROP, cni0 accepted", filter: filterOf("-P INPUT DROP\n-A INPUT -i cni+ -j ACCEPT")},
		{name: "catch-all REJECT", filter: filterOf("-P INPUT ACCEPT\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -j REJECT --reject-with icmp-port-unreachable"),
			want: SeverityError, text: []string{`-A INPUT -j REJECT --reject-with icmp-port-unreachable`}},
		{name: "only the API port opened", filter: filterOf("-P INPUT DROP\n-A INPUT -p tcp -m tcp --dport 6443 -j ACCEPT"),
			want: SeverityError, text: []string{"TCP 10250"}},
		{name: "ufw default deny", filter: filterOf(ufwDefault),
			want: SeverityError, text: []string{"ufw allow from 10.42.0.0/16 to any", "(ufw's rules)", `"policy DROP of INPUT"`}},
		{name: "ufw after ufw allow from the cluster CIDR", filter: filterOf(ufwDefault, "-A ufw-user-input -s 10.42.0.0/16 -j ACCEPT")},
		{name: "firewalld (iptables backend)", filter: filterOf(firewalldIptables),
			want: SeverityError, text: []string{"firewall-cmd --permanent --zone=trusted --add-source=10.42.0.0/16 && firewall-cmd --reload", "-A INPUT -j REJECT --reject-with icmp-host-prohibited"}},
		{name: "firewalld after adding the source to trusted", filter: filterOf(firewalldIptables, "-A INPUT_ZONES_SOURCE -s 10.42.0.0/16 -g IN_trusted")},
		{name: "ufw behind k3s's kube-router: marks evaluated, still dropped", filter: filterOf(kubeRouter, ufwDefault),
			want: SeverityError, text: []string{"ufw allow from"}},
		{name: "a rule doctor cannot evaluate might accept", filter: filterOf("-P INPUT DROP\n-A INPUT -m set --match-set trusted src -j ACCEPT"),
			want: SeverityWarning, text: []string{"-A INPUT -m set --match-set trusted src -j ACCEPT"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{
				Desired:      mesh.State{Subnets: []netip.Prefix{netip.MustParsePrefix("10.42.3.0/24")}},
				ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")},
				Bridge:       "cni0",
				Kernel:       Kernel{Filter: tt.filter, NodeAddr: node},
			}
			var got []Finding
			for _, f := range Check(context.Background(), in) {
				if f.ID == "InputDropsPods" {
					got = append(got, f)
				}
			}
			if tt.want == "" {
				if len(got) != 0 {
					t.Fatalf("unexpected: %s", got[0])
				}
				return
			}
			if len(got) != 1 || got[0].Severity != tt.want {
				t.Fatalf("findings %v, want one InputDropsPods %s", got, tt.want)
			}
			for _, s := range tt.text {
				if !strings.Contains(got[0].String(), s) {
					t.Errorf("%q not in\n%s", s, got[0])
				}
			}
		})
	}
}

func TestSplitRuleUnquotes(t *testing.T) {
	got := splitRule(`-A INPUT -m comment --comment "a \"b\" c" -j ACCEPT`)
	want := []string{"-A", "INPUT", "-m", "comment", "--comment", `a "b" c`, "-j", "ACCEPT"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q", got)
	}
}

// TestInputFindingsIPv6: the IPv6 filter table is read and judged on its
// own, with an IPv6 pod's address, and the fix names ip6tables (or the
// tool's command with the IPv6 cluster CIDR).
func TestInputFindingsIPv6(t *testing.T) {
	accept := filterOf("-P INPUT ACCEPT")
	for _, tt := range []struct {
		name      string
		v4, v6    *Filter
		node      string
		want      int
		text      []string
		notInText []string
	}{
		{name: "v4 open, v6 policy DROP", v4: accept, v6: filterOf("-P INPUT DROP\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"), node: "192.168.1.10", want: 1,
			text: []string{"fd42:0:0:3::2", "ip6tables -I INPUT -s fd42::/48 -j ACCEPT", "(ip6tables)"}, notInText: []string{"10.42."}},
		{name: "v6 node address is the target", v4: accept, v6: filterOf("-P INPUT ACCEPT\n-A INPUT -d 2001:db8::10/128 -j DROP"), node: "2001:db8::10", want: 1,
			text: []string{"to this node (2001:db8::10)"}},
		{name: "ufw's IPv6 chains", v4: accept, v6: filterOf("-N ufw6-before-input\n-N ufw6-user-input\n-P INPUT DROP\n-A INPUT -j ufw6-before-input\n-A ufw6-before-input -j ufw6-user-input"), node: "192.168.1.10", want: 1,
			text: []string{"ufw allow from fd42::/48 to any", "(ufw's rules)"}},
		{name: "ufw after allowing the IPv6 cluster CIDR", v4: accept, v6: filterOf("-N ufw6-before-input\n-N ufw6-user-input\n-P INPUT DROP\n-A INPUT -j ufw6-before-input\n-A ufw6-before-input -j ufw6-user-input\n-A ufw6-user-input -s fd42::/48 -j ACCEPT"), node: "192.168.1.10"},
		{name: "both families dropped: one finding each", v4: filterOf("-P INPUT DROP"), v6: filterOf("-P INPUT DROP"), node: "192.168.1.10", want: 2},
		{name: "IPv6 table unknown", v4: accept, node: "192.168.1.10"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{
				Desired:      mesh.State{Subnets: []netip.Prefix{netip.MustParsePrefix("10.42.3.0/24"), netip.MustParsePrefix("fd42:0:0:3::/64")}},
				ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd42::/48")},
				Bridge:       "cni0",
				Kernel:       Kernel{Filter: tt.v4, Filter6: tt.v6, NodeAddr: netip.MustParseAddr(tt.node)},
			}
			var got []string
			for _, f := range Check(context.Background(), in) {
				if f.ID == "InputDropsPods" {
					got = append(got, f.String())
				}
			}
			if len(got) != tt.want {
				t.Fatalf("%d InputDropsPods findings, want %d: %q", len(got), tt.want, got)
			}
			all := strings.Join(got, "\n")
			for _, s := range tt.text {
				if !strings.Contains(all, s) {
					t.Errorf("finding lacks %q:\n%s", s, all)
				}
			}
			for _, s := range tt.notInText {
				if strings.Contains(all, s) {
					t.Errorf("finding has %q:\n%s", s, all)
				}
			}
		})
	}
}
