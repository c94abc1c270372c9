// Command wgmesh-conformance runs Kubernetes' own e2e suite against a
// kubelet lab with wgmesh (make conformance; docs/conformance.md):
//
//	wgmesh-conformance [-out results/conformance] [-focus RE] [-skip RE] [-nodes 3] [-proxy-mode iptables] [-keep]
//
// It starts the lab, runs e2e.test inside the control plane's namespace,
// writes junit_01.xml, e2e.log and summary.md into -out, prints the
// counts and tears the lab down. It exits 1 when a selected test failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/wgmesh/wgmesh/test/e2e/cmd/internal/labcmd"
	"github.com/wgmesh/wgmesh/test/e2e/conformance"
	"github.com/wgmesh/wgmesh/test/e2e/kubenode"
	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

func main() {
	out := flag.String("out", "results/conformance", "directory for junit_01.xml, e2e.log and summary.md")
	focus := flag.String("focus", conformance.DefaultFocus, "the suite's --ginkgo.focus")
	skip := flag.String("skip", "", "the suite's --ginkgo.skip")
	nodes := flag.Int("nodes", 3, "kubelet nodes")
	mode := flag.String("proxy-mode", "iptables", "kube-proxy mode on every node (iptables or nftables)")
	timeout := flag.Duration("timeout", 3*time.Hour, "the whole suite's time limit")
	keep := flag.Bool("keep", false, "leave the lab running afterwards (make lab-down LAB_DIR=<dir it prints>)")
	flag.Parse()
	labcmd.Main("wgmesh-conformance", func(ctx context.Context, log *slog.Logger) error {
		return run(ctx, *out, *focus, *skip, *nodes, *mode, *timeout, *keep, log)
	})
}

func run(ctx context.Context, out, focus, skip string, nodes int, mode string, timeout time.Duration, keep bool, log *slog.Logger) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces, containerd, kubelet)")
	}
	lab.Sweep(log)
	kubenode.Sweep(log)
	labDir, err := os.MkdirTemp("", "wgmesh-lab-conformance-")
	if err != nil {
		return err
	}
	absOut, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	sum, info, err := conformance.Run(ctx, conformance.Config{
		LabDir: labDir, OutDir: absOut, Focus: focus, Skip: skip, Nodes: nodes, ProxyMode: mode,
		SuiteTimeout: timeout, Keep: keep, Output: os.Stdout, Log: log,
	})
	if !keep {
		os.RemoveAll(labDir)
	}
	if sum.Results != nil {
		fmt.Printf("\n=== make conformance: %d passed, %d failed, %d skipped (suite %s, %s); summary: %s\n",
			sum.Count(conformance.Passed), sum.Count(conformance.Failed), sum.Count(conformance.Skipped),
			info.K8sVersion, info.Duration.Round(time.Second), filepath.Join(absOut, "summary.md"))
		for _, r := range sum.Results {
			if r.Outcome != conformance.Passed {
				fmt.Printf("%-7s %s: %s\n", r.Outcome, r.Name, r.Reason)
			}
		}
	}
	return err
}
