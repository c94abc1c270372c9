package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// startPlugin starts the binary for one CNI command without waiting.
func startPlugin(cmdName, id string, conf []byte) (*exec.Cmd, *bytes.Buffer, error) {
	cmd := exec.Command(pluginPath)
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+cmdName, "CNI_CONTAINERID="+id, "CNI_NETNS=/var/run/netns/"+id, "CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin")
	cmd.Stdin = bytes.NewReader(conf)
	var out bytes.Buffer
	cmd.Stdout = &out
	return cmd, &out, cmd.Start()
}

// TestConcurrentAddDelWithKilledProcesses runs 16 plugin processes at a
// time through 240 operations: ADDs of new containers, a quarter of them
// SIGKILLed at a random moment, and DELs of running ones. No address may
// ever belong to two running containers; after a GC that lists the running
// containers, the data directory holds exactly their addresses.
func TestConcurrentAddDelWithKilledProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns hundreds of processes")
	}
	e := newEnv(t, "WGMESH_SUBNET=10.42.3.0/25\nWGMESH_SUBNET6=fd00:3::/120\n")
	conf := e.conf("1.1.0", "", "")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	const ops, parallel = 240, 16
	var (
		mu         sync.Mutex
		live       = map[string][]string{} // running container -> its addresses
		owner      = map[string]string{}   // address -> running container
		killed     []string                // containers whose ADD was killed
		killedDone int                     // killed ADDs that had finished anyway
		addTime    time.Duration           // total time of ADDs not killed
		addsDone   int
		adds, dels int
	)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range ops {
		sem <- struct{}{}
		wg.Add(1)

		mu.Lock()
		var delID string
		if n := len(live); n > 24 || (n > 0 && rng.IntN(3) == 0) {
			// Pick a running container to delete; from now on it no longer
			// counts as running, so its address may be given to another.
			ids := make([]string, 0, n)
			for id := range live {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			delID = ids[rng.IntN(n)]
			for _, a := range live[delID] {
				delete(owner, a)
			}
			delete(live, delID)
			dels++
		} else {
			adds++
		}
		kill := delID == "" && rng.IntN(4) == 0
		// Kill somewhere between 40% and 110% of a typical ADD, so that
		// kills land before, inside and after the allocation.
		typical := 30 * time.Millisecond
		if addsDone > 0 {
			typical = addTime / time.Duration(addsDone)
		}
		killAfter := time.Duration(float64(typical) * (0.4 + 0.7*rng.Float64()))
		mu.Unlock()

		go func() {
			defer func() { <-sem; wg.Done() }()
			if delID != "" {
				cmd, out, err := startPlugin("DEL", delID, conf)
				if err == nil {
					err = cmd.Wait()
				}
				if err != nil {
					t.Errorf("DEL %s: %v %s", delID, err, out)
				}
				return
			}
			id := fmt.Sprintf("ctr-%03d", i)
			start := time.Now()
			cmd, out, err := startPlugin("ADD", id, conf)
			if err != nil {
				t.Errorf("start ADD %s: %v", id, err)
				return
			}
			if kill {
				time.Sleep(killAfter)
				_ = cmd.Process.Kill() // SIGKILL; fails only if it already exited
			}
			err = cmd.Wait()
			if kill && err != nil {
				mu.Lock()
				killed = append(killed, id)
				mu.Unlock()
				return
			}
			if err != nil {
				t.Errorf("ADD %s: %v: %s", id, err, out)
				return
			}
			res, perr := current.NewResult(out.Bytes())
			if perr != nil {
				t.Errorf("ADD %s: result %q: %v", id, out, perr)
				return
			}
			r := res.(*current.Result)
			mu.Lock()
			defer mu.Unlock()
			if kill {
				killedDone++
			} else {
				addTime += time.Since(start)
				addsDone++
			}
			for _, ipc := range r.IPs {
				a := ipc.Address.IP.String()
				if ipc.Address.IP.Equal(ipc.Gateway) {
					t.Errorf("ADD %s got the gateway %s", id, a)
				}
				if other, taken := owner[a]; taken {
					t.Errorf("address %s given to %s while %s still holds it", a, id, other)
				}
				owner[a] = id
				live[id] = append(live[id], a)
			}
		}()
	}
	wg.Wait()

	// A runtime DELs after a failed ADD; do it for half of the killed ones
	// and leave the other half for GC, as if the runtime had died too.
	for i, id := range killed {
		if i%2 == 0 {
			if err := e.run("DEL", conf, id); err != nil {
				t.Errorf("DEL after killed ADD %s: %v", id, err)
			}
		}
	}
	before := e.allocations()
	var stale []string
	for a, o := range before {
		if !strings.HasPrefix(o, "ctr-") || live[strings.TrimSuffix(o, "\r\neth0")] == nil {
			stale = append(stale, fmt.Sprintf("%s=%q", a, o))
		}
	}
	sort.Strings(stale)

	var valid []string
	for id := range live {
		valid = append(valid, fmt.Sprintf(`{"containerID":%q,"ifname":"eth0"}`, id))
	}
	gc := e.conf("1.1.0", "", `,"cni.dev/valid-attachments":[`+strings.Join(valid, ",")+`]`)
	if err := e.run("GC", gc, ""); err != nil {
		t.Fatalf("GC: %v", err)
	}

	after := e.allocations()
	want := map[string]string{}
	for a, id := range owner {
		want[a] = id + "\r\neth0"
	}
	if fmt.Sprint(after) != fmt.Sprint(want) {
		t.Errorf("after GC the data dir holds\n%q\nwant exactly the running containers'\n%q", after, want)
	}
	t.Logf("%d ADDs (%d died of SIGKILL, %d more finished before their SIGKILL), %d DELs; %d running at the end; GC removed %d leftovers: %v",
		adds, len(killed), killedDone, dels, len(live), len(stale), stale)
}
