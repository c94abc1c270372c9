// Command wgmesh-bench runs wgmesh's benchmarks (make bench) and prints one
// table; it also writes it as Markdown and JSON under -out. It measures
// wgmesh against the reference CNI plugins and against the limits of its
// own tunnel, in network namespaces it creates (named wgbench-<pid>-<role>,
// through internal/testns) and removes again. It owns those namespaces, the
// WireGuard devices and sockets named wgb<pid>..., and the files it writes
// under the results directory; it never touches the host's network
// namespace, links, routes or firewall. It needs root.
//
// Every section returns Rows, printed as one table. The same binary, run
// with a helper name as its first argument (rr-server, rr-client, rss,
// rss-kernel, rss-on-demand, agent), is the sub-process some sections start.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/wgmesh/wgmesh/internal/wireguard"
)

func main() {
	if len(os.Args) > 1 && !strings.HasPrefix(os.Args[1], "-") {
		os.Exit(helper(os.Args[1], os.Args[2:]))
	}
	os.Exit(runBench())
}

// runBench is main with an exit code, so that deferred calls run.
func runBench() int {
	out := flag.String("out", "results", "directory for bench.md and bench.json")
	only := flag.String("only", "cni,net-nooffload,net,scale,converge", "sections to run, comma-separated: cni, net-nooffload (the network lab with TUN segmentation offload off, for comparison), net, scale, converge")
	secs := flag.Int("seconds", 1, "seconds per iperf3 run (whole seconds)")
	mtu := flag.Int("mtu", wireguard.DefaultMTU, "WireGuard device and pod MTU in the network lab")
	gro := flag.Bool("underlay-gro", true, "turn GRO on for the lab's underlay veths, as on a real NIC")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process (it runs the WireGuard devices) to this file")
	repo := flag.String("repo", ".", "repository root (for conflist/10-wgmesh.conflist)")
	bin := flag.String("bin", envOr("WGMESH_BIN", "bin"), "directory with wgmesh and wgmesh-ipam")
	refBin := flag.String("ref-bin", envOr("WGMESH_REF_BIN", "bin/ref"), "directory with the reference plugins")
	cycles := flag.Int("cni-cycles", 20, "ADD+DEL cycles per chain, sequential")
	rounds := flag.Int("cni-rounds", 1, "ADD+DEL cycles per worker and chain, concurrent")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "wgmesh-bench: needs root (network namespaces, links, iptables)")
		return 2
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if removed, err := sweep(); err != nil || len(removed) > 0 {
		fmt.Fprintf(os.Stderr, "swept leftovers of earlier runs: %v %v\n", removed, err)
	}
	rep := &Report{Date: time.Now(), Machine: Describe()}
	run := func(name string, f func() ([]Row, error)) {
		if !strings.Contains(","+*only+",", ","+name+",") || ctx.Err() != nil {
			return
		}
		start := time.Now()
		fmt.Fprintf(os.Stderr, "== %s\n", name)
		rows, err := f()
		rep.Rows = append(rep.Rows, rows...)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", name, err))
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		}
		fmt.Fprintf(os.Stderr, "== %s done in %s\n", name, time.Since(start).Round(time.Second))
	}
	run("cni", func() ([]Row, error) {
		return CNI(ctx, CNIOptions{Repo: *repo, Bin: abs(*bin), RefBin: abs(*refBin), Cycles: *cycles, ConcRounds: *rounds})
	})
	run("scale", func() ([]Row, error) {
		rows, err := Reconcile(ctx, []int{100, 1000, 5000})
		if err != nil {
			return rows, err
		}
		more, err := Memory(ctx, []int{1000, 5000})
		rows = append(rows, more...)
		if err != nil {
			return rows, err
		}
		more, err = APILoad(ctx, 1000, 3*time.Second)
		rows = append(rows, more...)
		if err != nil {
			return rows, err
		}
		more, err = RealAgent(ctx, []int{1000, 5000})
		return append(rows, more...), err
	})
	net := func(noOffload bool) func() ([]Row, error) {
		return func() ([]Row, error) {
			rows, info, err := Net(ctx, NetOptions{Seconds: *secs, MTU: *mtu, UnderlayGRO: *gro, NoTUNOffload: noOffload})
			if info != "" {
				fmt.Fprintln(os.Stderr, info)
			}
			return rows, err
		}
	}
	run("net-nooffload", net(true))
	run("net", net(false))
	run("converge", func() ([]Row, error) { return Converge(ctx, []int{3, 8}) })
	fmt.Println()
	rep.WriteText(os.Stdout)
	paths, err := rep.Save(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("\nwritten: %s\n", strings.Join(paths, " "))
	if len(rep.Errors) > 0 {
		return 1
	}
	return 0
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// abs makes a plugin directory absolute: libcni looks plugins up from the
// node namespace's thread, and a relative path would be the same, but the
// error messages are clearer with the full path.
func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
