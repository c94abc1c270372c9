package wireguard

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// A userspace device runs in its own long-lived process, the way
// wireguard-go is designed to run, so that it outlives the agent: the agent
// spawns it detached (its own session, stdin /dev/null, output to a log
// file) and a restarted agent adopts it through its UAPI socket, as it
// adopts a kernel link. The process is the calling binary re-executed as
// `<binary> wireguard-device --interface NAME --mtu N` with deviceEnv set;
// this package's init serves the device when it sees deviceEnv, so every
// binary that links the package (the agent, test binaries, bench) can
// serve its own devices without a hook in its main.

// DeviceSubcommand is the agent's hidden subcommand that serves a device.
const DeviceSubcommand = "wireguard-device"

// deviceEnv marks a process spawned to serve a device.
const deviceEnv = "WGMESH_WIREGUARD_DEVICE"

// DebugEnv, set to 1 in the agent's environment (which the device process
// inherits), turns on wireguard-go's debug messages in the device log:
// each handshake sent, received, refused (replay, flood, a response to an
// initiation it no longer has) and each keypair change. The lab sets it,
// so that a failed scenario shows what the devices did.
const DebugEnv = "WGMESH_WIREGUARD_DEBUG"

// logDir holds each device process's log, <name>-device.log.
const logDir = "/run/wgmesh"

// Bounds on waiting for a device process to answer, and to go away.
const (
	startTimeout = 10 * time.Second
	stopTimeout  = 10 * time.Second
)

func init() {
	if os.Getenv(deviceEnv) != "1" || len(os.Args) < 2 || os.Args[1] != DeviceSubcommand {
		return
	}
	os.Unsetenv(deviceEnv)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := DeviceMain(ctx, os.Args[2:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wgmesh-agent wireguard-device:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// DeviceMain serves a userspace WireGuard device (TUN, wireguard-go and
// its UAPI socket) in the caller's network namespace until ctx ends, the
// link is deleted or the UAPI socket is removed; then it closes the device,
// which removes the link and the socket.
func DeviceMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(DeviceSubcommand, flag.ContinueOnError)
	name := fs.String("interface", DefaultName, "device name")
	mtu := fs.Int("mtu", DefaultMTU, "device MTU")
	idle := fs.Duration("on-demand-idle", 0, "program a peer only while it carries traffic, and remove it after this long idle; 0 programs every peer")
	debug := fs.Bool("debug", os.Getenv(DebugEnv) == "1", "log wireguard-go's debug messages (default from $"+DebugEnv+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("device", *name)
	u, err := startUserspace(*name, *mtu, *idle, log)
	if err != nil {
		return err
	}
	log.Info("userspace device serving", "pid", os.Getpid(), "mtu", *mtu, "socket", socketPath(*name), "onDemandIdle", *idle)
	asked := true // stopped on purpose: the log is of no more use
	select {
	case <-ctx.Done():
		log.Info("stopping: signal")
	case <-u.dev.Wait():
		log.Warn("stopping: device closed (link deleted?)")
		asked = false
	case <-u.uapiDone:
		log.Info("stopping: UAPI socket gone")
	}
	err = u.close()
	if asked && err == nil {
		os.Remove(logPath(*name))
	}
	return err
}

func socketPath(name string) string { return filepath.Join(socketDir, name+".sock") }

func logPath(name string) string { return filepath.Join(logDir, name+"-device.log") }

// spawnDevice starts the device process for name in the calling thread's
// network namespace (a fork inherits it) and waits until its UAPI socket
// answers. The process is reaped by a goroutine of this process while this
// process lives; after that it is re-parented and lives on.
func spawnDevice(name string, mtu int, idle time.Duration, log *slog.Logger) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", logDir, err)
	}
	out, err := os.OpenFile(logPath(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open device log: %w", err)
	}
	defer out.Close() // the child has its own descriptor
	cmd := exec.Command(exe, DeviceSubcommand, "--interface", name, "--mtu", strconv.Itoa(mtu), "--on-demand-idle", idle.String())
	cmd.Env = append(os.Environ(), deviceEnv+"=1")
	cmd.Stdout, cmd.Stderr = out, out // stdin nil: /dev/null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start device process: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	log.Info("device process started", "pid", cmd.Process.Pid, "log", logPath(name))

	// Ready when our process answers on the socket (not a device of the
	// same name in another namespace: the socket directory is shared).
	deadline := time.Now().Add(startTimeout)
	for {
		if pid, ok := DevicePID(name); ok && pid == cmd.Process.Pid {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("device process exited: %s (see %s)", cmd.ProcessState, logPath(name))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return fmt.Errorf("device process did not answer on %s within %s (see %s)", socketPath(name), startTimeout, logPath(name))
		}
	}
}

// DevicePID is the process serving the userspace device name's UAPI
// socket, if that process is in the calling thread's network namespace.
// ok is false when no process answers there (no socket, a stale one, or a
// device of the same name in another namespace: the socket directory is
// shared by all namespaces).
func DevicePID(name string) (pid int, ok bool) {
	c, err := net.DialTimeout("unix", socketPath(name), time.Second)
	if err != nil {
		return 0, false
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil || cerr != nil {
		return 0, false
	}
	theirs, err1 := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cred.Pid))
	ours, err2 := os.Readlink("/proc/thread-self/ns/net")
	if err1 != nil || err2 != nil || theirs != ours {
		return 0, false
	}
	return int(cred.Pid), true
}

// isUserspace reports whether wgctrl reads name as a userspace device
// served in this namespace.
func isUserspace(client *wgctrl.Client, name string) bool {
	if _, ok := DevicePID(name); !ok {
		return false
	}
	dev, err := client.Device(name)
	return err == nil && dev.Type == wgtypes.Userspace
}

// stopDevice asks the device process for name to stop (SIGTERM) and waits
// until its link and socket are gone.
func stopDevice(name string, pid int, linkGone func() bool) error {
	if err := unix.Kill(pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal device process %d: %w", pid, err)
	}
	deadline := time.Now().Add(stopTimeout)
	for time.Now().Before(deadline) {
		_, serr := os.Stat(socketPath(name))
		if linkGone() && errors.Is(serr, os.ErrNotExist) {
			os.Remove(logPath(name))
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("device process %d still serving %s after %s", pid, name, stopTimeout)
}
