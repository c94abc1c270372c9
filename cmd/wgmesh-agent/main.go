// Command wgmesh-agent is wgmesh's node agent: `run` (the default) keeps this
// node's WireGuard mesh in line with the cluster; `status`, `doctor`,
// `cleanup`, `install` and `version` are for people and for the DaemonSet's
// init container. main parses flags and wires the layers; the logic lives in
// internal/agent, internal/kube, internal/dataplane and internal/doctor.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// version is set at build time: -ldflags "-X main.version=v0.1.0".
var version = "dev"

const usage = `Usage: wgmesh-agent [command] [flags]

Commands:
  run      keep this node's WireGuard mesh in line with the cluster (default)
  status   show this node's mesh: peers by node name, subnets, handshakes, routes
  doctor   explain what stands between this node and a working mesh (exit 1 on errors)
  cleanup  remove the WireGuard device, wgmesh's routes, rules, chains and subnet.env
  install  copy the CNI plugins and write the conflist (DaemonSet init container)
  uninstall  remove everything wgmesh left on this node, or (--cluster) in the API
  version  print the version

Run 'wgmesh-agent <command> -h' for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:])
	stop()
	var exit exitCode
	switch {
	case errors.As(err, &exit):
		os.Exit(int(exit))
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "wgmesh-agent:", err)
		os.Exit(1)
	}
}

// exitCode ends the process with a code and no further message (the
// command already printed what matters).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func dispatch(ctx context.Context, args []string) error {
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return withConfig("run", args, func(c *config) error { return runAgent(ctx, c) })
	case "status":
		return withConfig("status", args, func(c *config) error { return runStatus(ctx, c, os.Stdout) })
	case "doctor":
		return withConfig("doctor", args, func(c *config) error { return runDoctor(ctx, c, os.Stdout) })
	case "cleanup":
		return withConfig("cleanup", args, func(c *config) error { return runCleanup(ctx, c) })
	case "install":
		return runInstall(ctx, args)
	case "uninstall":
		return runUninstall(ctx, args)
	case wireguard.DeviceSubcommand: // hidden: the userspace device process the agent spawns
		return wireguard.DeviceMain(ctx, args)
	case "version":
		fmt.Println("wgmesh-agent", version)
		return nil
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func withConfig(name string, args []string, fn func(*config) error) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c := &config{}
	c.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: wgmesh-agent %s [flags]\n\nEvery flag can also be set through the environment variable named in its help.\n\nFlags:\n", name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", name, fs.Args())
	}
	if err := c.resolve(); err != nil {
		return err
	}
	return fn(c)
}
