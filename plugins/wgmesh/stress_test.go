package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/wgmesh/wgmesh/internal/link"
)

// groupKillExec runs each plugin in its own process group and, when the
// context ends, SIGKILLs the whole group: the plugin and the IPAM (or
// iptables) it was running, as if the node lost power mid-ADD for that pod.
// It returns only once the group is gone, so nothing it started can still
// write state afterwards.
type groupKillExec struct{ version.PluginDecoder }

var _ invoke.Exec = (*groupKillExec)(nil)

func (e *groupKillExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	cmd := exec.Command(path)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			var te types.Error
			if json.Unmarshal(out.Bytes(), &te) == nil && te.Code != 0 {
				return nil, &te
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return out.Bytes(), nil
	case <-ctx.Done():
		pgid := cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
		// Orphans of the group (a delegated IPAM) die too; wait until no
		// live process of the group is left (zombies write nothing).
		for deadline := time.Now().Add(10 * time.Second); groupAlive(pgid) && time.Now().Before(deadline); {
			time.Sleep(2 * time.Millisecond)
		}
		return nil, fmt.Errorf("killed %s: %w", path, ctx.Err())
	}
}

// groupAlive reports whether a non-zombie process with process group pgid
// exists (from /proc/<pid>/stat: "pid (comm) state ppid pgrp ...").
func groupAlive(pgid int) bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

func (e *groupKillExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// TestStressAddDelWithKilledPlugins runs 200 pod lifecycles, 16 at a time,
// through libcni; every fifth ADD is SIGKILLed (with its IPAM) after a
// random short delay and its pod deleted without a DEL, every tenth pod is
// kept. Then GC with the kept pods. Invariants: no address is ever held by
// two live pods; after GC the IPAM holds exactly the kept pods' addresses
// and the node has exactly their veths.
func TestStressAddDelWithKilledPlugins(t *testing.T) {
	l := newLab(t, true)
	killer := libcni.NewCNIConfigWithCacheDir(l.cni.Path, l.dir+"/cache", &groupKillExec{})
	const cycles, parallel = 200, 16

	var (
		mu       sync.Mutex
		liveIPs  = map[netip.Addr]string{} // address -> container ID, for pods not yet being deleted
		kept     []*pod
		keptIPs  = map[netip.Addr]string{}
		killed   int
		survived int
		addTime  = 300 * time.Millisecond
	)
	claim := func(ip netip.Addr, p *pod) {
		mu.Lock()
		defer mu.Unlock()
		if other, dup := liveIPs[ip]; dup {
			t.Errorf("address %s given to %s while %s still holds it", ip, p.rt.ContainerID, other)
		}
		liveIPs[ip] = p.rt.ContainerID
	}
	release := func(ip netip.Addr) {
		mu.Lock()
		defer mu.Unlock()
		delete(liveIPs, ip)
	}

	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range cycles {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			p := l.newPod()
			if i%5 == 0 {
				// Kill anywhere in the ADD: a delay up to 1.2x the time a
				// normal ADD takes right now (it grows a lot under load).
				mu.Lock()
				limit := max(50*time.Millisecond, addTime*12/10)
				mu.Unlock()
				res, err := l.addKilledWithin(killer, p, limit)
				if err != nil {
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("ADD %s failed other than by the kill: %v", p.name, err)
					}
					// The pod sandbox dies with its ADD: no DEL, only GC.
					closeNetNS(p.netns)
					mu.Lock()
					killed++
					mu.Unlock()
					return
				}
				mu.Lock()
				survived++
				mu.Unlock()
				r, cerr := current.NewResultFromResult(res)
				if cerr != nil {
					t.Error(cerr)
					return
				}
				claim(podIP(t, r), p)
				// A surviving ADD is an ordinary pod: delete it normally.
				release(podIP(t, r))
				if err := l.del(p); err != nil {
					t.Errorf("DEL %s: %v", p.name, err)
				}
				return
			}
			start := time.Now()
			r, err := l.add(context.Background(), p)
			if err != nil {
				t.Errorf("ADD %s: %v", p.name, err)
				return
			}
			mu.Lock()
			addTime = (addTime*7 + time.Since(start)) / 8 // moving average
			mu.Unlock()
			ip := podIP(t, r)
			claim(ip, p)
			if i%10 == 1 {
				mu.Lock()
				kept = append(kept, p)
				keptIPs[ip] = p.rt.ContainerID
				mu.Unlock()
				return
			}
			release(ip) // before DEL: from here on the address may be reused
			if err := l.del(p); err != nil {
				t.Errorf("DEL %s: %v", p.name, err)
			}
			if i%3 == 0 { // runtimes retry DEL; it must stay harmless
				if err := l.del(p); err != nil {
					t.Errorf("second DEL %s: %v", p.name, err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d cycles: %d ADDs killed, %d outran the kill, %d pods kept", cycles, killed, survived, len(kept))
	if killed == 0 {
		t.Errorf("no ADD was killed: the stress did not stress")
	}

	leaked := 0
	for _, id := range l.allocations() {
		if !slices.ContainsFunc(kept, func(p *pod) bool { return p.rt.ContainerID == id }) {
			leaked++
		}
	}
	t.Logf("before GC: %d addresses held by killed ADDs, %d host veths", leaked, len(l.hostVeths()))
	if err := l.gc(kept); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got := l.allocations(); !maps.Equal(got, keptIPs) {
		t.Errorf("after GC the IPAM holds %v, want exactly the kept pods' %v", got, keptIPs)
	}
	var want []string
	for _, p := range kept {
		want = append(want, link.HostVethName(p.rt.ContainerID, p.rt.IfName))
	}
	slices.Sort(want)
	if got := l.hostVeths(); !slices.Equal(got, want) {
		t.Errorf("after GC the node has veths %v, want exactly the kept pods' %v", got, want)
	}
	for _, p := range kept[:min(3, len(kept))] {
		if err := ping(p.netns, l.subnet.Addr().Next()); err != nil {
			t.Errorf("kept pod after GC: %v", err)
		}
	}
}

// TestStressKilledAddsAreUndoneByDel is the runtime's view of kill safety:
// 32 workers run pod lifecycles through libcni and the shipped conflist;
// half of the ADDs are SIGKILLed (the plugin with its IPAM, or a chained
// portmap/bandwidth) after a random delay up to 1.2x a normal ADD's time,
// and then handled as containerd does: DEL (which must succeed), and for
// half of them a retried ADD that must succeed too, then DEL. The pod's
// netns lives on, so DEL has to remove everything itself. At the end the
// node holds no veth and the IPAM no address; no address was ever held by
// two live pods.
func TestStressKilledAddsAreUndoneByDel(t *testing.T) {
	l := newLab(t, true)
	killer := libcni.NewCNIConfigWithCacheDir(l.cni.Path, l.dir+"/cache", &groupKillExec{})
	const cycles, workers = 384, 32

	var (
		mu                               sync.Mutex
		addTime                          = 300 * time.Millisecond
		liveIPs                          = map[netip.Addr]string{}
		killed, outran, retried          int
		leftVeth, leftHalfMade, leftAddr int // what killed ADDs left for DEL
		failedDels, failedAdds, dups     int
		podIfLeft                        int
	)
	claim := func(ip netip.Addr, p *pod) {
		mu.Lock()
		defer mu.Unlock()
		if other, dup := liveIPs[ip]; dup {
			dups++
			t.Errorf("address %s given to %s while %s still holds it", ip, p.rt.ContainerID, other)
		}
		liveIPs[ip] = p.rt.ContainerID
	}
	release := func(ip netip.Addr) {
		mu.Lock()
		defer mu.Unlock()
		delete(liveIPs, ip)
	}
	count := func(n *int) { mu.Lock(); *n++; mu.Unlock() }
	del := func(p *pod) {
		if err := l.del(p); err != nil {
			count(&failedDels)
			t.Errorf("DEL %s: %v", p.name, err)
		}
	}
	// lifecycle is an ordinary pod: ADD, check the address, DEL.
	lifecycle := func(p *pod, what string) {
		start := time.Now()
		r, err := l.add(context.Background(), p)
		if err != nil {
			count(&failedAdds)
			t.Errorf("%s %s: %v", what, p.name, err)
			del(p)
			return
		}
		mu.Lock()
		addTime = (addTime*7 + time.Since(start)) / 8
		mu.Unlock()
		ip := podIP(t, r)
		claim(ip, p)
		release(ip)
		del(p)
	}

	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for i := range cycles {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			p := l.newPod()
			if i%2 == 1 {
				lifecycle(p, "ADD")
				return
			}
			mu.Lock()
			limit := max(50*time.Millisecond, addTime*12/10)
			mu.Unlock()
			res, err := l.addKilledWithin(killer, p, limit)
			if err == nil {
				count(&outran)
				r, cerr := current.NewResultFromResult(res)
				if cerr != nil {
					t.Error(cerr)
					return
				}
				claim(podIP(t, r), p)
				release(podIP(t, r))
				del(p)
				return
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("ADD %s failed other than by the kill: %v", p.name, err)
			}
			count(&killed)
			l.countLeftovers(p, &mu, &leftVeth, &leftHalfMade, &leftAddr)
			del(p)
			if linkIn(t, p.netns, p.rt.IfName) {
				count(&podIfLeft)
				t.Errorf("DEL after a killed ADD left %s in pod %s", p.rt.IfName, p.name)
			}
			if i%4 == 0 { // the runtime tries the pod again
				count(&retried)
				lifecycle(p, "retried ADD")
			}
		}()
	}
	wg.Wait()

	veths := l.hostVeths()
	var leakedAddrs []netip.Addr
	for a := range l.allocations() {
		leakedAddrs = append(leakedAddrs, a)
	}
	t.Logf("%d lifecycles by %d workers: %d ADDs SIGKILLed mid-ADD (%d then retried), %d outran the kill", cycles, workers, killed, retried, outran)
	t.Logf("killed ADDs left for DEL: %d veths (%d without their alias), %d addresses", leftVeth, leftHalfMade, leftAddr)
	t.Logf("result: %d failed DELs, %d failed ADDs, %d leaked veths, %d leaked addresses, %d duplicate addresses, %d pod interfaces left",
		failedDels, failedAdds, len(veths), len(leakedAddrs), dups, podIfLeft)
	if killed == 0 {
		t.Errorf("no ADD was killed: the stress did not stress")
	}
	if len(veths) != 0 {
		t.Errorf("veths left in the node: %v", veths)
	}
	if len(leakedAddrs) != 0 {
		t.Errorf("addresses left in the IPAM: %v", leakedAddrs)
	}
}

// countLeftovers records what a killed ADD of p left: its host veth (and
// whether it lacks the alias), its address.
func (l *lab) countLeftovers(p *pod, mu *sync.Mutex, veth, halfMade, addr *int) {
	name := link.HostVethName(p.rt.ContainerID, p.rt.IfName)
	var found, noAlias bool
	_ = l.inNode(func() error {
		lk, err := netlinksafe.LinkByName(name)
		found = err == nil
		noAlias = found && lk.Attrs().Alias == ""
		return nil
	})
	// Not l.allocations: other workers' DELs remove files while this reads
	// the directory, and it must not fail (nor Goexit) for that.
	held := false
	dir := filepath.Join(l.dataDir, l.list.Name)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if id, _, _ := strings.Cut(string(b), "\r\n"); err == nil && id == p.rt.ContainerID {
			held = true
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if found {
		*veth++
	}
	if noAlias {
		*halfMade++
	}
	if held {
		*addr++
	}
}

// addKilledWithin runs ADD of p through killer, which SIGKILLs the plugin
// processes when the deadline, a random delay up to limit, passes: a kill
// anywhere in the ADD.
func (l *lab) addKilledWithin(killer *libcni.CNIConfig, p *pod, limit time.Duration) (types.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond+rand.N(limit))
	defer cancel()
	var res types.Result
	err := l.inNode(func() error {
		var err error
		res, err = killer.AddNetworkList(ctx, l.list, p.rt)
		return err
	})
	return res, err
}
