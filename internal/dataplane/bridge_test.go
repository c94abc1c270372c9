package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/internal/link"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// The node's pod subnets in these tests, and the bridge config the plugin
// derives from them (plugins/wgmesh gateways: first address, subnet's
// length), with the MTU both the agent and subnet.env carry.
var (
	bridgeTestSubnets = []netip.Prefix{netip.MustParsePrefix("10.42.1.0/24"), netip.MustParsePrefix("fd42:0:0:1::/64")}
	pluginBridge      = link.BridgeConfig{
		Name: "cni0", MTU: 1420,
		Gateways: []netip.Prefix{netip.MustParsePrefix("10.42.1.1/24"), netip.MustParsePrefix("fd42:0:0:1::1/64")},
	}
)

// agentEnsure is the agent's path: what Dataplane.Apply runs for the bridge.
func agentEnsure() (int, error) { return ensureGateways("cni0", bridgeTestSubnets, 1420) }

// pluginEnsure is the plugin's path: what ADD runs before it creates the veth.
func pluginEnsure() (*netlink.Bridge, int, error) { return link.EnsureBridge(pluginBridge) }

// bridgeMAC is cni0's MAC in the calling thread's namespace.
func bridgeMAC() (string, error) {
	l, err := netlinksafe.LinkByName("cni0")
	if err != nil {
		return "", err
	}
	return l.Attrs().HardwareAddr.String(), nil
}

// addPod is the plugin's ADD as far as the bridge sees it: EnsureBridge,
// then a veth into the pod's namespace, attached to the bridge.
func addPod(pod ns.NetNS, id string) (string, error) {
	br, _, err := pluginEnsure()
	if err != nil {
		return "", err
	}
	v, err := link.CreateVeth(link.VethConfig{
		Owner:         link.Owner{Network: "wgmesh", ContainerID: id, IfName: "eth0"},
		ContainerName: "eth0", NetNSFd: int(pod.Fd()), MTU: 1420, Bridge: br, Hairpin: true,
	})
	return v.HostName, err
}

// TestBridgeMACStaysAsPodsComeAndGo: the agent makes cni0 before any pod;
// pods then come and go through the plugin's path, the agent reconciling in
// between, and cni0's MAC never changes. A bridge without a MAC of its own
// takes the lowest MAC of its ports, so before the agent used link's
// EnsureBridge its cni0 changed MAC at the first pod.
func TestBridgeMACStaysAsPodsComeAndGo(t *testing.T) {
	testutil.RequireRoot(t)
	node := testns.New(t)
	pods := []ns.NetNS{testns.New(t), testns.New(t), testns.New(t)}

	testns.Do(t, node, func() error {
		if _, err := agentEnsure(); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		want, err := bridgeMAC()
		if err != nil {
			return err
		}
		same := func(after string) error {
			got, err := bridgeMAC()
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("after %s, cni0 has MAC %s, had %s from the agent", after, got, want)
			}
			return nil
		}
		var hosts []string
		for i, pod := range pods {
			host, err := addPod(pod, fmt.Sprintf("pod%d", i))
			if err != nil {
				return fmt.Errorf("add pod %d: %w", i, err)
			}
			hosts = append(hosts, host)
			if err := same(fmt.Sprintf("adding pod %d (port %s)", i, host)); err != nil {
				return err
			}
			if _, err := agentEnsure(); err != nil {
				return fmt.Errorf("agent after pod %d: %w", i, err)
			}
			if err := same(fmt.Sprintf("the agent's apply after pod %d", i)); err != nil {
				return err
			}
		}
		for i, host := range hosts {
			if removed, err := link.DeleteHostVeth(host); err != nil || !removed {
				return fmt.Errorf("delete pod %d's veth %s: removed %v, %v", i, host, removed, err)
			}
			if err := same(fmt.Sprintf("removing pod %d", i)); err != nil {
				return err
			}
		}
		// The bridge outlives its last pod: nobody deletes it.
		_, err = netlinksafe.LinkByName("cni0")
		return err
	})
}

// bridgeState is what the tests compare of cni0: everything either path
// sets, with the MAC reduced to its kind (it is random per bridge).
type bridgeState struct {
	Up               bool
	MTU              int
	AcceptRA         string
	Gateways         []string // with "nodad" when IFA_F_NODAD, "tentative" when DAD holds it
	LocalUnicastMAC  bool
	MACFixedOnAttach bool // unchanged when a port with a lower MAC joins
	SecondCallWrites [2]int
}

// readBridge reads cni0's state in the calling thread's namespace, then
// attaches a port with the lowest possible MAC (which an unfixed bridge
// would take) and checks the MAC stayed.
func readBridge(pod ns.NetNS) (bridgeState, error) {
	var st bridgeState
	l, err := netlinksafe.LinkByName("cni0")
	if err != nil {
		return st, err
	}
	a := l.Attrs()
	st.Up = a.Flags&net.FlagUp != 0
	st.MTU = a.MTU
	mac := a.HardwareAddr
	st.LocalUnicastMAC = len(mac) == 6 && mac[0]&0x02 != 0 && mac[0]&0x01 == 0
	ra, err := os.ReadFile("/proc/sys/net/ipv6/conf/cni0/accept_ra")
	if err != nil {
		return st, err
	}
	st.AcceptRA = strings.TrimSpace(string(ra))
	addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return st, err
	}
	for _, ad := range addrs {
		if ad.IP.IsLinkLocalUnicast() {
			continue
		}
		s := ad.IPNet.String()
		if ad.Flags&unix.IFA_F_NODAD != 0 {
			s += " nodad"
		}
		if ad.Flags&unix.IFA_F_TENTATIVE != 0 {
			s += " tentative"
		}
		st.Gateways = append(st.Gateways, s)
	}
	slices.Sort(st.Gateways)

	// A port whose MAC is below any random one: an unfixed bridge takes it.
	low := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "lowport", HardwareAddr: net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, MasterIndex: a.Index},
		PeerName:      "eth9",
		PeerNamespace: netlink.NsFd(int(pod.Fd())),
	}
	if err := netlink.LinkAdd(low); err != nil {
		return st, fmt.Errorf("add low-MAC port: %w", err)
	}
	defer netlink.LinkDel(low)
	after, err := bridgeMAC()
	if err != nil {
		return st, err
	}
	st.MACFixedOnAttach = after == mac.String()
	return st, nil
}

// TestBridgeSameWhicheverPathFirst: the agent (before any pod) and the
// plugin (on ADD) can each be the one that creates cni0; either way, after
// both ran, it is the same bridge: up, the MTU, router advertisements
// ignored, both gateways without DAD, a fixed MAC. Neither path then has
// anything left to write.
func TestBridgeSameWhicheverPathFirst(t *testing.T) {
	testutil.RequireRoot(t)
	want := bridgeState{
		Up: true, MTU: 1420, AcceptRA: "0",
		Gateways:        []string{"10.42.1.1/24", "fd42:0:0:1::1/64 nodad"},
		LocalUnicastMAC: true, MACFixedOnAttach: true,
	}
	orders := map[string][2]func() error{
		"agent first":  {func() error { _, err := agentEnsure(); return err }, func() error { _, _, err := pluginEnsure(); return err }},
		"plugin first": {func() error { _, _, err := pluginEnsure(); return err }, func() error { _, err := agentEnsure(); return err }},
	}
	for name, order := range orders {
		t.Run(name, func(t *testing.T) {
			node, pod := testns.New(t), testns.New(t)
			var got bridgeState
			testns.Do(t, node, func() error {
				for _, ensure := range order {
					if err := ensure(); err != nil {
						return err
					}
				}
				var err error
				if got, err = readBridge(pod); err != nil {
					return err
				}
				n, err := agentEnsure()
				if err != nil {
					return err
				}
				got.SecondCallWrites[0] = n
				_, n, err = pluginEnsure()
				got.SecondCallWrites[1] = n
				return err
			})
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("cni0 = %+v\nwant   %+v", got, want)
			}
		})
	}
}
