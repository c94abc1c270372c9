package install

import (
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/testutil"
)

// containerdBinary finds a real containerd: the cache `make k8s-bin` fills
// ($WGMESH_CACHE/bin/containerd, built by test/e2e/tools/build-k8s.sh) or
// PATH. Under CI=true a missing one fails the test (.ci/run builds it first).
func containerdBinary(t *testing.T) string {
	t.Helper()
	return testutil.Program(t, "containerd", "real default config not checked")
}

// The config real containerd writes (`containerd config default`: version 4
// for containerd 2.4) parses, and names containerd's default CNI dirs from
// its cni table.
func TestParseRealContainerdDefaultConfig(t *testing.T) {
	out, err := exec.Command(containerdBinary(t), "config", "default").Output()
	if err != nil {
		t.Fatalf("containerd config default: %v", err)
	}
	dirs, err := ParseContainerdCNIDirs(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !reflect.DeepEqual(dirs.BinDirs, []string{DefaultCNIBinDir}) || dirs.ConfDir != DefaultCNIConfDir {
		t.Errorf("got %+v from:\n%s", dirs, out)
	}
	if strings.HasSuffix(dirs.Source, "defaults") {
		t.Errorf("the dirs came from install's defaults, not from containerd's cni table (%s)", dirs.Source)
	}
	t.Logf("source: %s", dirs.Source)
}
