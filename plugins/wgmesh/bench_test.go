package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/wgmesh/wgmesh/internal/cnibench"
	"github.com/wgmesh/wgmesh/internal/testns"
)

// BenchmarkCNIAddDel measures the latency of one ADD+DEL through libcni
// for wgmesh+wgmesh-ipam and for the reference bridge+host-local with the
// same subnet, MTU and namespace setup, one at a time and 16 at a time.
// The two run interleaved (each worker alternates), each in its own node
// namespace, so load from anything else on the machine hits both alike.
// It prints a table with p50/p99 and the ratio wgmesh/reference;
// `make bench-cni` runs it.
func BenchmarkCNIAddDel(b *testing.B) {
	impls := []string{"wgmesh", "reference"}
	if os.Getenv("WGMESH_BENCH_HOSTLOCAL") != "" {
		impls = append(impls, "wgmesh-hostlocal")
	}
	type row struct {
		mode     string
		lat, cpu map[string]cnibench.Durations
	}
	var rows []row
	for _, mode := range []struct {
		name     string
		parallel int
	}{{"seq", 1}, {"conc16", 16}} {
		b.Run(mode.name, func(b *testing.B) {
			var chains []cnibench.Chain
			for _, impl := range impls {
				l := newLab(b, true)
				chains = append(chains, cnibench.Chain{Name: impl, Node: l.node, CNI: l.cni, List: benchConflist(b, l, impl)})
			}
			// One pod namespace per worker and chain, made before the clock starts.
			pods := make([][]string, mode.parallel)
			for w := range pods {
				for range chains {
					pods[w] = append(pods[w], testns.New(b).Path())
				}
			}
			b.ResetTimer()
			lat, cpu, err := cnibench.AddDel(b.Context(), chains, pods, b.N)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			for _, impl := range impls {
				b.ReportMetric(lat[impl].Pct(50), impl+"-p50-ms")
				b.ReportMetric(lat[impl].Pct(99), impl+"-p99-ms")
				if len(cpu[impl]) > 0 {
					b.ReportMetric(cpu[impl].Pct(50), impl+"-cpu-p50-ms")
				}
			}
			// The benchmark framework probes with b.N=1 first: keep the last run.
			rows = slices.DeleteFunc(rows, func(r row) bool { return r.mode == mode.name })
			rows = append(rows, row{mode.name, lat, cpu})
		})
	}
	if len(rows) == 0 {
		return
	}
	fmt.Printf("\nADD+DEL latency through libcni, ms (%s)\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("%-7s %-17s %6s %9s %9s %10s %10s %12s %10s\n", "mode", "plugin", "cycles", "p50", "p99", "p50 ratio", "p99 ratio", "CPU p50", "CPU ratio")
	for _, r := range rows {
		ref, refCPU := r.lat["reference"], r.cpu["reference"]
		for _, impl := range impls {
			l, c := r.lat[impl], r.cpu[impl]
			cpuCols := fmt.Sprintf("%12s %10s", "-", "-")
			if len(c) > 0 {
				cpuCols = fmt.Sprintf("%12.1f %10.2f", c.Pct(50), c.Pct(50)/refCPU.Pct(50))
			}
			fmt.Printf("%-7s %-17s %6d %9.1f %9.1f %10.2f %10.2f %s\n", r.mode, impl, len(l), l.Pct(50), l.Pct(99), l.Pct(50)/ref.Pct(50), l.Pct(99)/ref.Pct(99), cpuCols)
		}
	}
	fmt.Printf("(wall-clock p50/p99 per ADD+DEL; CPU = user+sys of every plugin process of one cycle, sequential mode only)\n")
}

// benchConflist is a one-plugin list: the shipped conflist's wgmesh entry
// (portmap and bandwidth are the same reference binaries in both chains,
// so they are left out), or the reference bridge with host-local on the
// same subnet.
func benchConflist(b *testing.B, l *lab, impl string) *libcni.NetworkConfigList {
	var plugin map[string]any
	switch impl {
	case "wgmesh":
		plugin = firstPlugin(b, l)
	case "wgmesh-hostlocal": // for profiling: wgmesh with the reference IPAM
		plugin = firstPlugin(b, l)
		plugin["ipam"] = cnibench.ReferencePlugin("cni0", testSubnet, l.dataDir)["ipam"]
	default:
		plugin = cnibench.ReferencePlugin("cni0", testSubnet, l.dataDir)
	}
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "bench-" + impl, "plugins": []any{plugin}})
	list, err := libcni.NetworkConfFromBytes(conf)
	if err != nil {
		b.Fatal(err)
	}
	return list
}

func firstPlugin(b *testing.B, l *lab) map[string]any {
	data, err := os.ReadFile(filepath.Join(repoRoot(b), "conflist", "10-wgmesh.conflist"))
	if err != nil {
		b.Fatal(err)
	}
	var conf struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		b.Fatal(err)
	}
	p := conf.Plugins[0]
	p["subnetFile"] = l.subnetFile
	p["ipam"].(map[string]any)["dataDir"] = l.dataDir
	return p
}
