package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/wgmesh/wgmesh/internal/install"
)

// runInstall is `wgmesh-agent install`: put the CNI plugins and conflist
// where the node's container runtime looks (see internal/install).
func runInstall(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	var o install.Options
	o.RegisterFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: wgmesh-agent install [flags]\n\n"+
			"Copies wgmesh and wgmesh-ipam (atomically) into the CNI bin dir and writes\n"+
			"%s into the CNI conf dir, by default once the agent is ready.\n\nFlags:\n", install.ConflistName)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("install: unexpected arguments %q", fs.Args())
	}
	o.Logger = slog.Default().With("cmd", "install")
	return install.Run(ctx, o)
}
