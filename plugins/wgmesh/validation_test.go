package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/wgmesh/wgmesh/internal/cnicode"
)

// Input that can never work is refused before anything exists: no bridge,
// no veth, no address, no pod interface, and the error names the field.
func TestImpossibleInputIsRefusedBeforeAnythingIsMade(t *testing.T) {
	ipamEdit := func(f func(ipam map[string]any)) func(map[string]any) {
		return func(m map[string]any) { f(m["ipam"].(map[string]any)) }
	}
	ranges := func(r map[string]any) func(map[string]any) {
		return ipamEdit(func(ipam map[string]any) { ipam["ranges"] = []any{[]any{r}} })
	}
	for _, c := range []struct {
		name      string
		edit      func(map[string]any)
		subnetEnv string // replaces subnet.env when set
		code      uint
		msg       string
		network   string // renames the network when set
	}{
		{"relative ipam.dataDir", ipamEdit(func(ipam map[string]any) { ipam["dataDir"] = "cni/networks" }), "", types.ErrInvalidNetworkConfig, `ipam.dataDir "cni/networks" must be an absolute path`, ""},
		{"rangeStart is the network address", ranges(map[string]any{"subnet": "10.99.0.0/24", "rangeStart": "10.99.0.0"}), "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0]: rangeStart 10.99.0.0 is the network address", ""},
		{"rangeEnd is the broadcast address", ranges(map[string]any{"subnet": "10.99.0.0/24", "rangeEnd": "10.99.0.255"}), "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0]: rangeEnd 10.99.0.255 is the broadcast address", ""},
		{"explicit multicast range", ranges(map[string]any{"subnet": "239.1.0.0/24"}), "", types.ErrInvalidNetworkConfig, "subnet 239.1.0.0/24 is not a unicast range usable for pods", ""},
		{"network name too long for a directory", nil, "", types.ErrInvalidNetworkConfig, "name is 300 bytes long", strings.Repeat("n", 300)},
		{"multicast node subnet", nil, "WGMESH_SUBNET=224.0.1.0/24\n", cnicode.SubnetEnvInvalid, "WGMESH_SUBNET=224.0.1.0/24 is not a unicast range usable for pods: it overlaps multicast", ""},
		{"link-local node subnet", nil, "WGMESH_SUBNET=169.254.1.0/24\n", cnicode.SubnetEnvInvalid, "overlaps link-local", ""},
		{"loopback node subnet", nil, "WGMESH_SUBNET=127.42.1.0/24\n", cnicode.SubnetEnvInvalid, "overlaps loopback", ""},
		{"all-zero node subnet", nil, "WGMESH_SUBNET=0.0.0.0/24\n", cnicode.SubnetEnvInvalid, "overlaps all-zero", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newLab(t, true)
			if c.subnetEnv != "" {
				if err := os.WriteFile(l.subnetFile, []byte(c.subnetEnv), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if c.edit != nil {
				l.list = l.loadConflist(repoRoot(t)+"/conflist/10-wgmesh.conflist", c.edit)
			}
			if c.network != "" {
				l.list = l.renamed(c.network)
			}
			p := l.newPod()
			_, err := l.add(context.Background(), p)
			if cniCode(err) != c.code || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("ADD = %v (code %d), want code %d and %q", err, cniCode(err), c.code, c.msg)
			}
			t.Logf("ADD says: %v", err)
			assertNothingLeft(t, l, p)
			if err := l.inNode(func() error { _, err := netlinksafe.LinkByName("cni0"); return err }); err == nil {
				t.Errorf("the refused ADD created bridge cni0")
			}
			if err := l.del(p); err != nil {
				t.Errorf("DEL after the refused ADD: %v", err)
			}
		})
	}
}

// Names and IDs without a length limit in CNI (network name, container ID)
// never overflow the kernel's: the veth alias shortens them. These two
// made a 263-byte alias, which the kernel refused (the limit is 255), and
// the half-made veth stayed behind. (Longer ones than these make libcni's
// own cache file name, <network>-<containerID>-<ifname>, too long.)
func TestLongNetworkNameAndContainerIDWork(t *testing.T) {
	l := newLab(t, true)
	l.list = l.renamed(strings.Repeat("w", 110))
	p := l.newPod()
	p.rt.ContainerID = strings.Repeat("c", 130)
	r := l.mustAdd(p)
	if err := ping(p.netns, l.subnet.Addr().Next()); err != nil {
		t.Errorf("pod %s: %v", podIP(t, r), err)
	}
	if err := l.gc([]*pod{p}); err != nil {
		t.Fatalf("GC keeping the pod: %v", err)
	}
	if len(l.hostVeths()) != 1 {
		t.Fatalf("GC removed the valid pod's veth")
	}
	if err := l.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	assertNothingLeft(t, l, p)
}

// renamed is the shipped conflist under another network name.
func (l *lab) renamed(network string) *libcni.NetworkConfigList {
	l.t.Helper()
	data, err := os.ReadFile(repoRoot(l.t) + "/conflist/10-wgmesh.conflist")
	if err != nil {
		l.t.Fatal(err)
	}
	var conf map[string]any
	if err := json.Unmarshal(data, &conf); err != nil {
		l.t.Fatal(err)
	}
	conf["name"] = network
	out, _ := json.Marshal(conf)
	path := filepath.Join(l.dir, "renamed.conflist")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		l.t.Fatal(err)
	}
	return l.loadConflist(path, nil)
}
