package hostprep

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
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

// FuzzPackageDatabases feeds arbitrary bytes to the readers of package
// databases: none may panic, and a match must be in the input.
func FuzzPackageDatabases(f *testing.F) {
	f.Add("Package: nfs-common\nStatus: install ok installed\nDescription: NFS\n more\n .\n\nPackage: x\n", "nfs-common")
	f.Add("package : a\n\tcont\n\n\n: x\n", "a")
	f.Add("%NAME%\nlvm2\n\n%PROVIDES%\ndevice-mapper=2\nfoo: bar\n", "device-mapper")
	f.Add("lvm2-2.03.22-r5", "lvm2")
	f.Fuzz(func(t *testing.T, s, word string) {
		if stanzas, err := controlStanzas([]byte(s)); err == nil {
			for _, st := range stanzas {
				if len(st) == 0 {
					t.Fatalf("empty stanza from %q", s)
				}
				for k := range st {
					if k == "" || k != strings.ToLower(k) || strings.ContainsAny(k, ": \t\n") {
						t.Fatalf("field name %q from %q", k, s)
					}
				}
			}
		}
		db := map[string]dpkgEntry{}
		if addDpkgStanzas(db, []byte(s)) == nil {
			for _, e := range db {
				if l, listed := e.listLine(); listed && !strings.Contains(l, e.pkg) {
					t.Fatalf("line %q lacks its package %q", l, e.pkg)
				}
			}
		}
		if grepWord(s, word) && !strings.Contains(s, word) {
			t.Fatalf("grepWord(%q, %q) without the word in it", s, word)
		}
		for _, p := range pacmanProvides([]byte(s)) {
			if strings.ContainsAny(p, "=<>\n") || !strings.Contains(s, p) {
				t.Fatalf("provision %q from %q", p, s)
			}
		}
		if name, ver, ok := alpmSplitName(s); ok && (name == "" || name+"-"+ver != s) {
			t.Fatalf("alpmSplitName(%q) = %q, %q", s, name, ver)
		}
		if portageEntryIs(s, word) && !strings.HasPrefix(s, word+"-") {
			t.Fatalf("portageEntryIs(%q, %q)", s, word)
		}
	})
}

// FuzzRPMHeaderName feeds arbitrary bytes to the rpm header parser: it
// must not panic, must accept only a blob of exactly its declared size, and
// what it returns must be NUL-terminated strings of the blob. A header the
// test builder makes for name must give name back.
func FuzzRPMHeaderName(f *testing.F) {
	f.Add(rpmTestPackage("nfs-utils", "2.5.4", "9.el9", "nfs-client"), "device-mapper")
	f.Add(rawRPMHeader([][4]uint32{{rpmTagName, rpmTypeString, 0, 1}}, []byte("nfs\x00")), "a")
	files, _ := filepath.Glob("testdata/rpmheader/*")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, filepath.Base(file))
	}
	f.Fuzz(func(t *testing.T, b []byte, name string) {
		if p, err := parseRPMHeader(b); err == nil {
			il, dl := binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
			if uint64(len(b)) != 8+16*uint64(il)+uint64(dl) {
				t.Fatalf("accepted %d bytes with il %d, dl %d", len(b), il, dl)
			}
			if p.name == "" {
				t.Fatal("empty name accepted")
			}
			for _, s := range []string{p.name, p.version, p.release} {
				if strings.Contains(s, "\x00") || !bytes.Contains(b[8+16*il:], append([]byte(s), 0)) {
					t.Fatalf("%q is not a string of the data", s)
				}
			}
		}
		if name == "" || strings.Contains(name, "\x00") {
			return
		}
		p, err := parseRPMHeader(rpmTestPackage(name, "1", "1"))
		if err != nil || p.name != name {
			t.Fatalf("built header for %q: %+v, %v", name, p, err)
		}
	})
}
