//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// capture runs tcpdump on the underlay bridge until stop is called, and
// returns the pcap path.
func capture(t *testing.T, c *cluster) (pcap string, stop func()) {
	t.Helper()
	pcap = filepath.Join(c.Dir, fmt.Sprintf("underlay-%d.pcap", time.Now().UnixNano()))
	cmd := exec.Command("ip", "netns", "exec", c.UnderlayNetNS(), "tcpdump", "-i", lab.UnderlayBridge, "-U", "-n", "-s", "0", "-w", pcap)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "listening on") {
				once = true
				close(listening)
			}
		}
	}()
	select {
	case <-listening:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("tcpdump did not start listening")
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
	}
	t.Cleanup(stop)
	return pcap, stop
}

func TestUnderlayCarriesOnlyWireGuardBetweenNodesNeverThePayload(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	payload := "WGMESH-SECRET-" + hex.EncodeToString(b)
	// ping's -p fills the ICMP payload with a hex pattern (16 bytes at most).
	pattern := hex.EncodeToString([]byte("wgmesh-icmp-pat!"))

	pcap, stop := capture(t, c)
	sent := 0
	for _, a := range c.pods {
		for _, z := range c.pods {
			if a.Node == z.Node {
				continue
			}
			if err := lab.WaitReachable(ctx, func(ctx context.Context) error { return a.ProbeTCP(ctx, z.IP, payload) }, 5*time.Second); err != nil {
				t.Errorf("TCP %s -> %s: %v", a.Name, z.Name, err)
			}
			if _, err := a.Run(ctx, "ping", "-q", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-p", pattern, z.IP.String()); err != nil {
				t.Errorf("ICMP %s -> %s: %v", a.Name, z.Name, err)
			}
			sent++
		}
	}
	time.Sleep(300 * time.Millisecond)
	stop()

	raw, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(payload)) {
		t.Errorf("the TCP payload %q appears in clear on the underlay (%s)", payload, pcap)
	}
	if bytes.Contains(raw, []byte("wgmesh-icmp-pat!")) {
		t.Errorf("the ICMP payload pattern appears in clear on the underlay (%s)", pcap)
	}

	// Every IP packet between two node addresses is WireGuard UDP.
	nodeAddr := map[string]bool{}
	for _, n := range c.Nodes() {
		nodeAddr[n.Addr.String()] = true
	}
	out, err := exec.Command("tcpdump", "-r", pcap, "-n", "-q", "-t", "ip").CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, out)
	}
	wg, other := 0, 0
	port := fmt.Sprint(lab.ListenPort)
	for _, line := range strings.Split(string(out), "\n") {
		// "IP 172.31.0.11.51820 > 172.31.0.12.51820: UDP, length 148"
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "IP" {
			continue
		}
		src, dst := splitHostPort(f[1]), splitHostPort(strings.TrimSuffix(f[3], ":"))
		if !nodeAddr[src[0]] || !nodeAddr[dst[0]] {
			continue // node <-> control plane (the API over TLS)
		}
		if strings.Contains(line, "UDP") && (src[1] == port || dst[1] == port) {
			wg++
			continue
		}
		other++
		if other <= 10 {
			t.Errorf("non-WireGuard packet between nodes on the underlay: %s", line)
		}
	}
	t.Logf("underlay capture: %d WireGuard UDP packets between nodes, %d other, for %d pod pairs", wg, other, sent)
	if wg == 0 {
		t.Errorf("no WireGuard packets captured on the underlay while pods talked")
	}
}

// splitHostPort splits tcpdump's "a.b.c.d.port" into address and port.
func splitHostPort(s string) [2]string {
	i := strings.LastIndexByte(s, '.')
	if i < 0 || strings.Count(s, ".") != 4 {
		return [2]string{s, ""}
	}
	return [2]string{s[:i], s[i+1:]}
}
