//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/test/e2e/conformance"
)

// granularPodChecks name the CI subset of Kubernetes' own e2e suite: pod to
// pod over HTTP and UDP (between netserver pods on every node, so within a
// node and across the mesh) and node to pod (from a host-network pod); and
// one NetworkPolicy test, enforced by k3s's controller (kube-router's
// netpol): 9 pods on 3 nodes, 81 probes allowed and blocked, within a node,
// across the mesh and to the pod's own Service (about 15 s; blocked
// traffic is rejected at once, so it waits on no timeout).
var granularPodChecks = []string{
	"[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http ",
	"[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: udp ",
	"[sig-network] Networking Granular Checks: Pods should function for node-pod communication: http ",
	"[sig-network] Networking Granular Checks: Pods should function for node-pod communication: udp ",
	"[sig-network] Netpol NetworkPolicy between server and client should support a 'default-deny-ingress' policy ",
}

// TestConformanceGranularPodChecks runs the suite's "Networking Granular
// Checks: Pods" conformance tests and one NetworkPolicy test against a
// kubelet lab of its own, as make conformance runs the whole focus: each
// must run and pass.
func TestConformanceGranularPodChecks(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.Program(t, "e2e.test", "Kubernetes' e2e suite (make conformance-bin)")
	testutil.Program(t, "agnhost", "the suite's test image's program (make conformance-bin)")
	out := t.TempDir()
	sum, _, err := conformance.Run(t.Context(), conformance.Config{
		LabDir: filepath.Join(t.TempDir(), "lab"),
		OutDir: out,
		Focus:  `\[sig-network\] (Networking Granular Checks: Pods .*\[Conformance\]|Netpol NetworkPolicy between server and client should support a 'default-deny-ingress' policy )`,
	})
	if b, rerr := os.ReadFile(filepath.Join(out, "summary.md")); rerr == nil {
		t.Logf("summary:\n%s", b)
	}
	if err != nil {
		if b, rerr := os.ReadFile(filepath.Join(out, "e2e.log")); rerr == nil {
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("e2e.log (tail):\n%s", b)
		}
		t.Fatal(err)
	}
	var passed []string
	for _, r := range sum.Results {
		if r.Outcome == conformance.Passed {
			passed = append(passed, r.Name)
		} else {
			t.Errorf("%s %s: %s", r.Outcome, r.Name, r.Reason)
		}
	}
	// The report's names end with the tests' tags ("[Conformance]", ...).
	for _, name := range granularPodChecks {
		if !slices.ContainsFunc(passed, func(p string) bool { return strings.HasPrefix(p, name) }) {
			t.Errorf("did not pass: %s...", name)
		}
	}
}

// TestConformanceImageNames checks that the images make conformance
// assembles carry the names this build of the suite asks for.
func TestConformanceImageNames(t *testing.T) {
	suite := testutil.Program(t, "e2e.test", "Kubernetes' e2e suite (make conformance-bin)")
	out, err := exec.Command(suite, "--list-images").Output()
	if err != nil {
		t.Fatalf("e2e.test --list-images: %v", err)
	}
	listed := strings.Fields(string(out))
	for _, ref := range []string{conformance.AgnhostRef, conformance.BusyboxRef, conformance.NginxRef, conformance.GlibcDNSRef, conformance.PauseRef} {
		if !slices.Contains(listed, ref) {
			t.Errorf("the suite does not ask for %s; it lists:\n%s", ref, out)
		}
	}
}
