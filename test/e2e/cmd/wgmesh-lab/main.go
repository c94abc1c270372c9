// Command wgmesh-lab starts the wgmesh lab (make lab) and tears it down
// (make lab-down):
//
//	wgmesh-lab up   [-dir DIR] [-nodes 3] [-pods 2] [-kubelet]
//	wgmesh-lab down [-dir DIR]
//
// up leaves the lab running and prints how to poke at it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/wgmesh/wgmesh/test/e2e/cmd/internal/labcmd"
	"github.com/wgmesh/wgmesh/test/e2e/kubenode"
	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: wgmesh-lab up|down [-dir DIR]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", "test/e2e/.lab", "lab state directory")
	nodes := fs.Int("nodes", 3, "number of nodes")
	pods := fs.Int("pods", 2, "pods per node")
	kubelet := fs.Bool("kubelet", false, "nodes run containerd + kubelet and pods are created through the API (make lab KUBELET=1)")
	_ = fs.Parse(os.Args[2:])
	labcmd.Main("wgmesh-lab", func(ctx context.Context, log *slog.Logger) error {
		switch os.Args[1] {
		case "up":
			return up(ctx, *dir, *nodes, *pods, *kubelet, log)
		case "down":
			return down(*dir, log)
		default:
			return fmt.Errorf("unknown command %q", os.Args[1])
		}
	})
}

func down(dir string, log *slog.Logger) error {
	abs, _ := filepath.Abs(dir)
	if _, err := os.Stat(filepath.Join(abs, "state.json")); os.IsNotExist(err) {
		fmt.Println("no lab running in", abs)
		return nil
	}
	if err := lab.DownDir(abs, log); err != nil {
		return err
	}
	kubenode.Sweep(log) // kubelet nodes' pod processes and cgroups
	fmt.Println("lab removed:", abs)
	return nil
}

func up(ctx context.Context, dir string, nodes, podsPer int, kubelet bool, log *slog.Logger) error {
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err == nil {
		return fmt.Errorf("a lab is already running in %s (make lab-down first)", dir)
	}
	start := time.Now()
	l, err := lab.Start(ctx, lab.Config{Dir: dir, Persistent: true, Kubelets: kubelet, Log: log})
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			fmt.Fprintln(os.Stderr, "wgmesh-lab: failed; removing the lab (logs were in", l.Dir+")")
			l.Down()
			kubenode.Sweep(log)
		}
	}()
	if kubelet {
		if err := kubenode.Up(ctx, l, nodes, podsPer, os.Stdout); err != nil {
			return err
		}
		ok = true
		fmt.Printf("\nkubelet lab up in %s\n", time.Since(start).Round(time.Second))
		return nil
	}
	for i := 1; i <= nodes; i++ {
		if _, err := l.AddNode(ctx, fmt.Sprintf("node%d", i)); err != nil {
			return err
		}
	}
	if err := l.WaitMesh(ctx, 60*time.Second); err != nil {
		return err
	}
	var pods []*lab.Pod
	for _, n := range l.Nodes() {
		for j := 0; j < podsPer; j++ {
			p, err := l.AddPod(ctx, n, fmt.Sprintf("%s-%c", n.Name, 'a'+j))
			if err != nil {
				return err
			}
			pods = append(pods, p)
		}
	}
	for _, n := range l.Nodes() {
		out, err := n.Run(ctx, l.AgentCommand(n, "status")...)
		fmt.Printf("=== %s (%s): wgmesh-agent status\n%s", n.Name, n.Addr, out)
		if err != nil {
			fmt.Printf("(status: %v)\n", err)
		}
	}
	cells := l.Matrix(ctx, pods)
	fmt.Printf("\n=== pod-to-pod reachability (ICMP and TCP)\n%s", lab.FormatMatrix(pods, cells))
	bad := 0
	for _, c := range cells {
		if c.ICMP != nil || c.TCP != nil {
			bad++
		}
	}
	ok = true
	printHowTo(l, pods)
	fmt.Printf("\nlab up in %s; %d of %d pod pairs reachable\n", time.Since(start).Round(time.Second), len(cells)-bad, len(cells))
	if bad > 0 {
		return fmt.Errorf("%d pod pairs unreachable (lab left running for inspection; make lab-down)", bad)
	}
	return nil
}

func printHowTo(l *lab.Lab, pods []*lab.Pod) {
	n1 := l.Nodes()[0]
	cp := l.ControlPlaneNetNS()
	fmt.Printf(`
=== poke at it
state, logs, kubeconfigs:  %[1]s   (nodes/<node>/wgmesh-agent.log, controlplane/*.log)
enter a node:              %[2]s bash          (its netns + its own /run/wireguard, /run/wgmesh, CNI dirs)
WireGuard of a node:       %[2]s wg show wgmesh0
routes of a node:          %[2]s ip route show table 87   (wgmesh's table; ip rule shows the lookup)
agent status / doctor:     %[2]s %[3]s status --kubeconfig %[11]s --node-name %[12]s   (or doctor)
a pod's shell:             %[2]s ip netns exec pod-%[4]s sh
ping pod to pod:           %[2]s ip netns exec pod-%[4]s ping %[5]s
the underlay (tcpdump):    ip netns exec %[6]s tcpdump -ni br0 udp port %[7]d
kubectl:                   ip netns exec %[8]s %[13]s --kubeconfig %[9]s get nodes -o wide
every namespace:           ip netns list | grep %[10]s
tear down:                 make lab-down
`, l.Dir, n1.EnterCommand(), filepath.Join(l.Bin, "wgmesh-agent"), pods[0].Name, pods[len(pods)-1].IP,
		l.UnderlayNetNS(), lab.ListenPort, cp, l.AdminKubeconfig(), lab.Prefix+l.ID, filepath.Join(n1.Dir, "agent.kubeconfig"), n1.Name, filepath.Join(l.K8sBin, "kubectl"))
}
