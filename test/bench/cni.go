package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/wgmesh/wgmesh/internal/cnibench"
	"github.com/wgmesh/wgmesh/internal/cniconf"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
	"github.com/wgmesh/wgmesh/internal/testns"
)

// CNIOptions say where the plugins are and how many cycles to run.
type CNIOptions struct {
	Repo   string // repository root, for conflist/10-wgmesh.conflist
	Bin    string // wgmesh, wgmesh-ipam
	RefBin string // bridge, host-local, portmap, bandwidth
	// Cycles per chain at concurrency 1; at concurrency C, C*ConcRounds.
	Cycles     int
	ConcRounds int
	Conc       []int // default 1, 32
}

const cniSubnet = "10.42.1.0/24"

// CNI measures ADD+DEL of the shipped conflist (wgmesh + wgmesh-ipam +
// portmap + bandwidth) against bridge + host-local + portmap + bandwidth
// through libcni, as containerd calls them. The chains alternate within
// every worker so machine load hits both alike.
func CNI(ctx context.Context, opt CNIOptions) ([]Row, error) {
	if opt.Cycles == 0 {
		opt.Cycles = 20
	}
	if opt.ConcRounds == 0 {
		opt.ConcRounds = 1
	}
	if len(opt.Conc) == 0 {
		opt.Conc = []int{1, 32}
	}
	for _, p := range []string{filepath.Join(opt.Bin, "wgmesh"), filepath.Join(opt.Bin, "wgmesh-ipam"),
		filepath.Join(opt.RefBin, "bridge"), filepath.Join(opt.RefBin, "host-local"), filepath.Join(opt.RefBin, "portmap"), filepath.Join(opt.RefBin, "bandwidth")} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s is missing (make build ref-plugins): %w", p, err)
		}
	}
	c := &testns.Cleanup{}
	defer c.Run()
	dir, err := os.MkdirTemp("", "wgbench-cni-")
	if err != nil {
		return nil, err
	}
	c.Add(func() { os.RemoveAll(dir) })

	var chains []cnibench.Chain
	for _, impl := range []string{"wgmesh", "reference"} {
		ch, err := newCNIChain(c, opt, filepath.Join(dir, impl), impl)
		if err != nil {
			return nil, err
		}
		chains = append(chains, ch)
	}
	var rows []Row
	for _, conc := range opt.Conc {
		cycles := opt.Cycles
		if conc > 1 {
			cycles = conc * opt.ConcRounds
		}
		lat, cpu, err := runCNI(ctx, c, chains, conc, cycles)
		if err != nil {
			return rows, err
		}
		pluginTimes.report(os.Stderr, fmt.Sprintf("%d concurrent", conc))
		w, r := lat["wgmesh"], lat["reference"]
		sec := "pod setup (ADD+DEL, libcni)"
		name := fmt.Sprintf("%d concurrent, %d cycles", conc, cycles)
		rows = append(rows,
			compared(sec, name+": p50", w.Pct(50), r.Pct(50), "ms").goalAtMost(1.0),
			compared(sec, name+": p99", w.Pct(99), r.Pct(99), "ms").goalAtMost(1.0),
		)
		if conc == 1 {
			rows = append(rows, compared(sec, name+": plugin CPU p50", cpu["wgmesh"].Pct(50), cpu["reference"].Pct(50), "ms").
				note("user+sys of every plugin process of a cycle"))
		}
	}
	return rows, nil
}

// newCNIChain is the chain impl in a node namespace of its own (both
// chains use cni0 and the same subnet, as on a real node).
func newCNIChain(c *testns.Cleanup, opt CNIOptions, dir, impl string) (cnibench.Chain, error) {
	node, err := newNetNS(c, "cni-"+impl)
	if err != nil {
		return cnibench.Chain{}, err
	}
	subnetFile := filepath.Join(dir, "run", "subnet.env")
	dataDir := filepath.Join(dir, "ipam")
	env := subnetenv.Env{Network: netip.MustParsePrefix("10.42.0.0/16"), Subnet: netip.MustParsePrefix(cniSubnet), MTU: 1380, IPMasq: true}
	if err := subnetenv.Write(subnetFile, env); err != nil {
		return cnibench.Chain{}, err
	}
	data, err := os.ReadFile(filepath.Join(opt.Repo, "conflist", "10-wgmesh.conflist"))
	if err != nil {
		return cnibench.Chain{}, err
	}
	var conf map[string]any
	if err := json.Unmarshal(data, &conf); err != nil {
		return cnibench.Chain{}, fmt.Errorf("shipped conflist: %w", err)
	}
	plugins := conf["plugins"].([]any)
	first := plugins[0].(map[string]any)
	if impl == "wgmesh" {
		first["subnetFile"] = subnetFile
		first["ipam"].(map[string]any)["dataDir"] = dataDir
	} else {
		// The reference: the same chain with bridge + host-local in front,
		// same bridge, MTU, hairpin and subnet.
		plugins[0] = cnibench.ReferencePlugin(cniconf.DefaultBridge, cniSubnet, dataDir)
	}
	conf["name"] = "bench-" + impl
	out, _ := json.Marshal(conf)
	list, err := libcni.NetworkConfFromBytes(out)
	if err != nil {
		return cnibench.Chain{}, fmt.Errorf("%s conflist: %w", impl, err)
	}
	return cnibench.Chain{Name: impl, Node: node, List: list,
		// Plugin logs go nowhere: the table is the output.
		CNI: libcni.NewCNIConfigWithCacheDir([]string{opt.Bin, opt.RefBin}, filepath.Join(dir, "cache"), pluginTimes)}, nil
}

// runCNI does cycles ADD+DEL of every chain with conc workers, each with
// its own pod namespace per chain.
func runCNI(ctx context.Context, c *testns.Cleanup, chains []cnibench.Chain, conc, cycles int) (lat, cpu map[string]cnibench.Durations, err error) {
	pods := make([][]string, conc)
	for w := range pods {
		for k := range chains {
			p, err := newNetNS(c, fmt.Sprintf("pod%d-%d-%d", conc, w, k))
			if err != nil {
				return nil, nil, err
			}
			pods[w] = append(pods[w], p.Path())
		}
	}
	return cnibench.AddDel(ctx, chains, pods, cycles)
}

// selfCPU is the user+system time of this process.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timedExec runs plugins as libcni does and records the wall time of each
// plugin invocation (with the IPAM it delegates to), by binary and command.
type timedExec struct {
	invoke.Exec
	mu sync.Mutex
	d  map[string]cnibench.Durations
}

var pluginTimes = &timedExec{
	Exec: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: io.Discard}, PluginDecoder: version.PluginDecoder{}},
	d:    map[string]cnibench.Durations{},
}

func (t *timedExec) ExecPlugin(ctx context.Context, path string, stdin []byte, env []string) ([]byte, error) {
	start := time.Now()
	out, err := t.Exec.ExecPlugin(ctx, path, stdin, env)
	key := filepath.Base(path)
	for _, e := range env {
		if cmd, ok := strings.CutPrefix(e, "CNI_COMMAND="); ok {
			key += " " + cmd
		}
	}
	t.mu.Lock()
	t.d[key] = append(t.d[key], time.Since(start))
	t.mu.Unlock()
	return out, err
}

// report prints the p50 of each plugin and command, and forgets them.
func (t *timedExec) report(w io.Writer, title string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([]string, 0, len(t.d))
	for k := range t.d {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fmt.Fprintf(w, "per plugin, %s (wall p50, IPAM included):", title)
	for _, k := range keys {
		fmt.Fprintf(w, " %s %.0f ms;", k, t.d[k].Pct(50))
	}
	fmt.Fprintln(w)
	clear(t.d)
}
