package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// TestThroughLibcni drives the binary with libcni, the library containerd
// uses, to show the commands are wired as a runtime calls them: ADD, CHECK
// with the cached prevResult, STATUS, GC with the list libcni injects (it
// sends both cni.dev/valid-attachments and cni.dev/attachments), and DEL.
// wgmesh-ipam stands alone in the conflist here; in production the wgmesh
// plugin delegates the same configuration to it.
func TestThroughLibcni(t *testing.T) {
	e := newEnv(t, dualStack)
	list, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{
		"cniVersion": "1.1.0", "name": %q,
		"plugins": [{"type": "wgmesh-ipam", "ipam": {"type": "wgmesh-ipam", "subnetFile": %q, "dataDir": %q}}]
	}`, e.network, e.subnetFile, e.dataDir)))
	if err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{filepath.Dir(pluginPath)}, filepath.Join(e.dir, "cache"), &invoke.DefaultExec{RawExec: &invoke.RawExec{}})
	ctx := context.Background()
	rt := func(id string) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: id, NetNS: "/var/run/netns/" + id, IfName: "eth0"}
	}

	if err := cni.GetStatusNetworkList(ctx, list); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	addrs := map[string]string{}
	for _, id := range []string{"pod-a", "pod-b"} {
		r, err := cni.AddNetworkList(ctx, list, rt(id))
		if err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
		res, err := current.NewResultFromResult(r)
		if err != nil {
			t.Fatal(err)
		}
		addrs[id] = res.IPs[0].Address.IP.String()
		if err := cni.CheckNetworkList(ctx, list, rt(id)); err != nil {
			t.Fatalf("CHECK %s: %v", id, err)
		}
	}
	if addrs["pod-a"] == addrs["pod-b"] {
		t.Fatalf("both pods got %s", addrs["pod-a"])
	}
	// An allocation libcni knows nothing about (its cache was lost): only
	// our GC can find it.
	e.mustAdd(e.conf("1.1.0", "", ""), "pod-uncached")

	if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "pod-b", IfName: "eth0"}}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	got := e.allocations()
	if len(got) != 2 {
		t.Fatalf("after GC: %q, want pod-b's two addresses", got)
	}
	for a, owner := range got {
		if owner != "pod-b\r\neth0" {
			t.Errorf("%s owned by %q survived GC", a, owner)
		}
	}
	if err := cni.DelNetworkList(ctx, list, rt("pod-b")); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := cni.DelNetworkList(ctx, list, rt("pod-b")); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	if got := e.allocations(); len(got) != 0 {
		t.Fatalf("after DEL: %q", got)
	}
}
