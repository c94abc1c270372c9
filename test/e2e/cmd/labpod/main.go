// Command labpod is the lab's stand-in for containerd's CNI calls and for a
// pod's workload. Run inside a lab node (its mount namespace holds the
// node's CNI dirs):
//
//	labpod add|check|del CONTAINER-ID NETNS-PATH POD-NAME   CNI through libcni and the conflist in /etc/cni/net.d
//	labpod serve ADDR                                     TCP echo server (a pod's workload)
//	labpod probe ADDR PAYLOAD                             send PAYLOAD over TCP, expect it echoed
//
// add prints the CNI result as JSON. Exit status 1 on any failure, with the
// error on stderr.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/wgmesh/wgmesh/test/e2e/lab/labcni"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "labpod:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: labpod add|check|del|serve|probe ...")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	switch args[0] {
	case "add", "check", "del":
		if len(args) != 4 {
			return fmt.Errorf("usage: labpod %s CONTAINER-ID NETNS-PATH POD-NAME", args[0])
		}
		out, err := labcni.Do(ctx, args[0], labcni.Pod{ContainerID: args[1], NetNS: args[2], Name: args[3]})
		if err != nil {
			return err
		}
		if len(out) > 0 {
			fmt.Println(string(out))
		}
		return nil
	case "serve":
		if len(args) != 2 {
			return fmt.Errorf("usage: labpod serve ADDR")
		}
		cancel()
		return labcni.Serve(args[1])
	case "probe":
		if len(args) != 3 {
			return fmt.Errorf("usage: labpod probe ADDR PAYLOAD")
		}
		return labcni.Probe(args[1], args[2], 3*time.Second)
	}
	return fmt.Errorf("unknown command %q", args[0])
}
