package main

import (
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/wgmesh/wgmesh/internal/cniconf"
)

// TestShippedConflist pins what the installer writes: CNI 1.1.0 (so
// containerd calls GC and STATUS), wgmesh with wgmesh-ipam, then portmap and
// bandwidth with the capabilities kubelet fills in, and no node-specific
// paths beyond the documented defaults.
func TestShippedConflist(t *testing.T) {
	path := filepath.Join(repoRoot(t), "conflist", "10-wgmesh.conflist")
	list, err := libcni.NetworkConfFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if list.CNIVersion != "1.1.0" || list.Name != "wgmesh" || len(list.Plugins) != 3 {
		t.Fatalf("conflist header: version %q name %q plugins %d", list.CNIVersion, list.Name, len(list.Plugins))
	}
	want := []struct {
		typ string
		cap string
	}{{"wgmesh", ""}, {"portmap", "portMappings"}, {"bandwidth", "bandwidth"}}
	for i, w := range want {
		p := list.Plugins[i].Network
		if p.Type != w.typ || (w.cap != "" && !p.Capabilities[w.cap]) {
			t.Errorf("plugin %d = %s %v, want %s with capability %q", i, p.Type, p.Capabilities, w.typ, w.cap)
		}
	}
	// libcni adds name and cniVersion to each plugin's config when it runs it.
	first, err := libcni.InjectConf(list.Plugins[0], map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cniconf.Parse(first.Bytes)
	if err != nil {
		t.Fatalf("the shipped wgmesh entry does not parse: %v", err)
	}
	if c.IPAM.Type != "wgmesh-ipam" || c.SubnetFile != cniconf.DefaultSubnetFile || c.Bridge != "cni0" || c.WireguardInterface != "wgmesh0" || !c.Hairpin() {
		t.Errorf("shipped wgmesh entry: %+v", c.NetConf)
	}
}
