package hostprep

import "testing"

func TestMountForFindsTheInnermostMountAndUnescapes(t *testing.T) {
	mounts, err := parseMountInfo([]byte(`22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
60 22 0:50 / /var/lib/kubelet rw - tmpfs tmpfs rw
61 22 0:51 / /mnt/with\040space rw shared:7 master:2 - tmpfs tmpfs rw
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, mount, optional string }{
		{"/etc", "/", "shared:1"},
		{"/var/lib/kubelet/pods", "/var/lib/kubelet", ""},
		{"/var/lib/kubeletx", "/", "shared:1"},
		{"/mnt/with space/x", "/mnt/with space", "shared:7 master:2"},
	} {
		m, ok := mountFor(mounts, tc.path)
		if !ok || m.Mountpoint != tc.mount || m.Optional != tc.optional {
			t.Errorf("%s: got %+v %v, want mount %s [%s]", tc.path, m, ok, tc.mount, tc.optional)
		}
	}
	if _, err := parseMountInfo([]byte("not a mountinfo line\n")); err == nil {
		t.Error("a malformed mountinfo parsed without error (the check would report no mount instead of an unreadable file)")
	}
}
