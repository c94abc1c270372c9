//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/test/e2e/kubenode"
	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// kubeletNodeCount is how many kubelet + containerd nodes the kubelet
// scenarios run (each with its own wgmesh agent).
const kubeletNodeCount = 3

// kubeletPodNS is where the scenarios create their pods.
const kubeletPodNS = "default"

// kubeletIPAMNetwork is the shipped conflist's network name: the IPAM
// allocation directory under /var/lib/cni/networks.
const kubeletIPAMNetwork = "wgmesh"

type kubeletCluster struct {
	*lab.Lab
	nodes []*kubenode.Node
}

// startKubeletCluster starts a lab of its own with n kubelet nodes, no
// agents yet. Everything is removed when t ends.
func startKubeletCluster(t *testing.T, n int) *kubeletCluster {
	t.Helper()
	return startKubeletClusterWith(t, n, lab.Config{}, true)
}

// startKubeletClusterWith is startKubeletCluster with the lab's options
// (cfg.Dir is made here). With forDaemonSet false the nodes keep the
// plugins and conflist the lab installed, for agents the harness starts
// (kubenode.StartAgentAndWait) with the lab's own settings.
func startKubeletClusterWith(t *testing.T, n int, cfg lab.Config, forDaemonSet bool) *kubeletCluster {
	t.Helper()
	testutil.RequireRoot(t)
	ctx := t.Context()
	// Pods of kubelet labs that died without Teardown (TestMain swept
	// their namespaces; their containers and cgroups are left).
	kubenode.Sweep(slog.Default())
	dir, err := os.MkdirTemp("", "wgmesh-lab-kubelet-")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = dir
	// Kubelet nodes: the control plane runs kube-scheduler and the
	// node-lifecycle controller too.
	cfg.Kubelets = true
	l, err := lab.Start(ctx, cfg)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(l.Down)
	images, err := kubenode.BuildImages(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	wgImage, err := kubenode.BuildWgmeshImage(ctx, l, filepath.Join(l.Dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	images = append(images, wgImage)
	kc := &kubeletCluster{Lab: l}
	for i := 1; i <= n; i++ {
		k, err := kubenode.AddNode(ctx, l, fmt.Sprintf("kube%d", i), images)
		if k != nil {
			kc.nodes = append(kc.nodes, k)
			t.Cleanup(func() {
				if err := k.Teardown(); err != nil {
					t.Logf("teardown %s: %v", k.Name, err)
				}
			})
		}
		if err == nil && forDaemonSet {
			err = k.PrepareForDaemonSet(ctx)
		}
		if err != nil {
			t.Fatalf("%v\n%s", err, kc.logs())
		}
	}
	kc.startBinder(t)
	return kc
}

// logs is the tail of every node's kubelet, containerd and agent log.
func (kc *kubeletCluster) logs() string {
	var b strings.Builder
	for _, k := range kc.nodes {
		for _, name := range append([]string{"kubelet", "containerd", "wgmesh-agent", "kube-proxy-iptables", "kube-proxy-nftables"}, kc.podLogs(k)...) {
			data, err := os.ReadFile(filepath.Join(k.Dir, name+".log"))
			if err != nil {
				continue
			}
			if len(data) > 2500 {
				data = data[len(data)-2500:]
			}
			fmt.Fprintf(&b, "--- %s %s log (tail)\n%s\n", k.Name, name, data)
		}
	}
	return b.String()
}

func (kc *kubeletCluster) node(name string) *kubenode.Node {
	for _, k := range kc.nodes {
		if k.Name == name {
			return k
		}
	}
	return nil
}

// createPod creates a workload pod on node and returns the time of the
// create call.
func (kc *kubeletCluster) createPod(ctx context.Context, pod *corev1.Pod) error {
	_, err := kc.Client.CoreV1().Pods(kubeletPodNS).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create pod %s: %w", pod.Name, err)
	}
	return nil
}

// waitRunning waits until every named pod is Running with an address.
func (kc *kubeletCluster) waitRunning(ctx context.Context, names []string, timeout time.Duration) ([]*corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	for {
		var pods []*corev1.Pod
		var waiting []string
		for _, name := range names {
			p, err := kc.Client.CoreV1().Pods(kubeletPodNS).Get(ctx, name, metav1.GetOptions{})
			if err != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				phase := "absent"
				if p != nil && err == nil {
					phase = string(p.Status.Phase) + kubeletPodReason(p)
				}
				waiting = append(waiting, name+"="+phase)
				continue
			}
			pods = append(pods, p)
		}
		if len(waiting) == 0 {
			return pods, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("pods not running after %s: %s", timeout, strings.Join(waiting, ", "))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func kubeletPodReason(p *corev1.Pod) string {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Waiting != nil {
			return "(" + cs.State.Waiting.Reason + ": " + cs.State.Waiting.Message + ")"
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			return "(" + c.Message + ")"
		}
	}
	return ""
}

// waitGone waits until the pod no longer exists in the API.
func (kc *kubeletCluster) waitGone(ctx context.Context, names []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var left []string
		for _, name := range names {
			_, err := kc.Client.CoreV1().Pods(kubeletPodNS).Get(ctx, name, metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				left = append(left, name)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pods still present after %s: %s", timeout, strings.Join(left, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func (kc *kubeletCluster) deletePods(ctx context.Context, names []string) error {
	for _, name := range names {
		err := kc.Client.CoreV1().Pods(kubeletPodNS).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete pod %s: %w", name, err)
		}
	}
	return kc.waitGone(ctx, names, 90*time.Second)
}

// waitDefaultServiceAccount waits for kube-controller-manager to create the
// namespace's default ServiceAccount: pod admission needs it.
func (kc *kubeletCluster) waitDefaultServiceAccount(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := kc.Client.CoreV1().ServiceAccounts(kubeletPodNS).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no default serviceaccount in %s: %w", kubeletPodNS, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// probeAll probes every pod from inside every pod's network namespace,
// over HTTP (the answer names the pod that answered) and UDP echo. It
// retries each pair for up to settle.
func (kc *kubeletCluster) probeAll(t *testing.T, ctx context.Context, pods []*corev1.Pod, settle time.Duration) {
	t.Helper()
	var table strings.Builder
	bad := 0
	for _, src := range pods {
		k := kc.node(src.Spec.NodeName)
		netns, err := k.PodNetNS(src)
		if err != nil {
			t.Errorf("pod %s: %v", src.Name, err)
			bad++
			continue
		}
		fmt.Fprintf(&table, "%-14s", src.Name)
		for _, dst := range pods {
			dstIP := netip.MustParseAddr(dst.Status.PodIP)
			want := fmt.Sprintf("pod=%s ip=%s", dst.Name, dst.Status.PodIP)
			var got string
			var herr, uerr error
			deadline := time.Now().Add(settle)
			for {
				got, herr = kubenode.ProbeHTTP(ctx, netns, dstIP, 2*time.Second)
				if herr == nil && got != want {
					herr = fmt.Errorf("answer %q, want %q", got, want)
				}
				uerr = kubenode.ProbeUDP(ctx, netns, dstIP, []byte("echo "+src.Name), 2*time.Second)
				if (herr == nil && uerr == nil) || time.Now().After(deadline) {
					break
				}
				time.Sleep(300 * time.Millisecond)
			}
			mark := " ok"
			if herr != nil || uerr != nil {
				bad++
				mark = " XX"
				t.Errorf("%s/%s -> %s/%s (%s): http: %v; udp: %v", src.Spec.NodeName, src.Name, dst.Spec.NodeName, dst.Name, dstIP, herr, uerr)
			}
			table.WriteString(mark)
		}
		table.WriteString("\n")
	}
	t.Logf("HTTP+UDP reachability, %d pods (rows: from, columns: to, same order):\n%s", len(pods), table.String())
	if bad > 0 {
		t.Log(kc.logs())
	}
}

// TestKubeletNodes runs wgmesh under real kubelets and containerd: pods
// created through the API, networked by containerd's CNI calls into the
// shipped conflist.
func TestKubeletNodes(t *testing.T) {
	kc := startKubeletCluster(t, kubeletNodeCount)
	ctx := t.Context()
	if err := kc.waitDefaultServiceAccount(ctx); err != nil {
		t.Fatal(err)
	}

	if !t.Run("NetworkReadyFollowsAgent", func(t *testing.T) { testNetworkReadyFollowsAgent(t, kc) }) {
		t.FailNow()
	}
	var pods []*corev1.Pod
	if !t.Run("PodsGetNodeSubnetAddresses", func(t *testing.T) { pods = testPodsGetNodeSubnetAddresses(t, kc) }) {
		t.FailNow()
	}
	t.Run("PodsReachEachOtherAcrossNodes", func(t *testing.T) { kc.probeAll(t, t.Context(), pods, 20*time.Second) })
	t.Run("ServicesThroughKubeProxy", func(t *testing.T) { testServicesThroughKubeProxy(t, kc, pods) })
	t.Run("PodDeletionReleasesAddress", func(t *testing.T) { pods = testPodDeletionReleasesAddress(t, kc, pods) })
	t.Run("NodeRestartKeepsAddressesAndGCsLeaks", func(t *testing.T) { testNodeRestart(t, kc, pods) })
	t.Run("PodStartLatency", func(t *testing.T) { testPodStartLatency(t, kc) })
	t.Run("DaemonSetRollout", func(t *testing.T) { testDaemonSetRollout(t, kc, pods) })
	t.Run("Uninstall", func(t *testing.T) { testUninstall(t, kc) })
}

// The kubelet reports the Node NotReady ("container runtime network not
// ready: NetworkReady=false") while containerd's CNI STATUS call to the
// wgmesh plugin fails, i.e. until the agent has written subnet.env and
// brought the WireGuard device up; once the agent runs, the Node turns
// Ready without anyone touching containerd or the kubelet.
func testNetworkReadyFollowsAgent(t *testing.T, kc *kubeletCluster) {
	ctx := t.Context()
	for _, k := range kc.nodes {
		var msg string
		err := kubeletPoll(ctx, 60*time.Second, func() error {
			node, err := kc.Client.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			c := kubenode.NodeCondition(node, corev1.NodeReady)
			if c == nil {
				return fmt.Errorf("no Ready condition yet")
			}
			if c.Status == corev1.ConditionTrue {
				return fmt.Errorf("node %s is Ready before its agent runs: %s", k.Name, c.Message)
			}
			if !strings.Contains(c.Message, "NetworkReady=false") {
				return fmt.Errorf("Ready=%s for another reason: %s", c.Status, c.Message)
			}
			msg = c.Message
			return nil
		})
		if err != nil {
			t.Fatalf("node %s before agent: %v\n%s", k.Name, err, kc.logs())
		}
		t.Logf("%s without agent: Ready=False: %s", k.Name, msg)
	}
	kc.installDaemonSet(t)
}

// Two pods per node, bound to their node; each gets an address from its
// node's pod CIDR, recorded in that node's IPAM store.
func testPodsGetNodeSubnetAddresses(t *testing.T, kc *kubeletCluster) []*corev1.Pod {
	ctx := t.Context()
	var names []string
	for _, k := range kc.nodes {
		for i := range 2 {
			name := fmt.Sprintf("w-%s-%d", k.Name, i)
			if err := kc.createPod(ctx, kubenode.WorkloadPod(name, k.Name)); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
	}
	pods, err := kc.waitRunning(ctx, names, 120*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, kc.logs())
	}
	seen := map[string]string{}
	for _, p := range pods {
		node, err := kc.Client.CoreV1().Nodes().Get(ctx, p.Spec.NodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cidr, err := netip.ParsePrefix(node.Spec.PodCIDR)
		if err != nil {
			t.Fatalf("node %s podCIDR %q: %v", node.Name, node.Spec.PodCIDR, err)
		}
		ip := netip.MustParseAddr(p.Status.PodIP)
		if !cidr.Contains(ip) {
			t.Errorf("pod %s on %s has %s, outside the node's podCIDR %s", p.Name, node.Name, ip, cidr)
		}
		if other, dup := seen[ip.String()]; dup {
			t.Errorf("pods %s and %s share %s", other, p.Name, ip)
		}
		seen[ip.String()] = p.Name
		allocs, err := kc.node(node.Name).IPAMAllocations(kubeletIPAMNetwork)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := allocs[ip.String()]; !ok {
			t.Errorf("pod %s's address %s is not in %s's IPAM store (%v)", p.Name, ip, node.Name, allocs)
		}
		t.Logf("pod %s on %s (podCIDR %s): %s", p.Name, node.Name, cidr, ip)
	}
	return pods
}

// Deleting a pod through the API makes containerd call CNI DEL, which
// releases the address: its allocation file disappears.
func testPodDeletionReleasesAddress(t *testing.T, kc *kubeletCluster, pods []*corev1.Pod) []*corev1.Pod {
	ctx := t.Context()
	victim := pods[len(pods)-1]
	k := kc.node(victim.Spec.NodeName)
	allocs, err := k.IPAMAllocations(kubeletIPAMNetwork)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := allocs[victim.Status.PodIP]; !ok {
		t.Fatalf("no allocation for %s before delete: %v", victim.Status.PodIP, allocs)
	}
	if err := kc.deletePods(ctx, []string{victim.Name}); err != nil {
		t.Fatal(err)
	}
	err = kubeletPoll(ctx, 30*time.Second, func() error {
		allocs, err := k.IPAMAllocations(kubeletIPAMNetwork)
		if err != nil {
			return err
		}
		if id, ok := allocs[victim.Status.PodIP]; ok {
			return fmt.Errorf("%s still allocated to %s", victim.Status.PodIP, id)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("pod %s deleted, address not released: %v\n%s", victim.Name, err, kc.logs())
	}
	t.Logf("pod %s deleted: %s released on %s", victim.Name, victim.Status.PodIP, k.Name)
	return pods[:len(pods)-1]
}

// A node's kubelet, containerd and agent stop and start again. Pods keep
// their sandboxes and addresses (API, IPAM store and reachability agree),
// and an allocation the runtime never recorded (an ADD whose caller died
// before caching the result) is released by CNI GC with the runtime's
// sandboxes as the valid attachments.
func testNodeRestart(t *testing.T, kc *kubeletCluster, pods []*corev1.Pod) {
	ctx := t.Context()
	k := kc.nodes[0]

	// The leak: a CNI ADD for a sandbox containerd never knew, whose
	// cached result and network namespace are gone.
	idBytes := make([]byte, 32)
	_, _ = rand.Read(idBytes)
	leakID := hex.EncodeToString(idBytes)
	leakNS := "leak-" + leakID[:8]
	if _, err := k.Run(ctx, "ip", "netns", "add", leakNS); err != nil {
		t.Fatal(err)
	}
	if _, err := k.CNIAdd(ctx, leakID, "/run/netns/"+leakNS); err != nil {
		t.Fatalf("%v\n%s", err, kc.logs())
	}
	if err := os.Remove(filepath.Join(k.Dir, "var-lib-cni", "results", kubeletIPAMNetwork+"-"+leakID+"-eth0")); err != nil {
		t.Fatalf("drop the leaked attachment's cached result: %v", err)
	}
	if _, err := k.Run(ctx, "ip", "netns", "delete", leakNS); err != nil {
		t.Fatal(err)
	}
	leakIP := kubeletAllocationOf(t, k, leakID)
	t.Logf("leaked allocation on %s: %s for unknown sandbox %s…", k.Name, leakIP, leakID[:12])

	before := map[string]corev1.Pod{}
	for _, p := range pods {
		before[p.Name] = *p
	}

	// The agent's pod keeps running in its shim, as every pod does.
	k.StopKubelet()
	k.StopContainerd()
	if err := k.StartContainerd(ctx); err != nil {
		t.Fatalf("%v\n%s", err, kc.logs())
	}
	if err := k.StartKubelet(ctx); err != nil {
		t.Fatal(err)
	}
	// Ready again only after the restarted kubelet has posted a fresh
	// status: wait for a heartbeat newer than the restart.
	restarted := time.Now()
	err := kubeletPoll(ctx, 90*time.Second, func() error {
		node, err := kc.Client.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		c := kubenode.NodeCondition(node, corev1.NodeReady)
		if c == nil || c.Status != corev1.ConditionTrue || c.LastHeartbeatTime.Time.Before(restarted.Add(-time.Second)) {
			return fmt.Errorf("not Ready after restart: %v", c)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, kc.logs())
	}

	if err := k.CNIGC(ctx); err != nil {
		t.Fatalf("%v\n%s", err, kc.logs())
	}
	allocs, err := k.IPAMAllocations(kubeletIPAMNetwork)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := allocs[leakIP]; ok {
		t.Errorf("leaked %s (sandbox %s) survived CNI GC", leakIP, id)
	}

	var after []*corev1.Pod
	for _, p := range pods {
		now, err := kc.Client.CoreV1().Pods(kubeletPodNS).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		after = append(after, now)
		old := before[p.Name]
		if now.Status.PodIP != old.Status.PodIP {
			t.Errorf("pod %s: address %s before the restart, %s after", p.Name, old.Status.PodIP, now.Status.PodIP)
		}
		if len(now.Status.ContainerStatuses) == 0 || now.Status.ContainerStatuses[0].ContainerID != old.Status.ContainerStatuses[0].ContainerID {
			t.Errorf("pod %s: container replaced across the node restart", p.Name)
		}
		if now.Spec.NodeName == k.Name {
			if _, ok := allocs[now.Status.PodIP]; !ok {
				t.Errorf("pod %s's address %s lost from the IPAM store (%v)", p.Name, now.Status.PodIP, allocs)
			}
		}
	}
	// Every allocation left belongs to a running pod of the node.
	live := map[string]bool{}
	for _, p := range after {
		if p.Spec.NodeName == k.Name {
			live[p.Status.PodIP] = true
		}
	}
	for ip, id := range allocs {
		if !live[ip] {
			t.Errorf("allocation %s (sandbox %s) on %s belongs to no pod", ip, id, k.Name)
		}
	}
	t.Logf("%s restarted (kubelet, containerd, agent): %d allocations, all live pods'; leak %s released by GC", k.Name, len(allocs), leakIP)
	kc.probeAll(t, ctx, after, 20*time.Second)
}

// kubeletAllocationOf returns the address the node's IPAM store holds for id.
func kubeletAllocationOf(t *testing.T, k *kubenode.Node, id string) string {
	t.Helper()
	allocs, err := k.IPAMAllocations(kubeletIPAMNetwork)
	if err != nil {
		t.Fatal(err)
	}
	for ip, owner := range allocs {
		if owner == id {
			return ip
		}
	}
	t.Fatalf("no allocation for %s on %s: %v", id, k.Name, allocs)
	return ""
}

// kubeletLatencyPods is how many pods each pod start latency measurement creates.
const kubeletLatencyPods = 30

// Pod start latency through the real path (API create -> kubelet ->
// containerd -> CNI ADD -> container start -> status Running seen through
// the API), one pod at a time, round-robin over the nodes, with the shipped
// wgmesh conflist and with the reference bridge + host-local chain on the
// same nodes. The order is A B B A (half of wgmesh's pods before the
// reference, half after), and every block follows the canary pods that
// switch the conflist, so neither chain gains from going first on a warming
// node or loses to a drift in the machine's load.
func testPodStartLatency(t *testing.T, kc *kubeletCluster) {
	ctx := t.Context()
	half := kubeletLatencyPods / 2
	if err := kc.useShippedConflist(ctx); err != nil { // warms up like the switches below
		t.Fatal(err)
	}
	wg1 := measureKubeletStartLatency(t, kc, "wgmesh-a", half)
	if t.Failed() {
		return
	}
	if err := kc.useReferenceConflist(ctx); err != nil {
		t.Fatal(err)
	}
	ref := measureKubeletStartLatency(t, kc, "ref", kubeletLatencyPods)
	if err := kc.useShippedConflist(ctx); err != nil {
		t.Fatal(err)
	}
	wg2 := measureKubeletStartLatency(t, kc, "wgmesh-b", kubeletLatencyPods-half)
	wg := append(wg1, wg2...)
	t.Logf("pod start latency, API create -> Running, %d pods one at a time over %d kubelet nodes (wgmesh %d before and %d after the reference):",
		kubeletLatencyPods, len(kc.nodes), len(wg1), len(wg2))
	t.Logf("  %-32s p50 %-8s p99 %-8s max %s (p50 %s before, %s after)", "wgmesh (shipped conflist)", wg.p(50), wg.p(99), wg.p(100), wg1.p(50), wg2.p(50))
	t.Logf("  %-32s p50 %-8s p99 %-8s max %s", "reference bridge+host-local", ref.p(50), ref.p(99), ref.p(100))
	t.Logf("  wgmesh / reference at p50: %.2fx", float64(wg.p(50))/float64(ref.p(50)))
}

type latencies []time.Duration

// p is the q-th percentile (nearest rank), rounded to milliseconds.
func (d latencies) p(q int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (q*len(s)+99)/100 - 1
	i = max(0, min(i, len(s)-1))
	return s[i].Round(time.Millisecond)
}

func measureKubeletStartLatency(t *testing.T, kc *kubeletCluster, variant string, pods int) latencies {
	ctx := t.Context()
	var lat latencies
	var names []string
	defer func() {
		if err := kc.deletePods(context.WithoutCancel(ctx), names); err != nil {
			t.Error(err)
		}
	}()
	for i := range pods {
		k := kc.nodes[i%len(kc.nodes)]
		name := fmt.Sprintf("lat-%s-%02d", variant, i)
		start := time.Now()
		if err := kc.createPod(ctx, kubenode.WorkloadPod(name, k.Name)); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
		if _, err := kc.waitRunningFast(ctx, name, 60*time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", variant, err, kc.logs())
		}
		lat = append(lat, time.Since(start))
	}
	return lat
}

// waitRunningFast polls one pod every 20 ms until Running.
func (kc *kubeletCluster) waitRunningFast(ctx context.Context, name string, timeout time.Duration) (*corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	for {
		p, err := kc.Client.CoreV1().Pods(kubeletPodNS).Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			return p, nil
		}
		if time.Now().After(deadline) {
			reason := ""
			if p != nil {
				reason = kubeletPodReason(p)
			}
			return nil, fmt.Errorf("pod %s not Running after %s: %v %s", name, timeout, err, reason)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// kubeletRefConflist is the reference chain: bridge + host-local, then the same
// portmap and bandwidth as the shipped conflist. Its subnet is outside the
// cluster CIDR (pods on it reach only their own node, which is all the
// latency measurement needs).
func kubeletRefConflist(nodeIndex int) []byte {
	b, _ := json.MarshalIndent(map[string]any{
		"cniVersion": "1.1.0",
		"name":       "ref",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": "cniref0", "isGateway": true, "hairpinMode": true,
				"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]string{{{"subnet": fmt.Sprintf("10.88.%d.0/24", nodeIndex)}}}},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
			map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}},
		},
	}, "", "  ")
	return b
}

const kubeletRefConflistName = "05-ref.conflist" // sorts before 10-wgmesh.conflist: containerd uses it

// useReferenceConflist puts the reference chain first in every node's conf
// dir (containerd reloads the dir on change) and waits until a new pod gets
// an address from it.
func (kc *kubeletCluster) useReferenceConflist(ctx context.Context) error {
	for i, k := range kc.nodes {
		for _, p := range []string{"bridge", "host-local"} {
			dst := filepath.Join(k.Dir, "opt-cni-bin", p)
			if err := os.Symlink(filepath.Join(kc.RefBin, p), dst); err != nil && !os.IsExist(err) {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(k.Dir, "etc-cni-net.d", kubeletRefConflistName), kubeletRefConflist(i), 0o644); err != nil {
			return err
		}
	}
	return kc.waitConflistActive(ctx, "ref", netip.MustParsePrefix("10.88.0.0/16"))
}

// useShippedConflist removes the reference chain and waits until new pods
// get wgmesh addresses again.
func (kc *kubeletCluster) useShippedConflist(ctx context.Context) error {
	for _, k := range kc.nodes {
		if err := os.Remove(filepath.Join(k.Dir, "etc-cni-net.d", kubeletRefConflistName)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return kc.waitConflistActive(ctx, "wgmesh", netip.MustParsePrefix(lab.ClusterCIDR))
}

// waitConflistActive creates a canary pod per node until each gets an
// address inside want (containerd reloads its conf dir asynchronously).
func (kc *kubeletCluster) waitConflistActive(ctx context.Context, variant string, want netip.Prefix) error {
	for _, k := range kc.nodes {
		var lastIP string
		err := kubeletPoll(ctx, 60*time.Second, func() error {
			name := fmt.Sprintf("canary-%s-%s-%d", variant, k.Name, time.Now().UnixNano()%100000)
			if err := kc.createPod(ctx, kubenode.WorkloadPod(name, k.Name)); err != nil {
				return err
			}
			p, err := kc.waitRunningFast(ctx, name, 60*time.Second)
			if derr := kc.deletePods(ctx, []string{name}); derr != nil && err == nil {
				err = derr
			}
			if err != nil {
				return err
			}
			lastIP = p.Status.PodIP
			if !want.Contains(netip.MustParseAddr(lastIP)) {
				return fmt.Errorf("canary on %s got %s, not from %s yet", k.Name, lastIP, want)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("conflist %s not active on %s: %w", variant, k.Name, err)
		}
	}
	return nil
}

// kubeletPoll polls check every 300 ms until it succeeds or timeout passes.
func kubeletPoll(ctx context.Context, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}
