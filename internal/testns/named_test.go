package testns

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

func TestCleanupRunsLastInFirstOut(t *testing.T) {
	var c Cleanup
	var got []int
	for i := range 3 {
		c.Add(func() { got = append(got, i) })
	}
	c.Run()
	c.Run() // nothing left: a second run does nothing
	if !slices.Equal(got, []int{2, 1, 0}) {
		t.Errorf("ran %v, want [2 1 0]", got)
	}
}

// A named namespace is usable by name and by handle, and goes with its
// Cleanup; SweepDead removes what a dead process left (namespace and
// UAPI socket) and keeps what a live one owns.
func TestNamedNamespacesAndSweepOfDeadRuns(t *testing.T) {
	testutil.RequireRoot(t)
	prefix := "wgtns" + Suffix(t) + "-"
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID, livePID := dead.Process.Pid, os.Getpid()

	var c Cleanup
	t.Cleanup(c.Run)
	live, err := NewNamed(&c, fmt.Sprintf("%s%d-live", prefix, livePID))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := live.Run("ip", "-o", "link", "show", "lo"); err != nil || !strings.Contains(out, "UP") {
		t.Errorf("lo in %s: %q %v", live.Name, out, err)
	}
	if err := Bridge(live, "br9", 1400); err != nil {
		t.Fatal(err)
	}
	if out, err := live.Run("ip", "-o", "link", "show", "br9"); err != nil || !strings.Contains(out, "mtu 1400") {
		t.Errorf("br9 in %s: %q %v", live.Name, out, err)
	}
	// A leftover of a killed run: its namespace is not on any Cleanup.
	leftover := fmt.Sprintf("%s%d-old", prefix, deadPID)
	if out, err := exec.Command("ip", "netns", "add", leftover).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", leftover).Run() })
	if err := os.MkdirAll("/var/run/wireguard", 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join("/var/run/wireguard", fmt.Sprintf("%s%dx1.sock", prefix, deadPID))
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(sock) })

	removed, err := SweepDead(prefix, prefix)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"netns " + leftover, "socket " + sock}
	if !slices.Equal(removed, want) {
		t.Errorf("swept %v, want %v", removed, want)
	}
	list, _ := exec.Command("ip", "netns", "list").Output()
	if !strings.Contains(string(list), live.Name) {
		t.Errorf("the live run's %s was swept", live.Name)
	}
	c.Run()
	list, _ = exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(list), prefix) {
		t.Errorf("namespaces left after Cleanup.Run:\n%s", list)
	}
}
