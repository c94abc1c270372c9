package mountinfo

import (
	"reflect"
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
	got := CgroupMounts([]byte(hybridMountinfo), "/sys/fs/cgroup")
	want := []Mount{
		{"/sys/fs/cgroup", "tmpfs", "rw,mode=755"},
		{"/sys/fs/cgroup/cpu", "cgroup", "rw,cpu"},
		{"/sys/fs/cgroup/systemd", "cgroup", "rw,name=systemd"},
		{"/sys/fs/cgroup/unified", "cgroup2", "rw"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
}

func TestCgroupMountsIgnoresGarbage(t *testing.T) {
	for _, in := range []string{"", "garbage", " - ", "1 2 3 4 /sys/fs/cgroup - tmpfs", "- - - - -"} {
		if got := CgroupMounts([]byte(in), "/sys/fs/cgroup"); len(got) != 0 {
			t.Errorf("%q gave %v", in, got)
		}
	}
}

func FuzzCgroupMounts(f *testing.F) {
	f.Add([]byte(hybridMountinfo))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range CgroupMounts(b, "/sys/fs/cgroup") {
			if m.Point == "" || m.FSType == "" || m.Options == "" {
				t.Fatalf("incomplete mount %v", m)
			}
		}
	})
}
