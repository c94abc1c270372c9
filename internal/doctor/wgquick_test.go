package doctor

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

func TestEndpointOnWireGuardFinding(t *testing.T) {
	for _, tt := range []struct {
		name string
		wg   *WireGuardLink
		want string // "" no finding
	}{
		{name: "ordinary link", wg: nil},
		{name: "kernel wg0 with peers", wg: &WireGuardLink{Name: "wg0", Kind: "kernel", Peers: 3}, want: "a kernel WireGuard device that is not wgmesh0: wgmesh's tunnel runs inside it, through its 3 peer(s)"},
		{name: "kernel wg0 not asked", wg: &WireGuardLink{Name: "wg0", Kind: "kernel", Peers: -1}, want: "through its peers;"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{Device: "wgmesh0", Kernel: Kernel{NodeAddr: netip.MustParseAddr("10.0.0.1"), UnderlayWireGuard: tt.wg}}
			var got []Finding
			for _, f := range Check(context.Background(), in) {
				if f.ID == "EndpointOnWireGuard" {
					got = append(got, f)
				}
			}
			if tt.want == "" {
				if len(got) != 0 {
					t.Fatalf("unexpected %s", got[0])
				}
				return
			}
			if len(got) != 1 || got[0].Severity != SeverityWarning || !strings.Contains(got[0].Message, tt.want) ||
				!strings.Contains(got[0].Fix, "only then wg-quick down wg0 && systemctl disable wg-quick@wg0") {
				t.Fatalf("findings %v, want a warning with %q", got, tt.want)
			}
		})
	}
}
