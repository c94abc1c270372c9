package hostprep

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/hostprep/fakehost"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// ChrootRunner really chroots: the fake modprobe sees the fake root as /.
func TestChrootRunnerRunsInsideTheHostRoot(t *testing.T) {
	testutil.RequireRoot(t)
	// A static program: the fake root has no dynamic loader (this test
	// binary is not static once a package it links uses cgo, as net does).
	bin := filepath.Join(t.TempDir(), "modprobe")
	build := exec.Command("go", "build", "-o", bin, "./testdata/fakemodprobe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the fake modprobe: %v\n%s", err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	tr := fakehost.NixOS(t)
	tr.File("fake-host-root", "", 0o644)
	// Replace the store's modprobe script with the fake.
	tr.File("nix/store/0a1b2c-kmod/bin/modprobe", string(prog), 0o755)

	rep := runChecks(t, Options{Root: tr.Root(), Fix: true, LoadModules: true, Runner: ChrootRunner{Root: tr.Dir}, Log: quiet()})
	c := wantStatus(t, byID(t, rep), "module.iscsi_tcp", StatusFixed)
	if len(c.Changed) != 1 || c.Changed[0] != "ran /run/current-system/sw/bin/modprobe iscsi_tcp" {
		t.Errorf("changed = %q", c.Changed)
	}
	mods := tr.Read("proc/modules")
	if !strings.Contains(mods, "iscsi_tcp 24576 0 - Live 0x0 MODULE_DIR=/run/booted-system/kernel-modules/lib/modules\n") {
		t.Errorf("fake /proc/modules = %q", mods)
	}
	if !rep.Ready() {
		t.Errorf("not ready: %+v", rep.Blocking())
	}
}
