package hostprep

import (
	"context"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// ChrootRunner runs host programs chrooted into the host root.
//
// Why chroot and not nsenter into PID 1's mount namespace: the host root
// mount (hostPath "/" with HostToContainer propagation) already shows the
// host's tree, including /run, /nix/store and the module directories, so a
// chroot runs the host's own modprobe against the host's own files without
// needing an nsenter binary in the image (Go cannot setns a mount namespace
// in a multi-threaded process) and without hostPID. It is the same tree the
// checks read, so what a check saw is what the fix acts on. Loading a
// module needs CAP_SYS_MODULE, hence the privileged container.
type ChrootRunner struct {
	// Root is the host root directory (the --host-root).
	Root string
	// Timeout bounds one program run (default 30s).
	Timeout time.Duration
}

var _ HostRunner = ChrootRunner{}

// Run runs argv[0] (a host path) inside the host root with env.
func (c ChrootRunner) Run(ctx context.Context, argv []string, env []string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("run on host: empty command")
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: c.Root}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("run %v chrooted in %s: %w", argv, c.Root, err)
	}
	return out, nil
}
