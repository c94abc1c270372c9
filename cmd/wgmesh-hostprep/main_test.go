package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/hostprep/fakehost"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := realMain(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheckExitCodes(t *testing.T) {
	nix := fakehost.NixOS(t)
	code, out, _ := runCLI(t, "check", "--host-root", nix.Dir)
	if code != exitNotReady {
		t.Errorf("check on NixOS tree: exit %d, want %d\n%s", code, exitNotReady, out)
	}
	if !hasRow(out, "missing", "program.iscsiadm") {
		t.Errorf("table lacks a missing program.iscsiadm row:\n%s", out)
	}
	for _, want := range []string{"Longhorn would fail on this host", "services.openiscsi"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	deb := fakehost.Debian(t)
	if code, out, _ := runCLI(t, "check", "--host-root", deb.Dir); code != exitOK {
		t.Errorf("check on Debian tree: exit %d\n%s", code, out)
	}
	if code, _, errOut := runCLI(t, "check", "--host-root", "/nonexistent-hostprep-root"); code != exitUsageOrIO || !strings.Contains(errOut, "host root") {
		t.Errorf("missing root: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runCLI(t, "undo", "--host-root", "/nonexistent-hostprep-root"); code != exitUsageOrIO || !strings.Contains(errOut, "host root") {
		t.Errorf("undo on a missing root: exit %d, %q", code, errOut)
	}
	if code, _, _ := runCLI(t, "frobnicate"); code != exitUsageOrIO {
		t.Errorf("unknown command: exit %d", code)
	}
}

func TestCheckJSON(t *testing.T) {
	nix := fakehost.NixOS(t)
	code, out, _ := runCLI(t, "check", "--json", "--host-root", nix.Dir)
	if code != exitNotReady {
		t.Errorf("exit %d", code)
	}
	var got struct {
		Ready bool                `json:"ready"`
		Log   map[string][]string `json:"log"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got.Ready || len(got.Log["error"]) == 0 || got.Log["warn"] == nil || len(got.Log["info"]) == 0 {
		t.Errorf("json = %+v", got)
	}
}

// check --fix without module loading, again (nothing changes), then undo
// through the command line: the tree is back to what it was.
func TestFixAndUndoCommands(t *testing.T) {
	nix := fakehost.NixOS(t)
	before := nix.Listing()
	code, out, _ := runCLI(t, "check", "--fix", "--load-modules=false", "--host-root", nix.Dir)
	if code != exitNotReady { // iscsi_tcp stays unloaded without modprobe
		t.Errorf("check --fix: exit %d\n%s", code, out)
	}
	if !hasRow(out, "fixed", "program.iscsiadm") || !strings.Contains(out, "changed: created symlink /usr/local/sbin/iscsiadm -> /run/current-system/sw/bin/iscsiadm") {
		t.Errorf("check --fix output:\n%s", out)
	}
	afterFix := nix.Listing()
	runCLI(t, "check", "--fix", "--load-modules=false", "--host-root", nix.Dir)
	if nix.Listing() != afterFix {
		t.Error("second check --fix changed the tree")
	}
	code, out, _ = runCLI(t, "undo", "--host-root", nix.Dir)
	if code != exitOK || !strings.Contains(out, "removed  /usr/local/sbin/iscsiadm") {
		t.Errorf("undo: exit %d\n%s", code, out)
	}
	if nix.Listing() != before {
		t.Error("undo did not restore the tree")
	}
	if code, out, _ := runCLI(t, "undo", "--host-root", nix.Dir); code != exitOK || !strings.Contains(out, "nothing to undo") {
		t.Errorf("second undo: exit %d %q", code, out)
	}
}

// TestWriteSampleNixOSTree leaves a fake NixOS root in
// $WGMESH_HOSTPREP_SAMPLE_ROOT, for the documentation's sample output.
func TestWriteSampleNixOSTree(t *testing.T) {
	dir := os.Getenv("WGMESH_HOSTPREP_SAMPLE_ROOT")
	if dir == "" {
		t.Skip("set WGMESH_HOSTPREP_SAMPLE_ROOT to write the sample tree")
	}
	tr := fakehost.NixOS(t)
	if err := os.CopyFS(dir, os.DirFS(tr.Dir)); err != nil {
		t.Fatal(err)
	}
}

// hasRow reports whether the table has a row with this status and check id.
func hasRow(out, status, id string) bool {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == status && f[1] == id {
			return true
		}
	}
	return false
}
