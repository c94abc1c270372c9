// Package kind_test checks that the kind e2e script skips cleanly (exit 0,
// with the reason) where Docker or kind is missing, as on the machines the
// normal test run uses. No root, no Docker.
package kind_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeCommand writes an executable shell script that logs its arguments to
// calls and exits with code.
func fakeCommand(t *testing.T, dir, name, calls string, code int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	script := "#!/bin/sh\necho \"$*\" >> " + calls + "\nexit " + strconv.Itoa(code) + "\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestE2EKindSkipsWithoutDockerOrKind(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	missing := filepath.Join(dir, "not-installed")
	for _, tc := range []struct {
		name       string
		env        []string
		want       string
		wantDocker string // the only docker invocations allowed
	}{
		{"no docker", []string{"WGMESH_DOCKER=" + missing}, "e2e-kind: SKIP: docker is not installed", ""},
		{"no engine", []string{"WGMESH_DOCKER=" + fakeCommand(t, dir, "docker-down", calls, 1)}, "e2e-kind: SKIP: no Docker engine is running", "info\n"},
		{"no kind", []string{"WGMESH_DOCKER=" + fakeCommand(t, dir, "docker-up", calls, 0), "WGMESH_KIND=" + missing}, "e2e-kind: SKIP: kind is not installed", "info\n"},
		{"no kubectl", []string{"WGMESH_DOCKER=" + fakeCommand(t, dir, "docker-up2", calls, 0), "WGMESH_KIND=" + fakeCommand(t, dir, "kind", calls, 0), "WGMESH_KUBECTL=" + missing}, "e2e-kind: SKIP: kubectl is not installed", "info\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(calls)
			cmd := exec.Command("bash", "e2e.sh")
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("e2e.sh failed (%v), want a skip with exit 0:\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output %q, want %q", out, tc.want)
			}
			got, _ := os.ReadFile(calls)
			if string(got) != tc.wantDocker {
				t.Errorf("the script ran %q before skipping, want only %q", got, tc.wantDocker)
			}
		})
	}
}

// On this machine the script skips with a reason, unless Docker (with an
// engine), kind and kubectl are all here: then it is `make e2e-kind`'s job.
func TestE2EKindOnThisMachine(t *testing.T) {
	_, errKind := exec.LookPath("kind")
	_, errKubectl := exec.LookPath("kubectl")
	if errKind == nil && errKubectl == nil && exec.Command("docker", "info").Run() == nil {
		t.Skip("docker, kind and kubectl are all here: run `make e2e-kind` (it creates a cluster, too heavy for the unit run)")
	}
	out, err := exec.Command("bash", "e2e.sh").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "e2e-kind: SKIP: ") {
		t.Fatalf("want a clean skip on this machine, got err=%v:\n%s", err, out)
	}
	t.Logf("%s", out)
}
