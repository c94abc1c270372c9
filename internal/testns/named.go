package testns

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

// What follows is for programs without a testing.T (make bench's
// wgmesh-bench and its sub-processes): the namespaces carry names, so that
// a later run can find and remove what a killed one left, and their removal
// is queued on a Cleanup instead of t.Cleanup.

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

// Named is a network namespace made by `ip netns add`, so it has a name
// that `ip netns exec` and a later SweepDead know.
type Named struct {
	Name string
	ns.NetNS
}

// NewNamed creates the namespace name with lo up; c removes it.
func NewNamed(c *Cleanup, name string) (*Named, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, out)
	}
	c.Add(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	h, err := ns.GetNS(filepath.Join("/var/run/netns", name))
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	c.Add(func() { _ = h.Close() })
	n := &Named{Name: name, NetNS: h}
	if _, err := n.Run("ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return n, nil
}

// Cmd is a command to run inside n (`ip netns exec`, which also gives it
// n's /sys).
func (n *Named) Cmd(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside n; a failure's error carries the namespace,
// the command and its output.
func (n *Named) Run(name string, args ...string) (string, error) {
	out, err := n.Cmd(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %w: %s", n.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// In runs f on a locked thread inside n.
func (n *Named) In(f func() error) error {
	return n.Do(func(ns.NetNS) error { return f() })
}

// SweepDead removes what a killed earlier run left behind: namespaces
// named <nsPrefix><pid>-... and userspace WireGuard sockets
// <sockPrefix><pid>x....sock whose pid is not alive. It returns what it
// removed.
func SweepDead(nsPrefix, sockPrefix string) ([]string, error) {
	var removed []string
	var errs []error
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, nsPrefix)
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
	socks, _ := filepath.Glob(filepath.Join("/var/run/wireguard", sockPrefix+"*.sock"))
	for _, s := range socks {
		rest := strings.TrimPrefix(filepath.Base(s), sockPrefix)
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
	err = syscall.Kill(p, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
