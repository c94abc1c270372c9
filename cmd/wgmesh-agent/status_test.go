package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/internal/dataplane"
	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

func TestWriteStatusNamesPeersAndShowsRouteState(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	kb, kc, stale := newPublicKey(t), newPublicKey(t), newPublicKey(t)
	st := dataplane.Status{
		Device: "wgmesh0", Mode: wireguard.ModeKernel, PublicKey: "SELFPUB", ListenPort: 51820, MTU: 1420, RouteTable: 87, RulePriority: 5187,
		Peers: []dataplane.PeerStatus{
			{PublicKey: kc, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.42.2.0/24")}},
			{PublicKey: kb, Endpoint: netip.MustParseAddrPort("192.168.0.2:51820"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.42.1.0/24")},
				LastHandshake: now.Add(-42 * time.Second), RxBytes: 123456, TxBytes: 789, Keepalive: 25 * time.Second},
			{PublicKey: stale, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.42.9.0/24")}},
		},
		Routes: []mesh.Route{{Node: "b", Dst: netip.MustParsePrefix("10.42.1.0/24"), Src: netip.MustParseAddr("10.42.0.1")}},
	}
	nodes := []mesh.Node{
		{Name: "a", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/24")}, PublicKey: "SELFPUB"},
		{Name: "b", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.1.0/24")}, PublicKey: kb},
		{Name: "c", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.2.0/24")}, PublicKey: kc},
	}
	var buf bytes.Buffer
	writeStatus(&buf, statusView{Status: st, Nodes: nodes, Now: now,
		Problems: []mesh.Problem{{Node: "d", Reason: mesh.ReasonMissingPublicKey, Message: "node d has no wgmesh.io/public-key annotation"}}})
	out := buf.String()
	t.Logf("\n%s", out)
	for _, want := range []string{
		"interface: wgmesh0 (kernel)",
		"peer: b\n  public key: " + kb + "\n  endpoint: 192.168.0.2:51820\n  pod subnets: 10.42.1.0/24\n  allowed ips: 10.42.1.0/24\n  latest handshake: 42s ago\n  transfer: 120.56 KiB received, 789 B sent\n  persistent keepalive: every 25s\n  route: 10.42.1.0/24 dev wgmesh0 src 10.42.0.1 table 87: ok\n",
		"peer: c\n",
		"latest handshake: never",
		"route: 10.42.2.0/24: MISSING",
		"peer: (no node has this key: stale, the agent removes it)",
		"  d: MissingPublicKey: node d has no wgmesh.io/public-key annotation",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q", want)
		}
	}
	// Peers are listed by node name.
	if strings.Index(out, "peer: b") > strings.Index(out, "peer: c") || strings.Index(out, "peer: c") > strings.Index(out, "peer: (no node") {
		t.Error("peers not sorted by node name, unknown keys last")
	}
}

func newPublicKey(t *testing.T) string {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}
