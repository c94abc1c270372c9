// Package cnibench drives CNI chains through libcni as a container runtime
// does, for the two pod setup benchmarks: plugins/wgmesh's
// BenchmarkCNIAddDel (make bench-cni) and the cni section of wgmesh-bench
// (make bench). It holds what both measure alike: the runtime's view of a
// pod, the reference bridge + host-local plugin, the ADD+DEL cycles with
// the chains alternating in every worker, and the samples they give.
package cnibench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
)

// Chain is one CNI chain, run from its node namespace (where the runtime,
// and so every plugin process, lives).
type Chain struct {
	Name string
	Node ns.NetNS
	CNI  *libcni.CNIConfig
	List *libcni.NetworkConfigList
}

// RuntimeConf is what a runtime passes for a new pod sandbox whose network
// namespace is at netnsPath: a random container ID, eth0, and the
// Kubernetes arguments. The pod's name is pod-<first 8 digits of the ID>.
func RuntimeConf(netnsPath string) *libcni.RuntimeConf {
	id := fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64())
	return &libcni.RuntimeConf{
		ContainerID: id,
		NetNS:       netnsPath,
		IfName:      "eth0",
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "pod-" + id[:8]}, {"K8S_POD_INFRA_CONTAINER_ID", id}},
	}
}

// PodName is the K8S_POD_NAME of rt.
func PodName(rt *libcni.RuntimeConf) string {
	for _, a := range rt.Args {
		if a[0] == "K8S_POD_NAME" {
			return a[1]
		}
	}
	return ""
}

// ReferencePlugin is what wgmesh is compared with: the reference bridge
// plugin with host-local on subnet, as a conflist entry with the settings
// of wgmesh's shipped conflist (bridge, gateway, MTU 1380, hairpin).
func ReferencePlugin(bridge, subnet, dataDir string) map[string]any {
	return map[string]any{
		"type": "bridge", "bridge": bridge, "isGateway": true, "mtu": 1380, "hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": subnet}}},
			"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
			"dataDir": dataDir,
		},
	}
}

// AddDel does cycles ADD+DEL of every chain with len(pods) workers; worker
// w reuses the pod namespace pods[w][k] for chains[k]. Each worker
// alternates which chain goes first, so load from anything else on the
// machine hits all alike. It returns the wall time of every cycle by
// chain name, and, with one worker, the CPU time (user+sys) of the plugin
// processes of each cycle, which machine load hardly moves. A failed
// cycle stops its worker; the first failure is returned.
func AddDel(ctx context.Context, chains []Chain, pods [][]string, cycles int) (lat, cpu map[string]Durations, err error) {
	work := make(chan int, cycles)
	for i := range cycles {
		work <- i
	}
	close(work)
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	lat, cpu = map[string]Durations{}, map[string]Durations{}
	for w := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				for k := range chains {
					j := (i + k) % len(chains) // alternate which goes first
					c := chains[j]
					rt := RuntimeConf(pods[w][j])
					cpu0 := ChildrenCPU()
					start := time.Now()
					err := c.Node.Do(func(ns.NetNS) error {
						if _, err := c.CNI.AddNetworkList(ctx, c.List, rt); err != nil {
							return fmt.Errorf("%s ADD: %w", c.Name, err)
						}
						if err := c.CNI.DelNetworkList(ctx, c.List, rt); err != nil {
							return fmt.Errorf("%s DEL: %w", c.Name, err)
						}
						return nil
					})
					d := time.Since(start)
					used := ChildrenCPU() - cpu0
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
						mu.Unlock()
						return
					}
					lat[c.Name] = append(lat[c.Name], d)
					if len(pods) == 1 { // children's CPU is attributable only one at a time
						cpu[c.Name] = append(cpu[c.Name], used)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return lat, cpu, fmt.Errorf("%d failed cycles, first: %w", len(errs), errs[0])
	}
	return lat, cpu, nil
}

// ChildrenCPU is the user+system CPU time of all reaped child processes:
// the plugins libcni ran and the IPAMs they ran.
func ChildrenCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Durations are samples.
type Durations []time.Duration

// Pct is the p-th percentile in milliseconds (0 without samples).
func (d Durations) Pct(p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return float64(s[max(0, min(i, len(s))-1)]) / float64(time.Millisecond)
}
