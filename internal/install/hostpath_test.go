package install

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInRootFollowsSymlinksInsideTheRoot(t *testing.T) {
	root := t.TempDir()
	mkdir(t, filepath.Join(root, "var/lib/rancher/k3s/data/abc123/bin"))
	mkdir(t, filepath.Join(root, "etc"))
	// k3s's data/current is an absolute link to data/<id>.
	os.Symlink("/var/lib/rancher/k3s/data/abc123", filepath.Join(root, "var/lib/rancher/k3s/data/current"))
	os.Symlink("abc123/bin", filepath.Join(root, "var/lib/rancher/k3s/data/rel"))
	os.Symlink("/var/lib/rancher/k3s/data/current", filepath.Join(root, "chain"))
	os.Symlink("../../../../../../etc", filepath.Join(root, "var/lib/rancher/k3s/data/up"))
	os.Symlink("loop2", filepath.Join(root, "loop1"))
	os.Symlink("loop1", filepath.Join(root, "loop2"))
	for _, tc := range []struct{ in, want string }{
		{"/var/lib/rancher/k3s/data/current/bin", "/var/lib/rancher/k3s/data/abc123/bin"},
		{"/var/lib/rancher/k3s/data/rel", "/var/lib/rancher/k3s/data/abc123/bin"},
		{"/chain/bin/wgmesh", "/var/lib/rancher/k3s/data/abc123/bin/wgmesh"},
		{"/var/lib/rancher/k3s/data/up/x", "/etc/x"}, // ".." stops at the root
		{"/../../etc", "/etc"},
		{"/opt/cni/bin", "/opt/cni/bin"}, // missing: joined as is
		{"/var/lib/rancher/k3s/data/current/missing/deeper", "/var/lib/rancher/k3s/data/abc123/missing/deeper"},
	} {
		got, err := inRoot(root, tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if want := filepath.Join(root, tc.want); got != want {
			t.Errorf("%s -> %s, want %s", tc.in, got, want)
		}
	}
	if _, err := inRoot(root, "/loop1/x"); err == nil || !strings.Contains(err.Error(), "too many levels") {
		t.Errorf("loop: err = %v", err)
	}
	if got, _ := inRoot("/", "/var/../etc"); got != "/etc" {
		t.Errorf("root /: %s", got)
	}
}
