package agent

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/wgmesh/wgmesh/internal/kube"
	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
)

// setPodCIDR does what kube-controller-manager --allocate-node-cidrs does.
func setPodCIDR(t *testing.T, c *fake.Clientset, node, cidr string) {
	t.Helper()
	ctx := context.Background()
	n, err := c.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.PodCIDR, n.Spec.PodCIDRs = cidr, []string{cidr}
	if _, err := c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func subnetLeases(t *testing.T, c *fake.Clientset) []string {
	t.Helper()
	ls, err := c.CoordinationV1().Leases("kube-system").List(context.Background(), metav1.ListOptions{LabelSelector: kube.LabelSubnetLease})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls.Items {
		out = append(out, l.Name+" held by "+*l.Spec.HolderIdentity)
	}
	return out
}

func TestSpecPodCIDRWinsOverLeaseAndReleasesIt(t *testing.T) {
	// The agent started before the controller manager filled spec.podCIDR
	// and reserved a Lease; the spec appears later and must win.
	c := fake.NewClientset(apiNode("a", "", "192.168.0.1", wgtypes.Key{}))
	env := filepath.Join(t.TempDir(), "subnet.env")
	h := startAgentWith(t, c, "a", env, newKey(t), func(cfg *Config) { cfg.ReservationDelay = 0 })

	leased := h.dp.waitFor(t, "a reserves a subnet", func(s mesh.State) bool { return len(s.Subnets) == 1 })
	if got := subnetLeases(t, c); len(got) != 1 || got[0] != kube.SubnetLeaseName(leased.Subnets[0])+" held by a" {
		t.Fatalf("leases after reservation: %v (a uses %v)", got, leased.Subnets)
	}

	spec := netip.MustParsePrefix("10.42.7.0/24")
	if leased.Subnets[0] == spec {
		t.Fatalf("test needs the controller's subnet to differ from the reserved %v", leased.Subnets[0])
	}
	setPodCIDR(t, c, "a", spec.String())

	s := h.dp.waitFor(t, "a uses spec.podCIDR", func(s mesh.State) bool {
		return reflect.DeepEqual(s.Subnets, []netip.Prefix{spec})
	})
	eventually(t, "subnet.env holds spec.podCIDR", func() bool {
		e, err := subnetenv.Read(env)
		return err == nil && e.Subnet == spec
	})
	eventually(t, "a's lease released", func() bool { return len(subnetLeases(t, c)) == 0 })
	h.logs.waitFor(t, "subnet lease released")
	if len(s.Peers) != 0 {
		t.Errorf("peers %v", s.Peers)
	}
}

func TestNoLeaseWhenPodCIDRArrivesWithinReservationDelay(t *testing.T) {
	c := fake.NewClientset(apiNode("a", "", "192.168.0.1", wgtypes.Key{}))
	env := filepath.Join(t.TempDir(), "subnet.env")
	// A delay no test run reaches: the controller is always first.
	h := startAgentWith(t, c, "a", env, newKey(t), func(cfg *Config) { cfg.ReservationDelay = time.Hour })

	eventually(t, "agent waits for the controller", func() bool {
		err := h.agent.Ready()
		return err != nil && strings.Contains(err.Error(), "no spec.podCIDR yet; waiting up to 1h0m0s")
	})
	if _, err := os.Stat(env); !os.IsNotExist(err) {
		t.Fatalf("subnet.env exists while waiting: %v", err)
	}

	spec := netip.MustParsePrefix("10.42.7.0/24")
	setPodCIDR(t, c, "a", spec.String())
	h.dp.waitFor(t, "a uses spec.podCIDR", func(s mesh.State) bool {
		return reflect.DeepEqual(s.Subnets, []netip.Prefix{spec})
	})
	eventually(t, "agent ready", func() bool { return h.agent.Ready() == nil })
	if e, err := subnetenv.Read(env); err != nil || e.Subnet != spec {
		t.Fatalf("subnet.env = %+v, %v", e, err)
	}
	if n := countActions(c, "create", "leases", ""); n != 0 {
		t.Errorf("%d lease creates, want none", n)
	}
}

func TestReservationDelayEndsWithALease(t *testing.T) {
	// No controller fills the spec: after the delay the agent reserves,
	// woken by its own timer (no API event comes).
	c := fake.NewClientset(apiNode("a", "", "192.168.0.1", wgtypes.Key{}))
	env := filepath.Join(t.TempDir(), "subnet.env")
	h := startAgentWith(t, c, "a", env, newKey(t), func(cfg *Config) { cfg.ReservationDelay = 200 * time.Millisecond })

	s := h.dp.waitFor(t, "a reserves a subnet", func(s mesh.State) bool { return len(s.Subnets) == 1 })
	if got := subnetLeases(t, c); len(got) != 1 {
		t.Fatalf("leases: %v", got)
	}
	eventually(t, "subnet.env holds the reserved subnet", func() bool {
		e, err := subnetenv.Read(env)
		return err == nil && e.Subnet == s.Subnets[0]
	})
	logs := h.logs.String()
	wait, reserved := strings.Index(logs, "waiting before reserving a subnet"), strings.Index(logs, "subnet reserved")
	if wait < 0 || reserved < wait {
		t.Errorf("want the wait logged before the reservation:\n%s", logs)
	}
}

func TestOverlapWithThisNodeIsReportedOnBothNodes(t *testing.T) {
	// A mixed cluster: b got 10.42.0.0/24 from the controller manager, a
	// reserved the same subnet through a Lease (the Lease allocator cannot
	// know what the controller hands out).
	ctx := context.Background()
	c := fake.NewClientset(
		apiNode("a", "", "192.168.0.1", wgtypes.Key{}),
		apiNode("b", "10.42.0.0/24", "192.168.0.2", newKey(t).PublicKey()),
	)
	h := startAgent(t, c, "a", filepath.Join(t.TempDir(), "subnet.env"), newKey(t))
	s := h.dp.waitFor(t, "a reserves a subnet", func(s mesh.State) bool { return len(s.Subnets) == 1 })
	if s.Subnets[0] != netip.MustParsePrefix("10.42.0.0/24") {
		// The Lease allocator takes the first free subnet in address
		// order, and no Lease exists: anything else is a bug, not a reason
		// to skip.
		t.Fatalf("a reserved %v, want 10.42.0.0/24 (the first subnet)", s.Subnets)
	}
	if len(s.Peers) != 0 {
		t.Fatalf("overlapping peer programmed: %v", s.Peers)
	}
	eventually(t, "OverlappingPodCIDR events on a and b", func() bool {
		evs, _ := c.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		var onA, onB bool
		for _, e := range evs.Items {
			if e.Reason != mesh.ReasonOverlappingPodCIDR || e.Type != corev1.EventTypeWarning {
				continue
			}
			onA = onA || e.InvolvedObject.Name == "a" && strings.Contains(e.Message, "this node's pod CIDR 10.42.0.0/24 overlaps 10.42.0.0/24 of node b")
			onB = onB || e.InvolvedObject.Name == "b" && strings.Contains(e.Message, "a (this node)")
		}
		return onA && onB
	})
}

func TestReservationWait(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		since time.Duration // now - emptySince
		delay time.Duration
		want  time.Duration
	}{
		{0, 0, 0},
		{0, 30 * time.Second, 30 * time.Second},
		{10 * time.Second, 30 * time.Second, 20 * time.Second},
		{30 * time.Second, 30 * time.Second, 0},
		{time.Minute, 30 * time.Second, -30 * time.Second},
	} {
		if got := reservationWait(t0, t0.Add(tc.since), tc.delay); got != tc.want {
			t.Errorf("since %s delay %s: wait %s, want %s", tc.since, tc.delay, got, tc.want)
		}
	}
}
