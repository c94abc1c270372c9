package agent

import (
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// TestIntegrationAgentRecreatesKilledDevice: two nodes run the real agent
// with a userspace device and one pod each. Node a's device process is
// killed with SIGKILL (a crash, an OOM kill) while its agent runs; the
// agent must notice, create the device again and write the whole state
// back by itself, until the pods reach each other again. The time that
// takes is logged: the check interval, the new device process, the
// re-apply and the new handshake.
func TestIntegrationAgentRecreatesKilledDevice(t *testing.T) {
	testutil.RequireRoot(t)
	c := fake.NewClientset()
	nodes := newItNodes(t, c, 79, "k")
	startReady(t, c, nodes)
	// One pod per node on the cni0 the data plane created.
	pods := make([]ns.NetNS, len(nodes))
	for i, nd := range nodes {
		pods[i] = testns.AddPod(t, nd.netns, "cni0", 1400, netip.MustParsePrefix(fmt.Sprintf("10.42.%d.2/24", i)))
	}
	a := nodes[0]
	podA, podB := pods[0], pods[1]
	podIPA, podIPB := "10.42.0.2", "10.42.1.2"
	if _, err := untilPing(podA, podIPB, 20*time.Second); err != nil {
		t.Fatalf("pods do not reach each other before the kill: %v", err)
	}

	var pid int
	testns.Do(t, a.netns, func() error {
		var ok bool
		if pid, ok = wireguard.DevicePID(a.dev); !ok {
			return fmt.Errorf("no device process serves %s", a.dev)
		}
		return nil
	})
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Generous: the figure is logged, not asserted.
	if _, err := untilPing(podA, podIPB, 60*time.Second); err != nil {
		t.Fatalf("pods do not reach each other again after the device process was killed: %v\nagent log:\n%s", err, a.logs.String())
	}
	back := time.Since(killed)
	t.Logf("device process %d SIGKILLed under a running agent: pod a reaches pod b again after %s", pid, back.Round(time.Millisecond))
	if _, err := untilPing(podB, podIPA, 10*time.Second); err != nil {
		t.Errorf("pod b does not reach pod a: %v", err)
	}

	testns.Do(t, a.netns, func() error {
		now, ok := wireguard.DevicePID(a.dev)
		if !ok || now == pid {
			t.Errorf("device served by %d (ok %v) after %d was killed; want a new process", now, ok, pid)
		}
		return nil
	})
	logs := a.logs.String()
	for _, want := range []string{`msg="WireGuard device lost; reconciling to create it again"`, `msg="WireGuard device back"`} {
		line := ""
		for l := range strings.Lines(logs) {
			if strings.Contains(l, want) {
				line = l
				break
			}
		}
		if line == "" {
			t.Errorf("a's log lacks %s", want)
			continue
		}
		// Where the time went: the check's tick, the new device, the rest.
		f, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		if at, err := time.Parse(time.RFC3339Nano, f); err == nil {
			t.Logf("%s logged %s after the kill", want, at.Sub(killed).Round(time.Millisecond))
		}
	}
	if a.agent.Ready() != nil || a.agent.Healthy() != nil {
		t.Errorf("after the recovery: ready %v, healthy %v", a.agent.Ready(), a.agent.Healthy())
	}
}

// untilPing pings to from n until the first reply, or for at most
// timeout, and returns how long that took. One echo at a time, each given
// 200 ms: ping -c with -w would stop early at an ICMP error (no route
// while the device is gone), and a whole-second -W would blur the figure.
func untilPing(n ns.NetNS, to string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		_, err := testns.Run(n, "ping", "-n", "-q", "-c", "1", "-W", "0.2", to)
		if err == nil || time.Since(start) > timeout {
			return time.Since(start), err
		}
		time.Sleep(10 * time.Millisecond) // an ICMP error comes back at once
	}
}
