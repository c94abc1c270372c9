package hostprep

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/hostprep/fakehost"
)

func TestRPMQueryMatches(t *testing.T) {
	nfs := rpmPackage{"nfs-utils", "2.5.4", "9.el9"}
	device := rpmPackage{"device", "mapper", "1"}
	iscsi := rpmPackage{"iscsi", "initiator", "utils"}
	for _, tt := range []struct {
		p     rpmPackage
		label string
		how   string // "" for no match
	}{
		{nfs, "nfs-utils", "name"},
		{nfs, "nfs-utils-2.5.4", "name-version"},
		{nfs, "nfs-utils-2.5.4-9.el9", "name-version-release"},
		{nfs, "nfs-utils-2.5.4-9", ""},
		{nfs, "nfs-utils-2x5.4", ""}, // rpm escapes the '.' of its pattern
		{nfs, "nfs-utils-2.*", ""},   // a pattern to rpm, not here
		{nfs, "nfs", ""},
		{nfs, "nfs-util", ""},
		{nfs, "utils", ""},
		{device, "device-mapper", "name-version"}, // as rpm 4.18 answers
		{device, "device-mapper-1", "name-version-release"},
		{device, "device-mapper-2", ""},
		{iscsi, "iscsi-initiator-utils", "name-version-release"},
		{rpmPackage{"iscsi-initiator", "utils", "1"}, "iscsi-initiator-utils", "name-version"},
		{rpmPackage{"open", "iscsi", "1"}, "open-iscsi", "name-version"},
		{rpmPackage{"device-", "mapper", "1"}, "device--mapper", "name-version"},
		{rpmPackage{"device", "", "mapper"}, "device--mapper", ""}, // rpm never cuts an empty version
		{rpmPackage{"device", "mapper", ""}, "device-mapper-", ""},
		{rpmPackage{"a.b", "1", "1"}, "a.b", "name"},
		{rpmPackage{"a", "b", "1"}, "a-b.x86_64", ""}, // rpm would try ".x86_64" as the arch next
		{rpmPackage{"a", "1", "1"}, "a-1:1", ""},      // rpm reads 1: as an epoch
		{rpmPackage{"-", "x", "1"}, "--x", "name-version"},
		{rpmPackage{"", "x", "1"}, "-x", ""}, // rpm never cuts an empty name
	} {
		how, ok := rpmQueryMatches(tt.p, tt.label)
		if how != tt.how || ok != (tt.how != "") {
			t.Errorf("rpmQueryMatches(%+v, %q) = %q, %v; want %q", tt.p, tt.label, how, ok, tt.how)
		}
	}
}

// Reading rpm's sqlite database changes nothing in the host's rpm
// directory: no -wal, -shm or journal file appears, no file changes,
// whether rpm left its empty write-ahead log and index there or not; and a
// host root whose path SQLite would read as URI syntax is no problem.
func TestRPMSQLiteReadsWithoutWriting(t *testing.T) {
	for _, leftovers := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "host root #1?mode=rw&x=%41")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		tr := fakehost.At(t, dir)
		rocky(tr, "nfs-utils", "cryptsetup")
		if leftovers {
			tr.File("var/lib/rpm/rpmdb.sqlite-wal", "", 0o644).File("var/lib/rpm/rpmdb.sqlite-shm", strings.Repeat("\x01", 32768), 0o644)
		}
		before := tr.Listing()
		fi, err := os.Stat(filepath.Join(dir, "var/lib/rpm/rpmdb.sqlite"))
		if err != nil {
			t.Fatal(err)
		}

		db, err := openRPM(tr.Root())
		if err != nil {
			t.Fatal(err)
		}
		if ev, ok := db.installed("cryptsetup"); !ok || ev != "installed as cryptsetup-1.0-1.el9 (/var/lib/rpm/rpmdb.sqlite)" {
			t.Errorf("cryptsetup: %v, %s", ok, ev)
		}
		if ev, ok := db.installed("device-mapper"); ok || ev != "none of the 2 packages in /var/lib/rpm/rpmdb.sqlite is named device-mapper" {
			t.Errorf("device-mapper: %v, %s", ok, ev)
		}

		if after := tr.Listing(); after != before {
			t.Errorf("leftovers %v: the tree changed:\n%s\n---\n%s", leftovers, before, after)
		}
		if fi2, err := os.Stat(filepath.Join(dir, "var/lib/rpm/rpmdb.sqlite")); err != nil || !fi2.ModTime().Equal(fi.ModTime()) {
			t.Errorf("rpmdb.sqlite modified: %v", err)
		}
	}
}
