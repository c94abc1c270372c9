// Package testns gives tests network namespaces that are removed when the
// test ends. It is apart from internal/testutil because it pulls in the CNI
// namespace packages (and with them cgo), which tests that copy their own
// static binary into a chroot must not link.
package testns

import (
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
)

// New creates a network namespace for the test and removes it when the test
// ends, whatever its outcome.
func New(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		_ = testutils.UnmountNS(n)
	})
	return n
}
