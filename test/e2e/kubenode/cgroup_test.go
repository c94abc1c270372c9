package kubenode

import (
	"strings"
	"testing"
)

// A cgroup v1 (hybrid) machine's mountinfo, trimmed, out of order.
const hybridMountinfo = `22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
41 1 0:38 / /sys/fs/cgroupx rw - tmpfs tmpfs rw
42 1 0:39 / /run/foo rw - cgroup cgroup rw,memory
`

func TestCgroupMountsParentsFirstWithSuperOptions(t *testing.T) {
	got, err := cgroupMountsFrom(strings.NewReader(hybridMountinfo), "/sys/fs/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	want := [][3]string{
		{"/sys/fs/cgroup", "tmpfs", "rw,mode=755"},
		{"/sys/fs/cgroup/cpu", "cgroup", "rw,cpu"},
		{"/sys/fs/cgroup/systemd", "cgroup", "rw,name=systemd"},
		{"/sys/fs/cgroup/unified", "cgroup2", "rw"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mounts, want %d: %+v", len(got), len(want), got)
	}
	for i, m := range got {
		if w := want[i]; m.Mountpoint != w[0] || m.FSType != w[1] || m.VFSOptions != w[2] {
			t.Errorf("mount %d = %s %s %s, want %v", i, m.Mountpoint, m.FSType, m.VFSOptions, w)
		}
	}
}

func TestCgroupMountsRejectsGarbage(t *testing.T) {
	for _, in := range []string{"garbage", "1 2 3 4 /sys/fs/cgroup - tmpfs"} {
		if got, err := cgroupMountsFrom(strings.NewReader(in), "/sys/fs/cgroup"); err == nil {
			t.Errorf("%q gave %v and no error", in, got)
		}
	}
}
