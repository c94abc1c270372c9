// Package labcmd is the start every lab command (wgmesh-lab,
// wgmesh-conformance) shares: its logger, a context that SIGINT and SIGTERM
// cancel (so that a ^C still tears down what the command started), and the
// exit status.
package labcmd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Main runs f with a context cancelled by SIGINT or SIGTERM and a text
// logger (info and up) on stderr. On error it prints "name: error" on
// stderr and exits 1.
func Main(name string, f func(ctx context.Context, log *slog.Logger) error) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	err := f(ctx, log)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
