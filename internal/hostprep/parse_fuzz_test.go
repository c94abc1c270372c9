package hostprep

import (
	"strings"
	"testing"
)

// FuzzHostFileParsers feeds arbitrary bytes to every parser of host files:
// none may panic, and what they return must be consistent with the input.
func FuzzHostFileParsers(f *testing.F) {
	f.Add("blacklist {\n devnode \"^sd[a-z0-9]+\"\n}\n")
	f.Add("22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n")
	f.Add("ID=nixos\nPRETTY_NAME=\"NixOS 24.11 (Vicuna)\"\nID_LIKE='x y'\n")
	f.Add("\"unterminated { } # \" {{{ }}}")
	f.Add("[ NFSMount_Global_Options ]\nDefaultvers=4.2\n# x\n")
	f.Fuzz(func(t *testing.T, s string) {
		if pat, ok := blacklistsLonghorn(s); ok && !strings.Contains(s, pat) {
			t.Fatalf("blacklist pattern %q not in input", pat)
		}
		mounts, _ := parseMountInfo([]byte(s))
		for _, m := range mounts {
			if m.Mountpoint == "" {
				t.Fatalf("empty mount point from %q", s)
			}
		}
		d := distroFrom(parseOSRelease([]byte(s)), false)
		if d.Family == "" {
			t.Fatal("empty family")
		}
		_ = modName(s)
		if ver, set, err := nfsDefaultVersion([]byte(s)); err == nil && set {
			if _, _, ok := strings.Cut(ver, "."); !ok {
				t.Fatalf("Defaultvers %q from %q is not major.minor", ver, s)
			}
		}
		_ = longhornOSFamily(s)
	})
}
