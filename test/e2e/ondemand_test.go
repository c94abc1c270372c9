//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// onDemandIdle is the agents' --userspace-peer-idle in this scenario: short,
// so that the devices trim their peers within the test.
const onDemandIdle = 2 * time.Second

// TestOnDemandPeersCarryPodTraffic runs the agents with on-demand peers
// (WGMESH_USERSPACE_PEER_IDLE): each userspace device programs a peer into
// wireguard-go on the first packet toward its pods or from it, and removes
// it again once idle. Pods on every node reach pods on every other node,
// then, once every device has removed all its peers, again (each direction
// wakes its peer); wg still shows every peer with its subnet meanwhile.
func TestOnDemandPeersCarryPodTraffic(t *testing.T) {
	c := newCluster(t, lab.Config{AgentEnv: []string{"WGMESH_USERSPACE_PEER_IDLE=" + onDemandIdle.String()}}, 3, 1)
	ctx := t.Context()
	requireMatrix(t, ctx, c, c.pods)

	for _, n := range c.Nodes() {
		if err := waitAllTrimmed(ctx, n, 10*onDemandIdle); err != nil {
			t.Fatalf("%s: %v\n%s", n.Name, err, c.meshDump(ctx))
		}
		peers, err := n.WGPeers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(peers) != len(c.Nodes())-1 {
			t.Errorf("%s: wg shows %d peers with all of them idle, want %d: %+v", n.Name, len(peers), len(c.Nodes())-1, peers)
		}
		for _, p := range peers {
			if len(p.AllowedIPs) != 1 {
				t.Errorf("%s: idle peer %s has allowed IPs %v, want its pod subnet", n.Name, p.PublicKey, p.AllowedIPs)
			}
		}
	}
	before := activations(ctx, t, c)
	requireMatrix(t, ctx, c, c.pods)
	if after := activations(ctx, t, c); after <= before {
		t.Errorf("pod traffic after the trim programmed no peer (device logs: %d programmings before, %d after)", before, after)
	}
}

// deviceLog is the device process's log in a lab node (lab agents run it
// with debug messages on).
var deviceLog = "/run/wgmesh/" + lab.AgentInterface + "-device.log"

var (
	trimmedLine    = regexp.MustCompile(`idle peers removed from wireguard-go.*programmed=(\d+)`)
	programmedLine = regexp.MustCompile(`peer programmed on demand`)
)

// waitAllTrimmed waits until n's device log says it has removed its last
// programmed peer.
func waitAllTrimmed(ctx context.Context, n *lab.Node, timeout time.Duration) error {
	return lab.WaitReachable(ctx, func(ctx context.Context) error {
		log, err := n.Run(ctx, "cat", deviceLog)
		if err != nil {
			return err
		}
		m := trimmedLine.FindAllStringSubmatch(log, -1)
		if len(m) == 0 || m[len(m)-1][1] != "0" {
			return fmt.Errorf("the device has not removed all its peers: %d trims logged", len(m))
		}
		return nil
	}, timeout)
}

// activations counts, over every node, the peers the devices programmed on
// a packet.
func activations(ctx context.Context, t *testing.T, c *cluster) int {
	t.Helper()
	total := 0
	for _, n := range c.Nodes() {
		log, err := n.Run(ctx, "cat", deviceLog)
		if err != nil {
			t.Fatal(err)
		}
		total += len(programmedLine.FindAllString(log, -1))
	}
	return total
}
