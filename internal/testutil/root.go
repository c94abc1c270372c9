// Package testutil holds helpers shared by tests that touch the kernel.
package testutil

import (
	"os"
	"testing"
)

// RequireRoot skips t when the process is not root. Under CI=true a skip of a
// privileged test would hide a broken data path, so it fails instead.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, and CI=true: CI runs as root, so a skip here would hide a failure")
	}
	t.Skip("needs root (network namespaces, links, iptables); run as root or under sudo")
}
