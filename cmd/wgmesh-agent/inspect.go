package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/wgmesh/wgmesh/internal/dataplane"
	"github.com/wgmesh/wgmesh/internal/doctor"
	"github.com/wgmesh/wgmesh/internal/kube"
	"github.com/wgmesh/wgmesh/internal/mesh"
)

// apiTimeout bounds the API calls of status and doctor: a person waiting
// at a terminal gets the kernel view quickly when the API is away.
const apiTimeout = 5 * time.Second

// clusterView reads the Nodes (with Lease subnets) once and computes this
// node's desired state. A nil node list with an error means "API not
// reachable"; the callers go on with the kernel view only.
func clusterView(ctx context.Context, c *config) (nodes []mesh.Node, self mesh.Node, state mesh.State, problems []mesh.Problem, err error) {
	client, err := kube.NewClient(c.kubeconfig, apiTimeout)
	if err != nil {
		return nil, self, state, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	nodes, err = kube.ListNodes(ctx, client, c.namespace, c.clusterCIDRs)
	if err != nil {
		return nil, self, state, nil, err
	}
	found := false
	for _, n := range nodes {
		if n.Name == c.nodeName {
			self, found = n, true
		}
	}
	if !found {
		return nodes, self, state, nil, fmt.Errorf("node %q is not in the API (check --node-name)", c.nodeName)
	}
	state, problems = mesh.Desired(self, nodes, mesh.Options{Self: c.nodeName, ListenPort: c.listenPort, ClusterCIDRs: c.clusterCIDRs})
	return nodes, self, state, problems, nil
}

// runStatus prints this node's mesh.
func runStatus(ctx context.Context, c *config, w io.Writer) error {
	st, err := dataplane.ReadStatus(ctx, c.iface)
	if err != nil {
		return err
	}
	nodes, _, _, problems, apiErr := clusterView(ctx, c)
	writeStatus(w, statusView{Status: st, Nodes: nodes, APIError: apiErr, Problems: problems, Now: time.Now()})
	if apiErr != nil && nodes != nil {
		fmt.Fprintf(w, "\nwarning: %v\n", apiErr)
	}
	return nil
}

// runDoctor prints every finding with its fix; exit status 1 when one of
// them is an error.
func runDoctor(ctx context.Context, c *config, w io.Writer) error {
	_, self, state, problems, apiErr := clusterView(ctx, c)
	if apiErr != nil {
		fmt.Fprintf(w, "note: the API is not reachable (%v): checking the kernel only, without the cluster's problems\n\n", apiErr)
	}
	problems = append(problems, agentProblems(ctx, c, w)...)
	var endpoint netip.Addr
	if len(self.InternalIPs) > 0 {
		endpoint = self.InternalIPs[0]
	}
	ourTable, ourPriority := 0, 0
	if st, err := dataplane.ReadStatus(ctx, c.iface); err == nil {
		ourTable, ourPriority = st.RouteTable, st.RulePriority
		if apiErr != nil {
			// Without the API, the routes the agent last programmed stand
			// in for the desired ones, so shadowing routes are still found
			// and the kernel is still asked where their packets go.
			state.Routes = st.Routes
		}
	}
	kernel, readErr := doctor.Read(doctor.ReadConfig{Device: c.iface, Endpoint: endpoint, Routes: state.Routes, Bridge: c.bridge, Subnets: state.Subnets})
	if readErr != nil {
		fmt.Fprintf(w, "note: some kernel facts could not be read, their checks are skipped: %v\n\n", readErr)
	}
	var iso *doctor.Isolation
	if apiErr == nil {
		iso = isolation(ctx, c)
	}
	findings := doctor.Check(ctx, doctor.Input{Device: c.iface, Desired: state, Problems: problems, OurTable: ourTable, OurRulePriority: ourPriority, Kernel: kernel, Isolation: iso, ClusterCIDRs: c.clusterCIDRs, Bridge: c.bridge})
	if len(findings) == 0 {
		fmt.Fprintln(w, "no problems found")
		return nil
	}
	errs := 0
	for _, f := range findings {
		fmt.Fprintln(w, f.String())
		if f.Severity == doctor.SeverityError {
			errs++
		}
	}
	if errs > 0 {
		fmt.Fprintf(w, "\n%d error(s)\n", errs)
		return exitCode(1)
	}
	return nil
}

// agentProblems asks the running agent for the warnings only it knows
// (KeyAndEndpointChanged needs its memory of what it programmed); a note
// says when it cannot be asked.
func agentProblems(ctx context.Context, c *config, w io.Writer) []mesh.Problem {
	if c.metricsAddr == "" {
		fmt.Fprintf(w, "note: --metrics-addr is empty: the agent's own warnings (%s) are not checked\n\n", mesh.ReasonKeyAndEndpointChanged)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	ps, err := doctor.AgentProblems(ctx, c.metricsAddr)
	if err != nil {
		fmt.Fprintf(w, "note: the agent's own warnings (%s) are not checked: %v\n\n", mesh.ReasonKeyAndEndpointChanged, err)
	}
	return ps
}

// isolation asks the API server whether it holds this agent's credentials
// to this node (doctor's NodeIsolation findings).
func isolation(ctx context.Context, c *config) *doctor.Isolation {
	client, err := kube.NewClient(c.kubeconfig, apiTimeout)
	if err != nil {
		return &doctor.Isolation{Unknown: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	p := kube.ProbeIsolation(ctx, client, c.namespace)
	iso := &doctor.Isolation{NodeClaim: p.NodeClaim, Enforced: p.Enforced}
	if err := errors.Join(p.ClaimErr, p.ProbeErr); err != nil {
		iso.Unknown = err.Error()
	}
	return iso
}

// runCleanup removes what wgmesh created on this node: iptables chains,
// routes and rules, the WireGuard device, and subnet.env (so the CNI plugin
// reports not ready instead of handing out addresses of a dead mesh).
func runCleanup(ctx context.Context, c *config) error {
	log := c.logger()
	err := dataplane.CleanupWithout(ctx, dataplane.Config{Device: c.iface, Mode: c.mode, Logger: log})
	if rmErr := os.Remove(c.subnetFile); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		err = errors.Join(err, fmt.Errorf("remove %s: %w", c.subnetFile, rmErr))
	}
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	log.Info("cleaned up", "device", c.iface, "subnetFile", c.subnetFile)
	return nil
}
