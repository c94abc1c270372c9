//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wgmesh/wgmesh/test/e2e/kubenode"
	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// policyCheck is one connection a NetworkPolicy step expects to work or
// to be blocked.
type policyCheck struct {
	from, to string // pod names ("ns/name"), or "internet" as to
	want     bool
}

// testNetworkPolicy: k3s's network policy controller (kube-router's netpol,
// on every node) enforces NetworkPolicy on wgmesh's pods, same-node and
// cross-node (through the tunnel): a default-deny ingress blocks both; an
// allow by podSelector opens exactly the selected pods of the namespace;
// an allow by namespaceSelector opens exactly that namespace; an egress
// policy limits the selected pods' outgoing traffic and no one else's.
func testNetworkPolicy(t *testing.T, kc *kubeletCluster) {
	ctx := t.Context()
	n1, n2, n3 := kc.nodes[0].Name, kc.nodes[1].Name, kc.nodes[2].Name
	for _, ns := range []struct {
		name   string
		labels map[string]string
	}{{"np-a", nil}, {"np-b", map[string]string{"team": "allowed"}}} {
		if _, err := kc.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.name, Labels: ns.labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = kc.Client.CoreV1().Namespaces().Delete(context.Background(), ns.name, metav1.DeleteOptions{})
		})
		if err := kubeletPoll(ctx, 60*time.Second, func() error {
			_, err := kc.Client.CoreV1().ServiceAccounts(ns.name).Get(ctx, "default", metav1.GetOptions{})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	type spec struct{ ns, name, node, label string }
	specs := []spec{
		{"np-a", "srv", n1, "app=srv"},
		{"np-a", "cli-same", n1, "role=client"},
		{"np-a", "cli-cross", n2, "role=client"},
		{"np-a", "other", n2, "role=other"},
		{"np-b", "nsb-cli", n3, "role=client"},
		{"default", "k3s-" + n3 + "-1", n3, ""}, // created by TestK3sStack
		{"default", "k3s-" + n1 + "-0", n1, ""},
	}
	pods := map[string]*corev1.Pod{}
	for _, s := range specs {
		if s.label != "" {
			p := kubenode.WorkloadPod(s.name, s.node)
			k, v, _ := strings.Cut(s.label, "=")
			p.Labels = map[string]string{k: v}
			if _, err := kc.Client.CoreV1().Pods(s.ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, s := range specs {
		err := kubeletPoll(ctx, 120*time.Second, func() error {
			p, err := kc.Client.CoreV1().Pods(s.ns).Get(ctx, s.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				return fmt.Errorf("pod %s/%s is %s", s.ns, s.name, p.Status.Phase)
			}
			pods[s.ns+"/"+s.name] = p
			return nil
		})
		if err != nil {
			t.Fatalf("%v\n%s", err, kc.logs())
		}
	}
	reach := func(from, to string) bool {
		var dst netip.AddrPort
		if to == "internet" {
			dst = netip.AddrPortFrom(lab.InternetIP, kubenode.WorkloadHTTPPort)
		} else {
			dst = netip.AddrPortFrom(netip.MustParseAddr(pods[to].Status.PodIP), kubenode.WorkloadHTTPPort)
		}
		_, err := kubenode.GetPath(ctx, kc.podNS(t, pods[from]), dst, "/healthz", 1500*time.Millisecond)
		return err == nil
	}
	srv := "np-a/srv"
	clients := []string{"np-a/cli-same", "np-a/cli-cross", "np-a/other", "np-b/nsb-cli", "default/k3s-" + n3 + "-1"}
	ingress := func(allowed ...string) []policyCheck {
		var cs []policyCheck
		for _, c := range clients {
			cs = append(cs, policyCheck{c, srv, slices.Contains(allowed, c)})
		}
		return cs
	}
	policies := kc.Client.NetworkingV1().NetworkPolicies("np-a")
	create := func(np *networkingv1.NetworkPolicy) {
		t.Helper()
		if _, err := policies.Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	port := intstr.FromInt32(kubenode.WorkloadHTTPPort)
	steps := []struct {
		name   string
		apply  func()
		checks []policyCheck
	}{
		{"no policy", func() {}, ingress(clients...)},
		{"default-deny ingress in np-a", func() {
			create(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default-deny"},
				Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}})
		}, ingress()},
		{"+ allow from podSelector role=client", func() {
			create(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "allow-clients"},
				Spec: networkingv1.NetworkPolicySpec{
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "srv"}},
					Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
						{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}}}},
				}})
		}, ingress("np-a/cli-same", "np-a/cli-cross")},
		{"+ allow from namespaceSelector team=allowed", func() {
			create(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "allow-team"},
				Spec: networkingv1.NetworkPolicySpec{
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "srv"}},
					Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
						{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "allowed"}}}}}},
				}})
		}, ingress("np-a/cli-same", "np-a/cli-cross", "np-b/nsb-cli")},
		{"+ egress of role=client only to app=srv", func() {
			create(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "clients-egress"},
				Spec: networkingv1.NetworkPolicySpec{
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}},
					PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
					Egress: []networkingv1.NetworkPolicyEgressRule{{
						To:    []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "srv"}}}},
						Ports: []networkingv1.NetworkPolicyPort{{Port: &port}},
					}},
				}})
		}, append(ingress("np-a/cli-same", "np-a/cli-cross", "np-b/nsb-cli"),
			policyCheck{"np-a/cli-cross", "default/k3s-" + n1 + "-0", false},
			policyCheck{"np-a/cli-same", "default/k3s-" + n1 + "-0", false},
			policyCheck{"np-a/cli-cross", "internet", false},
			policyCheck{"np-a/other", "default/k3s-" + n1 + "-0", true},
			policyCheck{"np-a/other", "internet", true},
		)},
	}
	for _, st := range steps {
		st.apply()
		applied := time.Now()
		var got []bool
		// kube-router applies a change at its next sync (on the informer
		// event): poll until the expected matrix holds.
		err := kubeletPoll(ctx, 45*time.Second, func() error {
			got = got[:0]
			var wrong []string
			for _, c := range st.checks {
				r := reach(c.from, c.to)
				got = append(got, r)
				if r != c.want {
					wrong = append(wrong, fmt.Sprintf("%s -> %s: reached=%t, want %t", c.from, c.to, r, c.want))
				}
			}
			if len(wrong) > 0 {
				return fmt.Errorf("%s", strings.Join(wrong, "; "))
			}
			return nil
		})
		allowed, blocked := 0, 0
		var lines []string
		for i, c := range st.checks {
			mark := "blocked"
			if i < len(got) && got[i] {
				mark = "reached"
				allowed++
			} else {
				blocked++
			}
			lines = append(lines, fmt.Sprintf("  %-22s (%s) -> %-22s %s (want %s)", c.from, nodeOf(pods, c.from), c.to, mark, map[bool]string{true: "reached", false: "blocked"}[c.want]))
		}
		t.Logf("FIGURE NetworkPolicy %q: %d reached, %d blocked of %d checks, as expected=%t within %s of the API write (probes included)\n%s",
			st.name, allowed, blocked, len(st.checks), err == nil, time.Since(applied).Round(100*time.Millisecond), strings.Join(lines, "\n"))
		if err != nil {
			t.Fatalf("%s: %v\n%s", st.name, err, kc.stackLogs())
		}
	}
}

func nodeOf(pods map[string]*corev1.Pod, name string) string {
	if p := pods[name]; p != nil {
		return p.Spec.NodeName
	}
	return "-"
}

// tailFile is the last 2500 bytes of a log file under a header, or "".
func tailFile(path, title string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(data) > 2500 {
		data = data[len(data)-2500:]
	}
	return fmt.Sprintf("--- %s log (tail)\n%s\n", title, data)
}
