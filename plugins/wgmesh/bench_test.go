package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
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
		lat, cpu map[string]latencies
	}
	var rows []row
	for _, mode := range []struct {
		name     string
		parallel int
	}{{"seq", 1}, {"conc16", 16}} {
		b.Run(mode.name, func(b *testing.B) {
			var targets []benchTarget
			for _, impl := range impls {
				l := newLab(b, true)
				targets = append(targets, benchTarget{impl: impl, lab: l, list: benchConflist(b, l, impl)})
			}
			lat, cpu := runAddDel(b, targets, mode.parallel)
			for _, impl := range impls {
				b.ReportMetric(lat[impl].pct(50), impl+"-p50-ms")
				b.ReportMetric(lat[impl].pct(99), impl+"-p99-ms")
				if len(cpu[impl]) > 0 {
					b.ReportMetric(cpu[impl].pct(50), impl+"-cpu-p50-ms")
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
				cpuCols = fmt.Sprintf("%12.1f %10.2f", c.pct(50), c.pct(50)/refCPU.pct(50))
			}
			fmt.Printf("%-7s %-17s %6d %9.1f %9.1f %10.2f %10.2f %s\n", r.mode, impl, len(l), l.pct(50), l.pct(99), l.pct(50)/ref.pct(50), l.pct(99)/ref.pct(99), cpuCols)
		}
	}
	fmt.Printf("(wall-clock p50/p99 per ADD+DEL; CPU = user+sys of every plugin process of one cycle, sequential mode only)\n")
}

type benchTarget struct {
	impl string
	lab  *lab
	list *libcni.NetworkConfigList
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
		plugin["ipam"] = map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": testSubnet}}},
			"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
			"dataDir": l.dataDir,
		}
	default:
		plugin = map[string]any{
			"type": "bridge", "bridge": "cni0", "isGateway": true, "mtu": 1380, "hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": testSubnet}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": l.dataDir,
			},
		}
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

// runAddDel does b.N ADD+DEL cycles of every target with parallel
// workers; each worker alternates between the targets and reuses one pod
// netns per target (created before the clock starts). It returns the
// latency of every cycle per target.
func runAddDel(b *testing.B, targets []benchTarget, parallel int) (lat, cpu map[string]latencies) {
	netnss := make([][]ns.NetNS, parallel)
	for w := range netnss {
		for range targets {
			netnss[w] = append(netnss[w], newNetNS(b))
		}
	}
	work := make(chan int, b.N)
	for i := range b.N {
		work <- i
	}
	close(work)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	lat, cpu = map[string]latencies{}, map[string]latencies{}
	b.ResetTimer()
	for w := range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				for k := range targets {
					t := targets[(i+k)%len(targets)] // alternate which goes first
					p := newPodIn(netnss[w][(i+k)%len(targets)])
					cpu0 := childrenCPU()
					start := time.Now()
					err := t.lab.inNode(func() error {
						if _, err := t.lab.cni.AddNetworkList(context.Background(), t.list, p.rt); err != nil {
							return fmt.Errorf("ADD: %w", err)
						}
						return t.lab.cni.DelNetworkList(context.Background(), t.list, p.rt)
					})
					d := time.Since(start)
					c := childrenCPU() - cpu0
					if err != nil {
						b.Errorf("%s: %v", t.impl, err)
						return
					}
					mu.Lock()
					lat[t.impl] = append(lat[t.impl], d)
					if parallel == 1 { // children's CPU is only attributable one at a time
						cpu[t.impl] = append(cpu[t.impl], c)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	return lat, cpu
}

// childrenCPU is the user+system CPU time of all reaped child processes:
// the plugins libcni ran and the IPAMs they ran. Unlike wall time, it does
// not grow when other programs load the machine.
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type latencies []time.Duration

// pct is the p-th percentile in milliseconds.
func (l latencies) pct(p int) float64 {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return float64(s[max(0, min(i, len(s))-1)].Microseconds()) / 1000
}
