package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"
)

// helper runs the sub-processes the benchmarks start: the two ends of the
// latency test (inside a pod's namespace) and the agent-like process whose
// memory is measured.
func helper(name string, args []string) int {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	listen := fs.String("listen", "", "rr-server: address to listen on")
	addr := fs.String("addr", "", "rr-client: server address")
	n := fs.Int("n", 1000, "rr-client: round trips; rss: peers")
	_ = fs.Parse(args)
	var err error
	switch name {
	case "rr-server":
		err = RRServe(*listen)
	case "rr-client":
		err = RRClient(*addr, *n)
	case "rss", "rss-on-demand":
		var res AgentResult
		if res, err = RunAgentLike(context.Background(), *n, name == "rss-on-demand"); err == nil {
			err = json.NewEncoder(os.Stdout).Encode(res)
		}
	case "rss-kernel":
		var res AgentResult
		if res, err = RunAgentLikeNoDevice(context.Background(), *n); err == nil {
			err = json.NewEncoder(os.Stdout).Encode(res)
		}
	case "agent", "agent-on-demand":
		var res RealAgentResult
		if res, err = RunRealAgent(context.Background(), *n, 3*time.Second, name == "agent-on-demand"); err == nil {
			err = json.NewEncoder(os.Stdout).Encode(res)
		}
	default:
		err = fmt.Errorf("unknown helper %q", name)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wgmesh-bench %s: %v\n", name, err)
		return 1
	}
	return 0
}
