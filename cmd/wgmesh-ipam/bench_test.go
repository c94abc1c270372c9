package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
)

// quietExec is invoke's default executor with the plugins' stderr (one log
// line per decision) discarded.
type quietExec struct {
	*invoke.RawExec
	version.PluginDecoder
}

// refBin is where `make ref-plugins` puts the reference plugins.
func refBin() string {
	if d := os.Getenv("WGMESH_REF_BIN"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "bin", "ref")
}

// BenchmarkAddDel measures one ADD plus one DEL, process start included, for
// wgmesh-ipam and for the reference host-local binary on the same /24 in the
// same run, as a runtime would call them.
func BenchmarkAddDel(b *testing.B) {
	dir := b.TempDir()
	subnetFile := filepath.Join(dir, "subnet.env")
	if err := os.WriteFile(subnetFile, []byte("WGMESH_SUBNET=10.42.1.0/24\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	hostLocal := filepath.Join(refBin(), "host-local")
	for _, p := range []struct {
		name, path, ipam string
	}{
		{"wgmesh-ipam", pluginPath, fmt.Sprintf(`{"type":"wgmesh-ipam","subnetFile":%q,"dataDir":%q}`, subnetFile, filepath.Join(dir, "wgmesh"))},
		{"host-local", hostLocal, fmt.Sprintf(`{"type":"host-local","ranges":[[{"subnet":"10.42.1.0/24"}]],"dataDir":%q}`, filepath.Join(dir, "host-local"))},
	} {
		b.Run(p.name, func(b *testing.B) {
			if _, err := os.Stat(p.path); err != nil {
				b.Skipf("%s: %v (run make ref-plugins)", p.path, err)
			}
			conf := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench","ipam":%s}`, p.ipam))
			quiet := &quietExec{RawExec: &invoke.RawExec{Stderr: io.Discard}}
			ctx := context.Background()
			i := 0
			for b.Loop() {
				id := fmt.Sprintf("bench-%d", i)
				i++
				if _, err := invoke.ExecPluginWithResult(ctx, p.path, conf, cniArgs("ADD", id, "eth0"), quiet); err != nil {
					b.Fatalf("ADD: %v", err)
				}
				if err := invoke.ExecPluginWithoutResult(ctx, p.path, conf, cniArgs("DEL", id, "eth0"), quiet); err != nil {
					b.Fatalf("DEL: %v", err)
				}
			}
		})
	}
}
