//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/test/e2e/kubenode"
)

// wgmesh in the kubelet lab as users deploy it: deploy/overlays/kubelet
// applied with kubectl, the wgmesh image (built from the Dockerfile's
// ingredients, kubenode.BuildWgmeshImage) in every node's containerd.

// startBinder binds the DaemonSet's (and the uninstall Job's) pods: the lab
// runs no kube-scheduler (kubenode.RunBinder).
func (kc *kubeletCluster) startBinder(t *testing.T) {
	var names []string
	for _, k := range kc.nodes {
		names = append(names, k.Name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); kubenode.RunBinder(ctx, kc.Lab, kubenode.DaemonSetNamespace, names) }()
	t.Cleanup(func() { cancel(); <-done })
}

// podLogs names (relative to the node's dir, without .log) the container
// logs of the kube-system pods on k: the DaemonSet's install, agent and
// cni-config containers, the uninstall's.
func (kc *kubeletCluster) podLogs(k *kubenode.Node) []string {
	matches, _ := filepath.Glob(filepath.Join(k.Dir, "var-log-pods", kubenode.DaemonSetNamespace+"_*", "*", "*.log"))
	var names []string
	for _, m := range matches {
		rel, err := filepath.Rel(k.Dir, strings.TrimSuffix(m, ".log"))
		if err == nil {
			names = append(names, rel)
		}
	}
	return names
}

// installDaemonSet applies deploy/overlays/kubelet and waits until every
// node turns Ready by itself (the init container installs the plugins, the
// agent comes up, cni-config writes the conflist, containerd's CNI STATUS
// passes) and the rollout is complete.
func (kc *kubeletCluster) installDaemonSet(t *testing.T) {
	ctx := t.Context()
	start := time.Now()
	if err := kubenode.ApplyDaemonSet(ctx, kc.Lab); err != nil {
		t.Fatal(err)
	}
	var readyIn []string
	for _, k := range kc.nodes {
		if err := k.WaitReady(ctx, 180*time.Second); err != nil {
			t.Fatalf("%v\n%s", err, kc.logs())
		}
		readyIn = append(readyIn, fmt.Sprintf("%s %s", k.Name, time.Since(start).Round(10*time.Millisecond)))
	}
	if _, err := kubenode.WaitDaemonSet(ctx, kc.Lab, kubenode.DaemonSetName, 120*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, kc.logs())
	}
	for _, k := range kc.nodes {
		for _, f := range []string{"opt-cni-bin/wgmesh", "opt-cni-bin/wgmesh-ipam", "etc-cni-net.d/10-wgmesh.conflist"} {
			if _, err := os.Stat(filepath.Join(k.Dir, f)); err != nil {
				t.Errorf("%s: the DaemonSet did not install %s: %v", k.Name, f, err)
			}
		}
	}
	t.Logf("FIGURE daemonset install: kubectl apply -k deploy/overlays/kubelet -> Node Ready: %s; rollout complete after %s",
		strings.Join(readyIn, ", "), time.Since(start).Round(10*time.Millisecond))
}

// testDaemonSetRollout changes the DaemonSet's image tag (the same image,
// imported under a second tag) while a pod on the first node pings a pod
// on the second every 10 ms and streams TCP to it. The DaemonSet replaces
// one node's pod at a time (maxUnavailable 1); no Node may go NotReady;
// the TCP stream must arrive whole, and the ping must come back. The lost
// pings and the longest stall of each are printed.
func testDaemonSetRollout(t *testing.T, kc *kubeletCluster, pods []*corev1.Pod) {
	ctx := t.Context()
	src, dst := firstPodOn(pods, kc.nodes[0].Name), firstPodOn(pods, kc.nodes[1].Name)
	if src == nil || dst == nil {
		t.Fatalf("no pods on %s and %s", kc.nodes[0].Name, kc.nodes[1].Name)
	}
	const newRef = "ghcr.io/wgmesh/wgmesh:rollout"
	for _, k := range kc.nodes {
		if out, err := k.Ctr(ctx, "images", "tag", "--force", kubenode.WgmeshImageRef, newRef); err != nil {
			t.Fatalf("%s: %v: %s", k.Name, err, out)
		}
	}
	srcNS, err := kc.node(src.Spec.NodeName).PodNetNS(src)
	if err != nil {
		t.Fatal(err)
	}
	dstNS, err := kc.node(dst.Spec.NodeName).PodNetNS(dst)
	if err != nil {
		t.Fatal(err)
	}
	dstIP := netip.MustParseAddr(dst.Status.PodIP)

	ping, err := startPing(srcNS, dstIP)
	if err != nil {
		t.Fatal(err)
	}
	defer ping.stop()
	stream, err := startStream(srcNS, dstNS, dstIP)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.stop()
	time.Sleep(time.Second)

	start := time.Now()
	if _, err := kubenode.Kubectl(ctx, kc.Lab, "-n", kubenode.DaemonSetNamespace, "set", "image", "ds/"+kubenode.DaemonSetName,
		"install="+newRef, "agent="+newRef, "cni-config="+newRef); err != nil {
		t.Fatal(err)
	}
	// Watch the nodes and the DaemonSet's pods until the rollout is done.
	var notReady []string
	maxDown := 0
	var order []string
	deadline := time.Now().Add(240 * time.Second)
	for {
		down := 0
		for _, k := range kc.nodes {
			node, err := kc.Client.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
			if err == nil {
				if c := kubenode.NodeCondition(node, corev1.NodeReady); c == nil || c.Status != corev1.ConditionTrue {
					notReady = append(notReady, fmt.Sprintf("%s at +%s: %v", k.Name, time.Since(start).Round(time.Millisecond), c))
				}
			}
			p, err := kubenode.DaemonSetPod(ctx, kc.Lab, kubenode.DaemonSetName, k.Name)
			switch {
			case err != nil || !podReady(p):
				down++
			case podImage(p, "agent") == newRef && !slices.Contains(order, k.Name):
				order = append(order, k.Name)
			}
		}
		maxDown = max(maxDown, down)
		if len(order) == len(kc.nodes) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout not done after 240s (rolled: %v)\n%s", order, kc.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := kubenode.WaitDaemonSet(ctx, kc.Lab, kubenode.DaemonSetName, 60*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, kc.logs())
	}
	took := time.Since(start)
	// The mesh after the rollout: the ping must be answered again.
	recovered := ping.waitReplies(50, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	p := ping.stop()
	s := stream.stop()

	t.Logf("FIGURE daemonset rollout: %d nodes rolled in %s (order %s, at most %d without a ready wgmesh pod at once); ping %s -> %s every 10 ms: %d of %d lost, longest stall %s; TCP stream: %d KiB, %s, longest stall %s; nodes NotReady: %d samples",
		len(order), took.Round(10*time.Millisecond), strings.Join(order, ","), maxDown, src.Name, dst.Name,
		p.sent-p.received, p.sent, p.maxGap.Round(time.Millisecond), s.bytes/1024, s.verdict(), s.maxGap.Round(time.Millisecond), len(notReady))
	if maxDown > 1 {
		t.Errorf("%d nodes were without a ready wgmesh pod at once; the DaemonSet rolls one at a time", maxDown)
	}
	if len(notReady) > 0 {
		t.Errorf("nodes went NotReady during the rollout:\n%s", strings.Join(notReady, "\n"))
	}
	if s.err != nil {
		t.Errorf("TCP stream across the rollout: %v", s.err)
	}
	if !recovered {
		t.Errorf("pings from %s to %s not answered after the rollout\n%s", src.Name, dst.Name, kc.logs())
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podImage(p *corev1.Pod, container string) string {
	for _, c := range p.Spec.Containers {
		if c.Name == container {
			return c.Image
		}
	}
	return ""
}

// pinger is `ping -D -i 0.01` in a pod's network namespace; each reply's
// timestamp gives the longest stall.
type pinger struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
	res  pingResult
}

type pingResult struct {
	sent, received int
	maxGap         time.Duration
}

// pingReply is a reply line of ping -D (pingSummary: its closing line).
var pingReply = regexp.MustCompile(`^\[(\d+\.\d+)\] \d+ bytes from`)

func startPing(netns string, dst netip.Addr) (*pinger, error) {
	p := &pinger{done: make(chan struct{})}
	p.cmd = exec.Command("nsenter", "--net="+netns, "ping", "-n", "-D", "-i", "0.01", "-W", "1", dst.String())
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		w.Close()
	}()
	go func() {
		defer close(p.done)
		var last float64
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			if m := pingReply.FindStringSubmatch(line); m != nil {
				ts, _ := strconv.ParseFloat(m[1], 64)
				if last > 0 {
					p.res.maxGap = max(p.res.maxGap, time.Duration((ts-last)*float64(time.Second)))
				}
				last = ts
				p.res.received++
			}
			if m := pingSummary.FindStringSubmatch(line); m != nil {
				p.res.sent, _ = strconv.Atoi(m[1])
				p.res.received, _ = strconv.Atoi(m[2])
			}
			p.mu.Unlock()
		}
	}()
	return p, nil
}

// waitReplies waits until n more replies came in, or timeout.
func (p *pinger) waitReplies(n int, timeout time.Duration) bool {
	p.mu.Lock()
	want := p.res.received + n
	p.mu.Unlock()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		got := p.res.received
		p.mu.Unlock()
		if got >= want {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// stop interrupts ping (which then prints its summary) and returns the counts.
func (p *pinger) stop() pingResult {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGINT)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.res
}

// streamer sends numbered 1 KiB blocks every 10 ms over one TCP connection
// from a socket in one pod's network namespace to a listener in another's,
// and checks that every block arrives, in order, on the same connection.
type streamer struct {
	ln        net.Listener
	client    net.Conn
	stopWrite chan struct{}
	wg        sync.WaitGroup
	mu        sync.Mutex
	res       streamResult
}

type streamResult struct {
	bytes  int
	maxGap time.Duration
	err    error
}

func (r streamResult) verdict() string {
	if r.err != nil {
		return "BROKEN"
	}
	return "whole and in order"
}

const streamPort = 9917

func startStream(srcNS, dstNS string, dst netip.Addr) (*streamer, error) {
	s := &streamer{stopWrite: make(chan struct{})}
	if err := kubenode.InNetNS(dstNS, func() error {
		var err error
		s.ln, err = net.Listen("tcp", netip.AddrPortFrom(dst, streamPort).String())
		return err
	}); err != nil {
		return nil, fmt.Errorf("stream listener in %s: %w", dstNS, err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := s.ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	if err := kubenode.InNetNS(srcNS, func() error {
		var err error
		s.client, err = net.DialTimeout("tcp", netip.AddrPortFrom(dst, streamPort).String(), 5*time.Second)
		return err
	}); err != nil {
		s.ln.Close()
		return nil, fmt.Errorf("stream dial from %s: %w", srcNS, err)
	}
	server, ok := <-accepted
	if !ok {
		s.ln.Close()
		s.client.Close()
		return nil, errors.New("stream: no connection accepted")
	}
	s.wg.Add(2)
	go func() { // writer
		defer s.wg.Done()
		block := make([]byte, 1024)
		for seq := uint64(0); ; seq++ {
			select {
			case <-s.stopWrite:
				_ = s.client.(*net.TCPConn).CloseWrite()
				return
			case <-time.After(10 * time.Millisecond):
			}
			binary.BigEndian.PutUint64(block, seq)
			if _, err := s.client.Write(block); err != nil {
				s.fail(fmt.Errorf("write block %d: %w", seq, err))
				return
			}
		}
	}()
	go func() { // reader
		defer s.wg.Done()
		defer server.Close()
		block := make([]byte, 1024)
		last := time.Now()
		for seq := uint64(0); ; seq++ {
			if _, err := io.ReadFull(server, block); err != nil {
				if !errors.Is(err, io.EOF) {
					s.fail(fmt.Errorf("read block %d: %w", seq, err))
				}
				return
			}
			now := time.Now()
			s.mu.Lock()
			s.res.maxGap = max(s.res.maxGap, now.Sub(last))
			s.res.bytes += len(block)
			s.mu.Unlock()
			last = now
			if got := binary.BigEndian.Uint64(block); got != seq {
				s.fail(fmt.Errorf("block %d arrived as block %d", got, seq))
				return
			}
		}
	}()
	return s, nil
}

func (s *streamer) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.res.err == nil {
		s.res.err = err
	}
}

// stop ends the stream (the reader drains what is in flight, up to 30 s)
// and returns what arrived.
func (s *streamer) stop() streamResult {
	select {
	case <-s.stopWrite:
	default:
		close(s.stopWrite)
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			s.fail(errors.New("stream did not drain within 30s after the writer stopped"))
		}
		s.client.Close()
		s.ln.Close()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res
}

// testUninstall deletes the DaemonSet and the test pods, runs the
// documented uninstall (deploy/uninstall/uninstall.yaml: a DaemonSet that
// runs `wgmesh-agent uninstall` and `wgmesh-hostprep undo` on every node,
// and a Job that runs `wgmesh-agent uninstall --cluster`), then checks that
// no node holds a wgmesh route, rule, chain, link or file and that the API
// holds no wgmesh Lease, annotation, label or condition. A fresh install
// then comes up clean: every node Ready again, with a new key, and pods on
// every node reach each other.
func testUninstall(t *testing.T, kc *kubeletCluster) {
	ctx := t.Context()
	before := map[string]string{}
	for _, k := range kc.nodes {
		n, err := kc.Client.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		before[k.Name] = n.Annotations["wgmesh.io/public-key"]
	}
	// hostprep's label, as its sidecar sets it (the uninstall removes every wgmesh.io/ label).
	if _, err := kubenode.Kubectl(ctx, kc.Lab, "label", "node", kc.nodes[0].Name, "wgmesh.io/longhorn-ready=true"); err != nil {
		t.Fatal(err)
	}
	// Pods first, while the plugins are still there to release their
	// addresses (docs/install-k3s.md#uninstall).
	pods, err := kc.Client.CoreV1().Pods(kubeletPodNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	if err := kc.deletePods(ctx, names); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if _, err := kubenode.Kubectl(ctx, kc.Lab, "delete", "-k", kubenode.KubeletOverlay(kc.Lab), "--wait=true", "--timeout=120s"); err != nil {
		t.Fatal(err)
	}
	if err := kubeletPoll(ctx, 120*time.Second, func() error {
		for _, k := range kc.nodes {
			if p, err := kubenode.DaemonSetPod(ctx, kc.Lab, kubenode.DaemonSetName, k.Name); err == nil {
				return fmt.Errorf("wgmesh pod %s still on %s", p.Name, k.Name)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	manifest := kubenode.UninstallManifest(kc.Lab)
	if _, err := kubenode.Kubectl(ctx, kc.Lab, "apply", "-f", manifest); err != nil {
		t.Fatal(err)
	}
	if _, err := kubenode.WaitDaemonSet(ctx, kc.Lab, "wgmesh-uninstall", 180*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, kc.logs())
	}
	if _, err := kubenode.Kubectl(ctx, kc.Lab, "-n", kubenode.DaemonSetNamespace, "wait", "--for=condition=complete", "--timeout=180s", "job/wgmesh-uninstall-cluster"); err != nil {
		t.Fatalf("%v\n%s", err, kc.logs())
	}
	if _, err := kubenode.Kubectl(ctx, kc.Lab, "delete", "-f", manifest, "--wait=true", "--timeout=120s"); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)

	for _, k := range kc.nodes {
		for _, left := range nodeLeftovers(ctx, k) {
			t.Errorf("%s after uninstall: %s", k.Name, left)
		}
	}
	for _, left := range clusterLeftovers(ctx, kc) {
		t.Errorf("cluster after uninstall: %s", left)
	}
	t.Logf("FIGURE uninstall: DaemonSet deleted, deploy/uninstall applied and deleted in %s; nodes hold no wgmesh link, route, rule, chain or file; the API no wgmesh Lease, annotation, label or condition", took.Round(10*time.Millisecond))
	if t.Failed() {
		t.Log(kc.logs())
		return
	}

	// A fresh install on the same nodes.
	kc.installDaemonSet(t)
	var fresh []string
	for _, k := range kc.nodes {
		n, err := kc.Client.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if key := n.Annotations["wgmesh.io/public-key"]; key == "" || key == before[k.Name] {
			t.Errorf("%s after reinstall: public key %q (before the uninstall: %q); the uninstall removes the key", k.Name, key, before[k.Name])
		}
		for i := range 2 {
			name := fmt.Sprintf("fresh-%s-%d", k.Name, i)
			if err := kc.createPod(ctx, kubenode.WorkloadPod(name, k.Name)); err != nil {
				t.Fatal(err)
			}
			fresh = append(fresh, name)
		}
	}
	running, err := kc.waitRunning(ctx, fresh, 120*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, kc.logs())
	}
	kc.probeAll(t, ctx, running, 30*time.Second)
}

// nodeLeftovers lists what wgmesh left on the node: links (wgmesh0, cni0,
// pod veths), routes of protocol 87 in any table, rules looking up table
// 87, WGMESH chains in either iptables backend, and wgmesh's files.
func nodeLeftovers(ctx context.Context, k *kubenode.Node) []string {
	var left []string
	check := func(what string, argv ...string) {
		out, err := k.Run(ctx, argv...)
		if err != nil && !strings.Contains(out, "does not exist") {
			left = append(left, fmt.Sprintf("%s: %v: %s", strings.Join(argv, " "), err, out))
			return
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l != "" && !strings.Contains(l, "does not exist") && !strings.Contains(l, ": eth0@") && (what == "" || strings.Contains(strings.ToLower(l), what)) {
				left = append(left, strings.Join(argv, " ")+": "+l)
			}
		}
	}
	// Pod veths (the node's own eth0 into the underlay is one too).
	check("", "ip", "-o", "link", "show", "type", "veth")
	check("wgmesh", "ip", "-o", "link", "show")
	check("cni0", "ip", "-o", "link", "show")
	check("", "ip", "route", "show", "table", "all", "proto", "87")
	check("", "ip", "-6", "route", "show", "table", "all", "proto", "87")
	check("lookup 87", "ip", "rule", "show")
	check("lookup 87", "ip", "-6", "rule", "show")
	for _, save := range []string{"iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"} {
		if _, err := exec.LookPath(save); err == nil {
			check("wgmesh", save)
		}
	}
	for _, f := range []string{"opt-cni-bin/wgmesh", "opt-cni-bin/wgmesh-ipam", "etc-cni-net.d/10-wgmesh.conflist",
		"var-lib-cni/networks/wgmesh", "run-wgmesh/subnet.env", "var-lib-wgmesh/private.key", "run-wireguard/wgmesh0.sock"} {
		if _, err := os.Lstat(filepath.Join(k.Dir, f)); err == nil {
			left = append(left, "file "+f)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(k.Dir, "var-lib-cni", "results", "wgmesh-*")); len(m) > 0 {
		left = append(left, fmt.Sprintf("libcni results %v", m))
	}
	return left
}

// clusterLeftovers lists wgmesh's state left in the API.
func clusterLeftovers(ctx context.Context, kc *kubeletCluster) []string {
	var left []string
	nodes, err := kc.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return []string{err.Error()}
	}
	for _, n := range nodes.Items {
		for k := range n.Annotations {
			if strings.HasPrefix(k, "wgmesh.io/") {
				left = append(left, fmt.Sprintf("node %s annotation %s", n.Name, k))
			}
		}
		for k := range n.Labels {
			if strings.HasPrefix(k, "wgmesh.io/") {
				left = append(left, fmt.Sprintf("node %s label %s", n.Name, k))
			}
		}
		if c := kubenode.NodeCondition(&n, corev1.NodeNetworkUnavailable); c != nil {
			left = append(left, fmt.Sprintf("node %s condition NetworkUnavailable=%s (%s)", n.Name, c.Status, c.Reason))
		}
	}
	leases, err := kc.Client.CoordinationV1().Leases(kubenode.DaemonSetNamespace).List(ctx, metav1.ListOptions{LabelSelector: "wgmesh.io/subnet-lease"})
	if err != nil {
		return append(left, err.Error())
	}
	for _, l := range leases.Items {
		left = append(left, "lease "+l.Name)
	}
	for _, name := range []string{"wgmesh", "wgmesh-uninstall"} {
		if _, err := kc.Client.AppsV1().DaemonSets(kubenode.DaemonSetNamespace).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "daemonset "+name)
		}
	}
	return left
}
