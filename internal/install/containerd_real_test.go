package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// containerdBinary finds a real containerd: the e2e cache
// ($WGMESH_CACHE/bin/containerd, built by test/e2e/tools/build-k8s.sh) or PATH.
func containerdBinary(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("WGMESH_CACHE")
	if cache == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cache = filepath.Join(home, ".cache", "wgmesh")
		}
	}
	if p := filepath.Join(cache, "bin", "containerd"); cache != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("containerd"); err == nil {
		return p
	}
	t.Skip("no containerd binary (make e2e builds one into $WGMESH_CACHE/bin): real default config not checked")
	return ""
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
