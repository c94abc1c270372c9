package hostprep

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/hostprep/fakehost"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// TestMain lets this test binary play a host's modprobe: copied into a
// fake root and run chrooted there by ChrootRunner, it appends the module
// to /proc/modules, which, inside the chroot, is the fake root's file. It
// never touches the real host: outside a chroot it refuses to run.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "modprobe" {
		os.Exit(fakeModprobe(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeModprobe(args []string) int {
	if _, err := os.Stat("/fake-host-root"); err != nil {
		fmt.Fprintln(os.Stderr, "fake modprobe: not in a fake host root; refusing")
		return 3
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "fake modprobe: want one module")
		return 1
	}
	f, err := os.OpenFile("/proc/modules", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	fmt.Fprintf(f, "%s 24576 0 - Live 0x0 MODULE_DIR=%s\n", args[0], os.Getenv("MODULE_DIR"))
	return 0
}

// ChrootRunner really chroots: the fake modprobe sees the fake root as /.
func TestChrootRunnerRunsInsideTheHostRoot(t *testing.T) {
	testutil.RequireRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	tr := fakehost.NixOS(t)
	tr.File("fake-host-root", "", 0o644)
	// Replace the store's modprobe script with this (static) test binary.
	tr.File("nix/store/0a1b2c-kmod/bin/modprobe", string(bin), 0o755)

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
