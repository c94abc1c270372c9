package main

// The test harness: a "node" network namespace that plays the host (bridge,
// portmap's iptables, the mesh device), pod namespaces, a test-local
// subnet.env and IPAM data dir, and libcni driving the built binaries with
// the shipped conflist exactly as containerd does.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/wgmesh/wgmesh/internal/cnibench"
	"github.com/wgmesh/wgmesh/internal/netconv"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// repoRoot is two levels up from this package.
func repoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// binDirs are the CNI_PATH: our binaries, then the reference plugins
// (portmap, bandwidth, and bridge/host-local for the benchmark).
func binDirs(t testing.TB) []string {
	t.Helper()
	root := repoRoot(t)
	bin := envOr("WGMESH_BIN", filepath.Join(root, "bin"))
	ref := envOr("WGMESH_REF_BIN", filepath.Join(root, "bin", "ref"))
	for _, p := range []string{filepath.Join(bin, "wgmesh"), filepath.Join(bin, "wgmesh-ipam"), filepath.Join(ref, "portmap"), filepath.Join(ref, "bandwidth")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s is missing: run `make build ref-plugins` (or set WGMESH_BIN/WGMESH_REF_BIN): %v", p, err)
		}
	}
	return []string{bin, ref}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// lab is one node: its namespace, its files and a libcni client.
type lab struct {
	t          testing.TB
	node       ns.NetNS
	dir        string
	subnetFile string
	dataDir    string
	subnet     netip.Prefix
	nodeAddr   netip.Addr
	cni        *libcni.CNIConfig
	list       *libcni.NetworkConfigList
}

const testSubnet = "10.42.1.0/24"

func closeNetNS(n ns.NetNS) {
	_ = n.Close()
	_ = testutils.UnmountNS(n)
}

// newLab makes a node namespace with lo up and a node address on lo, and
// loads the shipped conflist with only subnetFile and ipam.dataDir pointed
// into a temp dir. subnet.env is written only if writeEnv.
func newLab(t testing.TB, writeEnv bool) *lab {
	t.Helper()
	testutil.RequireRoot(t)
	l := &lab{t: t, node: testns.New(t), dir: t.TempDir(), subnet: netip.MustParsePrefix(testSubnet), nodeAddr: netip.MustParseAddr("192.168.77.1")}
	l.subnetFile = filepath.Join(l.dir, "run", "subnet.env")
	l.dataDir = filepath.Join(l.dir, "ipam")
	err := l.node.Do(func(ns.NetNS) error {
		lo, err := netlinksafe.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		return netlink.AddrAdd(lo, &netlink.Addr{IPNet: netconv.IPNet(netip.PrefixFrom(l.nodeAddr, 32))})
	})
	if err != nil {
		t.Fatalf("set up node netns: %v", err)
	}
	if writeEnv {
		l.writeSubnetEnv()
	}
	l.list = l.loadConflist(filepath.Join(repoRoot(t), "conflist", "10-wgmesh.conflist"), nil)
	// Plugin stderr (their logs) is shown only when the test fails.
	logs := &testutil.LockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("plugin stderr (last 16 KiB):\n%s", logs.Tail(16<<10))
		}
	})
	l.cni = libcni.NewCNIConfigWithCacheDir(binDirs(t), filepath.Join(l.dir, "cache"),
		&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: logs}, PluginDecoder: version.PluginDecoder{}})
	return l
}

func (l *lab) writeSubnetEnv() {
	env := subnetenv.Env{Network: netip.MustParsePrefix("10.42.0.0/16"), Subnet: l.subnet, MTU: 1380, IPMasq: true}
	if err := subnetenv.Write(l.subnetFile, env); err != nil {
		l.t.Fatal(err)
	}
}

// loadConflist reads a conflist and rewrites only the paths of the first
// plugin (subnetFile, ipam.dataDir) into the lab's temp dir; edit may
// change the first plugin further (malformed-conf tests).
func (l *lab) loadConflist(path string, edit func(first map[string]any)) *libcni.NetworkConfigList {
	l.t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		l.t.Fatal(err)
	}
	var conf map[string]any
	if err := json.Unmarshal(data, &conf); err != nil {
		l.t.Fatal(err)
	}
	first := conf["plugins"].([]any)[0].(map[string]any)
	if _, ok := first["subnetFile"]; ok || first["type"] == "wgmesh" {
		first["subnetFile"] = l.subnetFile
	}
	if ipam, ok := first["ipam"].(map[string]any); ok {
		ipam["dataDir"] = l.dataDir
	}
	if edit != nil {
		edit(first)
	}
	out, _ := json.Marshal(conf)
	list, err := libcni.NetworkConfFromBytes(out)
	if err != nil {
		l.t.Fatalf("parse conflist: %v", err)
	}
	return list
}

// pod is a pod sandbox: its netns and the runtime's view of the attachment.
type pod struct {
	netns ns.NetNS
	rt    *libcni.RuntimeConf
	name  string
}

func (l *lab) newPod() *pod {
	l.t.Helper()
	n := testns.New(l.t)
	return newPodIn(n)
}

func newPodIn(n ns.NetNS) *pod {
	rt := cnibench.RuntimeConf(n.Path())
	return &pod{netns: n, name: cnibench.PodName(rt), rt: rt}
}

// inNode runs f in the node namespace, where the runtime (and so every
// plugin process it starts) lives.
func (l *lab) inNode(f func() error) error {
	return l.node.Do(func(ns.NetNS) error { return f() })
}

func (l *lab) add(ctx context.Context, p *pod) (*current.Result, error) {
	var res types.Result
	err := l.inNode(func() error {
		var err error
		res, err = l.cni.AddNetworkList(ctx, l.list, p.rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (l *lab) mustAdd(p *pod) *current.Result {
	l.t.Helper()
	r, err := l.add(context.Background(), p)
	if err != nil {
		l.t.Fatalf("ADD %s: %v", p.name, err)
	}
	return r
}

func (l *lab) del(p *pod) error {
	return l.inNode(func() error { return l.cni.DelNetworkList(context.Background(), l.list, p.rt) })
}

func (l *lab) check(p *pod) error {
	return l.inNode(func() error { return l.cni.CheckNetworkList(context.Background(), l.list, p.rt) })
}

func (l *lab) status() error {
	return l.inNode(func() error { return l.cni.GetStatusNetworkList(context.Background(), l.list) })
}

func (l *lab) gc(live []*pod) error {
	// Never nil: a runtime with no pod left sends an empty list, which
	// means "nothing is valid"; a missing list means "do not guess".
	args := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}
	for _, p := range live {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: p.rt.ContainerID, IfName: p.rt.IfName})
	}
	return l.inNode(func() error { return l.cni.GCNetworkList(context.Background(), l.list, args) })
}

// allocations are the addresses the IPAM holds (files named after an
// address in its data dir), mapped to the container ID holding them.
func (l *lab) allocations() map[netip.Addr]string {
	l.t.Helper()
	out := map[netip.Addr]string{}
	entries, err := os.ReadDir(filepath.Join(l.dataDir, l.list.Name))
	if errors.Is(err, os.ErrNotExist) {
		return out
	}
	if err != nil {
		l.t.Fatal(err)
	}
	for _, e := range entries {
		a, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(l.dataDir, l.list.Name, e.Name()))
		if err != nil {
			l.t.Fatal(err)
		}
		id, _, _ := strings.Cut(string(b), "\r\n")
		out[a] = strings.TrimSpace(id)
	}
	return out
}

// hostVeths are the veth names in the node namespace.
func (l *lab) hostVeths() []string {
	l.t.Helper()
	var names []string
	err := l.inNode(func() error {
		links, err := netlinksafe.LinkList()
		for _, lk := range links {
			if lk.Type() == "veth" {
				names = append(names, lk.Attrs().Name)
			}
		}
		return err
	})
	if err != nil {
		l.t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// podIP is the pod's IPv4 address from its ADD result.
func podIP(t testing.TB, r *current.Result) netip.Addr {
	t.Helper()
	for _, ipc := range r.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap().Is4() {
			return a.Unmap()
		}
	}
	t.Fatalf("result has no IPv4 address: %v", r)
	return netip.Addr{}
}

// ping sends ICMP echo requests from inside n until one is answered (up
// to 3 tries, 2 s each). In Go rather than the ping program, which minimal
// machines lack.
func ping(n ns.NetNS, to netip.Addr) error {
	return n.Do(func(ns.NetNS) error {
		network, proto, typ := "ip4:icmp", 1, icmp.Type(ipv4.ICMPTypeEcho)
		if to.Is6() {
			network, proto, typ = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest
		}
		c, err := icmp.ListenPacket(network, "")
		if err != nil {
			return fmt.Errorf("ping %s: %w", to, err)
		}
		defer c.Close()
		id := int(rand.Uint32() & 0xffff)
		var lastErr error
		for seq := 1; seq <= 3; seq++ {
			msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("wgmesh")}}
			b, _ := msg.Marshal(nil)
			if _, err := c.WriteTo(b, &net.IPAddr{IP: to.AsSlice()}); err != nil {
				lastErr = err
				continue
			}
			if lastErr = awaitEcho(c, proto, to, id, seq); lastErr == nil {
				return nil
			}
		}
		return fmt.Errorf("ping %s from %s: %w", to, n.Path(), lastErr)
	})
}

// awaitEcho reads until the echo reply with id/seq from `from` arrives.
func awaitEcho(c *icmp.PacketConn, proto int, from netip.Addr, id, seq int) error {
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, peer, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		p, _ := netip.AddrFromSlice(peer.(*net.IPAddr).IP)
		if ok && (m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) &&
			echo.ID == id && echo.Seq == seq && p.Unmap() == from {
			return nil
		}
	}
}

// cniCode is the CNI error code of err, or 0 if err is not a CNI error.
func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// linkIn reports whether a link called name exists in n.
func linkIn(t testing.TB, n ns.NetNS, name string) bool {
	t.Helper()
	found := false
	err := n.Do(func(ns.NetNS) error {
		_, err := netlinksafe.LinkByName(name)
		found = err == nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func removeAll(dir string) error { return os.RemoveAll(dir) }
