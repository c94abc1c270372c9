package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/wgmesh/wgmesh/internal/mesh"
	"github.com/wgmesh/wgmesh/internal/metrics"
)

// agentOnly are the problem reasons only the running agent can know (they
// need its memory of what it programmed); doctor computes the others from
// the API itself.
var agentOnly = map[string]bool{mesh.ReasonKeyAndEndpointChanged: true}

// AgentProblems asks the agent running on this node, at its metrics
// address (host:port; an empty or unspecified host means loopback), for
// its current problems and returns those only the agent knows
// (KeyAndEndpointChanged). Doctor only reads: this is one GET /problems.
func AgentProblems(ctx context.Context, addr string) ([]mesh.Problem, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics address %q: %w", addr, err)
	}
	if a, err := netip.ParseAddr(host); host == "" || err == nil && a.IsUnspecified() {
		host = "127.0.0.1"
		if err == nil && a.Is6() {
			host = "::1"
		}
	}
	url := "http://" + net.JoinHostPort(host, port) + "/problems"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask the agent: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ask the agent: GET %s: %s", url, resp.Status)
	}
	var served []metrics.Problem
	if err := json.NewDecoder(resp.Body).Decode(&served); err != nil {
		return nil, fmt.Errorf("ask the agent: GET %s: %w", url, err)
	}
	var out []mesh.Problem
	for _, p := range served {
		if agentOnly[p.Reason] {
			out = append(out, mesh.Problem{Node: p.Node, Reason: p.Reason, Message: p.Message})
		}
	}
	return out, nil
}
