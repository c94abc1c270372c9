package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Prefix names every namespace this package creates: wgbench-<pid>-<role>.
// The pid lets Sweep tell a leftover of a killed run from a live one.
const Prefix = "wgbench-"

// devPrefix names WireGuard devices (and so their UAPI sockets): wgb<pid>x<i>.
const devPrefix = "wgb"

// Cleanup is a stack of undo functions, run last-in first-out.
type Cleanup struct {
	mu  sync.Mutex
	fns []func()
}

// Add pushes f.
func (c *Cleanup) Add(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fns = append(c.fns, f)
}

// Run pops and runs every function.
func (c *Cleanup) Run() {
	for {
		c.mu.Lock()
		if len(c.fns) == 0 {
			c.mu.Unlock()
			return
		}
		f := c.fns[len(c.fns)-1]
		c.fns = c.fns[:len(c.fns)-1]
		c.mu.Unlock()
		f()
	}
}

// netNS is a named network namespace of ours.
type netNS struct {
	name string
	ns.NetNS
}

// newNetNS creates wgbench-<pid>-<role> with lo up; c removes it.
func newNetNS(c *Cleanup, role string) (*netNS, error) {
	name := fmt.Sprintf("%s%d-%s", Prefix, os.Getpid(), role)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, out)
	}
	c.Add(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	h, err := ns.GetNS(filepath.Join("/var/run/netns", name))
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	c.Add(func() { _ = h.Close() })
	n := &netNS{name: name, NetNS: h}
	if _, err := n.run("ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return n, nil
}

// cmd is a command run inside n (ip netns exec also gives it n's /sys).
func (n *netNS) cmd(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

func (n *netNS) run(name string, args ...string) (string, error) {
	out, err := n.cmd(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %w: %s", n.name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// do runs f on a locked thread inside n.
func (n *netNS) do(f func() error) error {
	return n.Do(func(ns.NetNS) error { return f() })
}

// Sweep removes what a killed earlier run left behind: namespaces named
// wgbench-<pid>-* and UAPI sockets wgb<pid>*.sock whose pid is not alive.
// It returns what it removed.
func Sweep() ([]string, error) {
	var removed []string
	var errs []error
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, Prefix)
		if !ok {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		if alive(pid) {
			continue
		}
		if o, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %w: %s", name, err, o))
			continue
		}
		removed = append(removed, "netns "+name)
	}
	socks, _ := filepath.Glob(filepath.Join("/var/run/wireguard", devPrefix+"*.sock"))
	for _, s := range socks {
		rest := strings.TrimPrefix(filepath.Base(s), devPrefix)
		pid, _, _ := strings.Cut(rest, "x")
		if alive(pid) {
			continue
		}
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "socket "+s)
	}
	return removed, errors.Join(errs...)
}

func alive(pid string) bool {
	p, err := strconv.Atoi(pid)
	if err != nil || p <= 0 {
		return true // not ours to judge
	}
	return syscall.Kill(p, 0) == nil || errors.Is(syscall.Kill(p, 0), syscall.EPERM)
}

// devName is a WireGuard device name unique on the machine (UAPI sockets
// share one directory across namespaces), at most 15 bytes.
func devName(i int) string { return fmt.Sprintf("%s%dx%d", devPrefix, os.Getpid(), i) }
