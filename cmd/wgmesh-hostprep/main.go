// Command wgmesh-hostprep checks a host for what Longhorn needs, fixes what
// is safe to fix, and says exactly what to do about the rest.
//
//	wgmesh-hostprep check [--host-root /host] [--json] [--fix] [--v2-engine]
//	wgmesh-hostprep run   [--host-root /host] [--health-addr :9919] [--interval 1m] ...
//	wgmesh-hostprep undo  [--host-root /host]
//
// main parses flags and wires the layers; the checks live in
// internal/hostprep, the loop in internal/hostprep/sidecar, the Node label
// and Events in internal/hostprep/kubenode.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wgmesh/wgmesh/internal/hostfs"
	"github.com/wgmesh/wgmesh/internal/hostprep"
	"github.com/wgmesh/wgmesh/internal/hostprep/kubenode"
	"github.com/wgmesh/wgmesh/internal/hostprep/sidecar"
	"github.com/wgmesh/wgmesh/internal/kube"
)

// Exit codes.
const (
	exitOK        = 0
	exitNotReady  = 1 // check: Longhorn would fail; undo: something was kept
	exitUsageOrIO = 2
)

const usage = `usage: wgmesh-hostprep <command> [flags]

commands:
  check   check the host once and print a table (--json for machines);
          exit 1 when Longhorn would fail; --fix applies the safe fixes
  run     the sidecar: check and fix periodically, serve /healthz and
          /readyz, label the Node wgmesh.io/longhorn-ready=true|false
  undo    remove exactly what earlier fixes created, from the record
          kept at <host-root>` + hostprep.RecordPath + `

run "wgmesh-hostprep <command> -h" for the flags of a command.
`

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsageOrIO
	}
	switch args[0] {
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "run":
		return cmdRun(args[1:], stderr)
	case "undo":
		return cmdUndo(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "wgmesh-hostprep: unknown command %q\n\n%s", args[0], usage)
	return exitUsageOrIO
}

// common flags of check and run.
type checkFlags struct {
	hostRoot     string
	longhornPATH string
	v2           bool
	kubeletDir   string
	fix          bool
	loadModules  bool
	logLevel     string
}

func (c *checkFlags) register(fs *flag.FlagSet, fixDefault bool) {
	fs.StringVar(&c.hostRoot, "host-root", "/host", "where the host's / is mounted (\"/\" when running on the host itself)")
	fs.StringVar(&c.longhornPATH, "longhorn-path", hostprep.LonghornPATH, "the PATH of Longhorn's containers, with which programs are looked up on the host (extend it if you extended Longhorn's)")
	fs.BoolVar(&c.v2, "v2-engine", false, "also check what Longhorn's v2 data engine needs (nvme_tcp, vfio_pci/uio_pci_generic, 2 GiB of 2 MiB huge pages, nvme, sse4_2)")
	fs.StringVar(&c.kubeletDir, "kubelet-dir", hostprep.DefaultKubeletDir, "the kubelet's root directory on the host, which must be a shared mount")
	fs.BoolVar(&c.fix, "fix", fixDefault, "apply the safe fixes (initiator name file, symlinks onto Longhorn's PATH and /sbin/lvm, kernel modules)")
	fs.BoolVar(&c.loadModules, "load-modules", true, "with --fix: load missing kernel modules with the host's own modprobe (chrooted into --host-root)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
}

func (c *checkFlags) options(log *slog.Logger) hostprep.Options {
	o := hostprep.Options{
		Root:         hostfs.Root{Dir: c.hostRoot},
		LonghornPATH: c.longhornPATH,
		V2Engine:     c.v2,
		KubeletDir:   c.kubeletDir,
		Fix:          c.fix,
		LoadModules:  c.loadModules,
		Log:          log,
	}
	if c.fix && c.loadModules {
		o.Runner = hostprep.ChrootRunner{Root: c.hostRoot}
	}
	return o
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf checkFlags
	cf.register(fs, false)
	asJSON := fs.Bool("json", false, "print JSON: {\"ready\":..,\"log\":{\"error\":[],\"warn\":[],\"info\":[]},\"checks\":[..]}")
	if err := fs.Parse(args); err != nil {
		return exitUsageOrIO
	}
	log, err := newLogger(stderr, cf.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "wgmesh-hostprep:", err)
		return exitUsageOrIO
	}
	rep, err := hostprep.Run(context.Background(), cf.options(log))
	if err != nil {
		fmt.Fprintln(stderr, "wgmesh-hostprep check:", err)
		if rep.Checks == nil {
			return exitUsageOrIO
		}
	}
	if *asJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "wgmesh-hostprep check:", err)
		return exitUsageOrIO
	}
	if !rep.Ready() {
		return exitNotReady
	}
	return exitOK
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf checkFlags
	cf.register(fs, true)
	healthAddr := fs.String("health-addr", ":9919", "address for /healthz, /readyz and /report (empty: do not serve)")
	interval := fs.Duration("interval", time.Minute, "time between host checks")
	nodeName := fs.String("node-name", os.Getenv("NODE_NAME"), "this Node's name, to label it and record Events (default $NODE_NAME; empty: no Kubernetes)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster config)")
	eventNS := fs.String("event-namespace", "default", "namespace for the Node Events")
	if err := fs.Parse(args); err != nil {
		return exitUsageOrIO
	}
	log, err := newLogger(stderr, cf.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "wgmesh-hostprep:", err)
		return exitUsageOrIO
	}
	cfg := sidecar.Config{Options: cf.options(log), Interval: *interval, Log: log}
	if *nodeName != "" {
		client, err := kube.NewClientAs("wgmesh-hostprep", *kubeconfig, 0)
		if err != nil {
			log.Error("kubernetes client", "err", err)
			return exitUsageOrIO
		}
		cfg.Publisher = &kubenode.Publisher{Client: client, NodeName: *nodeName, EventNamespace: *eventNS, Log: log}
	} else {
		log.Warn("no --node-name or $NODE_NAME: the Node will not be labeled")
	}
	s := sidecar.New(cfg)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *healthAddr != "" {
		srv := &http.Server{Addr: *healthAddr, Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("health server", "addr", *healthAddr, "err", err)
				stop()
			}
		}()
		defer srv.Close()
	}
	log.Info("wgmesh-hostprep running", "hostRoot", cf.hostRoot, "fix", cf.fix, "loadModules", cf.loadModules, "v2Engine", cf.v2, "interval", *interval, "healthAddr", *healthAddr, "node", *nodeName)
	if err := s.Run(ctx); err != nil {
		log.Error("sidecar", "err", err)
		return exitUsageOrIO
	}
	return exitOK
}

func cmdUndo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("undo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hostRoot := fs.String("host-root", "/host", "where the host's / is mounted (\"/\" when running on the host itself)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return exitUsageOrIO
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	res, err := hostprep.Undo(hostfs.Root{Dir: *hostRoot}, log)
	if err != nil {
		fmt.Fprintln(stderr, "wgmesh-hostprep undo:", err)
		return exitUsageOrIO
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	} else {
		for _, p := range res.Removed {
			fmt.Fprintln(stdout, "removed ", p)
		}
		for _, p := range res.Restored {
			fmt.Fprintln(stdout, "restored", p)
		}
		for _, p := range res.Kept {
			fmt.Fprintln(stdout, "kept    ", p)
		}
		if len(res.Removed)+len(res.Restored)+len(res.Kept) == 0 {
			fmt.Fprintln(stdout, "nothing to undo")
		}
	}
	if len(res.Kept) > 0 {
		return exitNotReady
	}
	return exitOK
}
