package wireguard

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/wgmesh/wgmesh/internal/wireguard/uapi"
)

// newDownOnDemand is on-demand bookkeeping over a wireguard-go device that
// is never brought up: it opens no socket and needs no privilege, and its
// UAPI answers as a running one does.
func newDownOnDemand(t testing.TB) *onDemand {
	t.Helper()
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	t.Cleanup(dev.Close)
	od := newOnDemand(0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	od.dev = dev
	return od
}

func (od *onDemand) setText(t testing.TB, body string) {
	t.Helper()
	s, err := uapi.ReadSet(bufio.NewReader(strings.NewReader(body + "\n")))
	if err != nil {
		t.Fatal(err)
	}
	if err := od.set(s); err != nil {
		t.Fatal(err)
	}
}

// testKey is a distinct public key for i.
func testKey(i int) string { return fmt.Sprintf("%064x", i+1) }

// TestOnDemandSubnetOwnership: a subnet given to another peer, or taken
// from its peer, leads packets to that peer only, whether the peers are
// parked or not, as wireguard-go's own table would.
func TestOnDemandSubnetOwnership(t *testing.T) {
	od := newDownOnDemand(t)
	a, b := testKey(1), testKey(2)
	s1, s2 := netip.MustParsePrefix("10.42.1.0/24"), netip.MustParsePrefix("10.42.2.0/24")
	owner := func() map[netip.Prefix]string { return od.parked.Load().bySubnet }

	od.setText(t, "public_key="+a+"\nendpoint=192.0.2.1:51820\nallowed_ip=10.42.1.0/24\nallowed_ip=10.42.2.0/24\n"+
		"public_key="+b+"\nendpoint=192.0.2.2:51820\n")
	if got := owner(); got[s1] != a || got[s2] != a {
		t.Fatalf("parked subnets %v, want both with a", got)
	}

	od.setText(t, "public_key="+b+"\nallowed_ip=10.42.2.0/24\n") // taken from a
	if got := owner(); got[s1] != a || got[s2] != b {
		t.Fatalf("after b took 10.42.2.0/24: %v", got)
	}
	if got := od.peers[a].AllowedIPs; len(got) != 1 || got[0] != s1 {
		t.Fatalf("a keeps %v, want only %v", got, s1)
	}

	od.setText(t, "public_key="+a+"\nreplace_allowed_ips=true\n") // a gives up its last
	if got := owner(); len(got) != 1 || got[s2] != b {
		t.Fatalf("after a gave up 10.42.1.0/24: %v", got)
	}
	if _, ok := od.owner[s1]; ok {
		t.Fatalf("10.42.1.0/24 still has an owner: %v", od.owner)
	}

	od.setText(t, "public_key="+b+"\nremove=true\n")
	if len(od.owner) != 0 || len(owner()) != 0 {
		t.Fatalf("after b's removal: owners %v, parked %v", od.owner, owner())
	}
}

// BenchmarkOnDemandFirstSet is the cost of the agent's first set: every
// peer at once, parked (the work grows with the peers, not their square).
func BenchmarkOnDemandFirstSet(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		var body strings.Builder
		for i := range n {
			fmt.Fprintf(&body, "public_key=%s\nendpoint=192.0.2.%d:51820\nreplace_allowed_ips=true\nallowed_ip=10.%d.%d.0/24\n",
				testKey(i), i%250+1, 64+i/256, i%256)
		}
		s, err := uapi.ReadSet(bufio.NewReader(strings.NewReader(body.String() + "\n")))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			for b.Loop() {
				od := newDownOnDemand(b)
				if err := od.set(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
