package hostprep

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/adler32"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/hostfs"
	"github.com/wgmesh/wgmesh/internal/hostprep/fakehost"
)

// ndbTestFile lays header blobs out as rpm 4.18 writes them into a new ndb
// database, one `rpm -i` each: the file header, pages slot pages (rpm
// starts with one), blob i as package i+1 in the i-th slot, the blobs one
// after another from the end of the slot pages, each stamped with the
// generation it was written at. TestNDBTestFileIsRPMs checks it against
// files rpm wrote.
func ndbTestFile(pages int, blobs ...[]byte) []byte {
	n := uint32(len(blobs))
	b := make([]byte, pages*ndbPageSize)
	copy(b, ndbMagic[:])
	binary.LittleEndian.PutUint32(b[8:], 1+n) // generation: 1 at --initdb, +1 a package
	binary.LittleEndian.PutUint32(b[12:], uint32(pages))
	binary.LittleEndian.PutUint32(b[16:], 1+n) // next package index
	for o := ndbHeaderSize; o < len(b); o += ndbSlotSize {
		copy(b[o:], ndbSlotMagic[:])
	}
	for i, blob := range blobs {
		idx := uint32(i + 1)
		blkoff := uint32(len(b) / ndbBlockSize)
		blkcnt := uint32((ndbBlobHead + len(blob) + ndbBlobTail + ndbBlockSize - 1) / ndbBlockSize)
		slot := b[ndbHeaderSize+i*ndbSlotSize:]
		binary.LittleEndian.PutUint32(slot[4:], idx)
		binary.LittleEndian.PutUint32(slot[8:], blkoff)
		binary.LittleEndian.PutUint32(slot[12:], blkcnt)
		start := len(b)
		b = append(b, ndbHeadMagic[:]...)
		b = binary.LittleEndian.AppendUint32(b, idx)
		b = binary.LittleEndian.AppendUint32(b, idx) // the generation before this package's slot is written
		b = binary.LittleEndian.AppendUint32(b, uint32(len(blob)))
		b = append(b, blob...)
		b = append(b, make([]byte, start+int(blkcnt)*ndbBlockSize-ndbBlobTail-len(b))...)
		b = binary.LittleEndian.AppendUint32(b, adler32.Checksum(b[start:]))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(blob)))
		b = append(b, ndbTailMagic[:]...)
	}
	return b
}

// ndbSlotAt is the offset of the i-th slot (0: the first after the header).
func ndbSlotAt(i int) int { return ndbHeaderSize + i*ndbSlotSize }

// ndbBlobAt is the offset of the blob the i-th slot points to.
func ndbBlobAt(b []byte, i int) int {
	return int(le32(b[ndbSlotAt(i)+8:])) * ndbBlockSize
}

// ndbSet returns b with the uint32 at off set to v.
func ndbSet(b []byte, off int, v uint32) []byte {
	b = bytes.Clone(b)
	binary.LittleEndian.PutUint32(b[off:], v)
	return b
}

// ndbResum returns b with the adler32 of the i-th slot's blob made right
// again, as a writer that wrote what it had would.
func ndbResum(b []byte, i int) []byte {
	start := ndbBlobAt(b, i)
	end := start + int(le32(b[ndbSlotAt(i)+12:]))*ndbBlockSize
	return ndbSet(b, end-ndbBlobTail, adler32.Checksum(b[start:end-ndbBlobTail]))
}

func readNDBBytes(b []byte) ([]rpmPackage, error) {
	return readRPMNDB(bytes.NewReader(b), int64(len(b)))
}

// ndbFixture reads an ndb database rpm wrote (see TestRPMNDBFromRPM).
func ndbFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata/rpmndb", name, "Packages.db"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Databases written by rpm 4.18.0 itself, built from Debian 12's source
// with --enable-ndb (Debian's own rpm has no ndb): packages with no files
// built by rpmbuild, installed with `rpm --define '_db_backend ndb' -i
// --justdb --nodeps` into an empty --dbpath. all/ holds nfs-client,
// open-iscsi, cryptsetup and device-mapper (SUSE's version strings);
// changed/ is all/ after installing open-iscsi-git (Provides: open-iscsi),
// erasing open-iscsi and device-mapper and installing a package "device"
// of version "mapper": a free slot between used ones, slots not in the
// order of their blobs, a blob put in a gap. answers is what `rpm -q LABEL`
// answered on each (exit 0 or not), with its Index.db and with
// Packages.db alone; wantPkgs is what `rpm -qa` listed, in its order.
func TestRPMNDBFromRPM(t *testing.T) {
	answers := map[string]map[string]bool{
		"all": {
			"nfs-client": true, "open-iscsi": true, "cryptsetup": true, "device-mapper": true,
			"nfs-client-2.1.1": true, "nfs-client-2.1.1-150500.22.3.1": true,
			"nfs-client-2.1.1-1": false, "nfs-client-2.1": false,
			"open-iscsi-git": false, "open-iscsi-2.1.9": true, "open-iscsi-git-1.0": false,
			"device-mapper-1": false, "device-mapper-2.03.22_1.02.196": true,
			"device-mapper-2.03.22_1.02.196-150600.3.3.1": true,
			"device": false, "nfs": false, "client": false,
			"cryptsetup-2.7.0-150600.3.3.1": true, "cryptsetup-2.7.0-150600.3.3": false,
		},
		"changed": {
			"nfs-client": true, "open-iscsi": false, "cryptsetup": true, "device-mapper": true,
			"nfs-client-2.1.1": true, "nfs-client-2.1.1-150500.22.3.1": true,
			"nfs-client-2.1.1-1": false, "nfs-client-2.1": false,
			"open-iscsi-git": true, "open-iscsi-2.1.9": false, "open-iscsi-git-1.0": true,
			"device-mapper-1": true, "device-mapper-2.03.22_1.02.196": false,
			"device-mapper-2.03.22_1.02.196-150600.3.3.1": false,
			"device": true, "nfs": false, "client": false,
			"cryptsetup-2.7.0-150600.3.3.1": true, "cryptsetup-2.7.0-150600.3.3": false,
		},
	}
	wantPkgs := map[string]string{
		"all":     "nfs-client-2.1.1-150500.22.3.1 open-iscsi-2.1.9-150600.1.1 cryptsetup-2.7.0-150600.3.3.1 device-mapper-2.03.22_1.02.196-150600.3.3.1",
		"changed": "nfs-client-2.1.1-150500.22.3.1 open-iscsi-git-1.0-1 cryptsetup-2.7.0-150600.3.3.1 device-mapper-1",
	}
	for name, labels := range answers {
		db, err := openRPMNDB(hostfs.Root{Dir: filepath.Join("testdata/rpmndb", name)}, "/Packages.db")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var nvrs []string
		for _, p := range db.(rpmDB).pkgs {
			nvrs = append(nvrs, p.name+"-"+p.version+"-"+p.release)
		}
		if got := strings.Join(nvrs, " "); got != wantPkgs[name] {
			t.Errorf("%s: packages %s, want %s", name, got, wantPkgs[name])
		}
		for label, want := range labels {
			if ev, ok := db.installed(label); ok != want {
				t.Errorf("%s: rpm -q %s exits %v with rpm; here %v: %s", name, label, !want, ok, ev)
			}
		}
	}
}

// The test writer lays packages out as rpm does: given the headers rpm
// wrote into all/, it writes all/ byte for byte; given none, rpm --initdb's
// empty database.
func TestNDBTestFileIsRPMs(t *testing.T) {
	all := ndbFixture(t, "all")
	var blobs [][]byte
	for i := 0; i < 4; i++ {
		at := ndbBlobAt(all, i)
		n := int(le32(all[at+12:]))
		blobs = append(blobs, all[at+ndbBlobHead:at+ndbBlobHead+n])
	}
	if got := ndbTestFile(1, blobs...); !bytes.Equal(got, all) {
		t.Errorf("writer: %d bytes unlike rpm's %d", len(got), len(all))
	}
	empty := ndbTestFile(1)
	if len(empty) != 4096 || [4]byte(empty[32:]) != ndbSlotMagic || le32(empty[8:]) != 1 || le32(empty[16:]) != 1 {
		t.Errorf("empty database %x", empty[:48])
	}
	if pkgs, err := readNDBBytes(empty); err != nil || len(pkgs) != 0 {
		t.Errorf("empty database: %v, %v", pkgs, err)
	}
}

func TestReadRPMNDB(t *testing.T) {
	nfs := rpmTestPackage("nfs-client", "2.1.1", "150500.22.3.1")
	crypt := rpmTestPackage("cryptsetup", "2.7.0", "1")
	good := ndbTestFile(1, nfs, crypt)
	if pkgs, err := readNDBBytes(good); err != nil || len(pkgs) != 2 || pkgs[0].name != "nfs-client" || pkgs[1].name != "cryptsetup" {
		t.Fatalf("good: %+v, %v", pkgs, err)
	}
	// Two slot pages, packages listed by where their blobs are, a free
	// slot between: read.
	two := ndbTestFile(2, nfs, crypt)
	two = ndbSet(ndbSet(ndbSet(two, ndbSlotAt(300)+4, 1), ndbSlotAt(300)+8, le32(two[ndbSlotAt(0)+8:])), ndbSlotAt(300)+12, le32(two[ndbSlotAt(0)+12:]))
	two = ndbSet(ndbSet(ndbSet(two, ndbSlotAt(0)+4, 0), ndbSlotAt(0)+8, 0), ndbSlotAt(0)+12, 0)
	if pkgs, err := readNDBBytes(two); err != nil || len(pkgs) != 2 || pkgs[0].name != "nfs-client" {
		t.Errorf("two slot pages: %+v, %v", pkgs, err)
	}
	blob0 := ndbBlobAt(good, 0)
	blob1 := ndbBlobAt(good, 1)
	end0 := blob1 // blob 0's blocks end where blob 1's begin
	if pad := end0 - blob0 - ndbBlobHead - len(nfs) - ndbBlobTail; pad < 4 {
		t.Fatalf("the first blob has %d bytes of padding; the padding case needs 4", pad)
	}
	for _, tt := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "the file is empty"},
		{"shorter than the header", good[:20], "shorter than its 32-byte header"},
		{"an sqlite database", []byte(sqliteMagic + strings.Repeat("\x00", 100)), `not an rpm ndb database (it does not start with "RpmP")`},
		{"version 1", ndbSet(good, 4, 1), "ndb version 1, where rpm reads only version 0"},
		{"not whole blocks", append(bytes.Clone(good), 0, 0, 0), "not a whole number of 16-byte blocks"},
		{"no slot page", ndbSet(good, 12, 0), "counts 0 slot pages"},
		{"more slot pages than the file", ndbSet(good, 12, 9), "counts 9 slot pages of 4096 bytes, and the file has"},
		{"a slot without its magic", ndbSet(good, ndbSlotAt(7), 0), `slot 9 (byte 144) does not start with "Slot"`},
		{"a free slot naming a package", ndbSet(good, ndbSlotAt(5)+4, 3), "slot 7 is free (block offset 0) but names package #3"},
		{"package #0", ndbSet(good, ndbSlotAt(1)+4, 0), "slot 3 names package #0"},
		{"no blocks", ndbSet(good, ndbSlotAt(1)+12, 0), "slot 3 (package #2) has 0 blocks"},
		{"into the slot pages", ndbSet(good, ndbSlotAt(1)+8, 255), "slot 3 (package #2) points into the slot pages (block 255; blobs start at block 256)"},
		{"truncated", good[:len(good)-16], "slot 3 (package #2) points past the end of the file"},
		{"far past the end", ndbSet(good, ndbSlotAt(1)+8, 0xffffffff), "points past the end of the file (blocks 4294967295 to"},
		{"two slots for one package", ndbSet(good, ndbSlotAt(1)+4, 1), "slots 2 and 3 both hold package #1"},
		{"overlapping blobs", ndbSet(good, ndbSlotAt(1)+8, le32(good[ndbSlotAt(0)+8:])+1), "the blobs of slots 2 and 3 (packages #1 and #2) overlap"},
		{"slots swapped", ndbSet(ndbSet(good, ndbSlotAt(0)+4, 2), ndbSlotAt(1)+4, 1), "package #2 (slot 2, bytes 4096 to 4368): the blob is of package #1"},
		{"a blob of another package", ndbSet(good, ndbSlotAt(0)+4, 7), "package #7 (slot 2, bytes 4096 to"},
		{"too few blocks for a blob", ndbSet(good, ndbSlotAt(1)+12, 1), "1 blocks cannot hold a blob's head and tail"},
		{"a blob without its magic", ndbSet(good, blob1, 0), `the blob does not start with "BlbS"`},
		{"a blob longer than its blocks", ndbSet(good, blob1+12, uint32(len(crypt)+100)), "takes"},
		{"a blob past rpm's limit", ndbSet(good, blob1+12, rpmMaxBlob+1), "more than rpm reads in a header"},
		{"a tail without its magic", ndbSet(good, len(good)-4, 0), `the blob does not end with "BlbE"`},
		{"head and tail lengths differ", ndbSet(good, len(good)-8, uint32(len(crypt)-1)), "its tail"},
		{"non-zero padding", ndbResum(ndbSet(good, end0-ndbBlobTail-4, 1), 0), "the padding after the blob's"},
		{"a changed byte", func() []byte { b := bytes.Clone(good); b[blob0+ndbBlobHead+40] ^= 1; return b }(), "adler32"},
		{"a damaged header with its sum", func() []byte {
			b := bytes.Clone(good)
			binary.BigEndian.PutUint32(b[blob0+ndbBlobHead:], 0) // il 0
			return ndbResum(b, 0)
		}(), "package #1: damaged header: header has 0 index entries"},
	} {
		pkgs, err := readNDBBytes(tt.b)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %+v, %v; want an error with %q", tt.name, pkgs, err, tt.want)
		}
	}
}

// Every byte rpm reads in a database rpm wrote is checked: changed, the
// database is unreadable, or (in what rpm neither reads nor writes, or
// reads and does not check: the generation, the next package index, the
// header's spare bytes, the blobs' stamps, the space between blobs) reads
// the same.
func TestRPMNDBEveryByteChecked(t *testing.T) {
	for _, name := range []string{"all", "changed"} {
		orig := ndbFixture(t, name)
		want, err := readNDBBytes(orig)
		if err != nil {
			t.Fatal(err)
		}
		slots, _ := readNDBSlots(bytes.NewReader(orig), int64(len(orig)))
		unchecked := func(off int) bool {
			if off >= 8 && off < 12 || off >= 16 && off < ndbHeaderSize {
				return true
			}
			if off < ndbPageSize {
				return false
			}
			for _, s := range slots {
				if start := int(s.blkoff) * ndbBlockSize; off >= start && off < start+int(s.blkcnt)*ndbBlockSize {
					return off >= start+8 && off < start+12 // the stamp
				}
			}
			return true
		}
		b := bytes.Clone(orig)
		for off := range b {
			b[off] ^= 0x5a
			got, err := readNDBBytes(b)
			b[off] ^= 0x5a
			switch {
			case err == nil && unchecked(off):
				if len(got) != len(want) || !equalPkgs(got, want) {
					t.Errorf("%s: byte %d changed, read %+v", name, off, got)
				}
			case err == nil:
				t.Errorf("%s: byte %d changed, read without error: %+v", name, off, got)
			}
		}
	}
}

func equalPkgs(a, b []rpmPackage) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

// openRPM reads the ndb database under a host root through a symlink,
// changes nothing there, does not wait on a FIFO in its place, and refuses
// it while another process holds rpm's write lock for longer than
// ndbLockWait.
func TestRPMNDBReadsWithoutWriting(t *testing.T) {
	tr := fakehost.New(t)
	tr.File("usr/lib/sysimage/rpm/Packages.db", string(ndbFixture(t, "all")), 0o644).Link("var/lib/rpm", "../../usr/lib/sysimage/rpm")
	before := tr.Listing()
	full := filepath.Join(tr.Dir, "usr/lib/sysimage/rpm/Packages.db")
	fi, err := os.Stat(full)
	if err != nil {
		t.Fatal(err)
	}
	db, err := openRPM(tr.Root())
	if err != nil {
		t.Fatal(err)
	}
	if ev, ok := db.installed("open-iscsi"); !ok || ev != "installed as open-iscsi-2.1.9-150600.1.1 (/var/lib/rpm/Packages.db)" {
		t.Errorf("open-iscsi: %v, %s", ok, ev)
	}
	if after := tr.Listing(); after != before {
		t.Errorf("the tree changed:\n%s\n---\n%s", before, after)
	}
	if fi2, err := os.Stat(full); err != nil || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Errorf("Packages.db modified: %v", err)
	}

	fifo := fakehost.New(t)
	fifo.Mkdir("var/lib/rpm")
	if err := syscall.Mkfifo(filepath.Join(fifo.Dir, "var/lib/rpm/Packages.db"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := openRPM(fifo.Root()); err == nil || !strings.Contains(err.Error(), "/var/lib/rpm/Packages.db: not a regular file") {
		t.Errorf("a FIFO: %v", err)
	}

	f, err := os.Open(full)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, err = openRPM(tr.Root())
	var fix errFix
	if !errors.As(err, &fix) || !strings.Contains(err.Error(), "/var/lib/rpm/Packages.db stayed locked for writing for 1s") || !strings.Contains(fix.fix, "let rpm or zypper finish") {
		t.Errorf("locked: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	if _, err := openRPM(tr.Root()); err != nil {
		t.Errorf("another reader's lock: %v", err)
	}
	// rpm adding a package holds the lock a moment: worth waiting for.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(ndbLockWait / 4)
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	}()
	if _, err := openRPM(tr.Root()); err != nil {
		t.Errorf("a lock released after %v: %v", ndbLockWait/4, err)
	}
}

// FuzzRPMNDB feeds arbitrary bytes to the ndb reader: it must not panic
// or hang, and what it reads must be whole packages, each in a blob of at
// least two blocks after the first slot page.
func FuzzRPMNDB(f *testing.F) {
	f.Add(ndbFixture(f, "all"))
	f.Add(ndbFixture(f, "changed"))
	f.Add(ndbTestFile(1))
	f.Add(ndbTestFile(1, rpmTestPackage("nfs-client", "1", "1"), rpmTestPackage("device", "mapper", "1")))
	f.Add(ndbTestFile(2, rpmTestPackage("open-iscsi", "2.1.9", "1")))
	f.Fuzz(func(t *testing.T, b []byte) {
		pkgs, err := readNDBBytes(b)
		if err != nil {
			if len(pkgs) != 0 {
				t.Fatalf("packages %+v with error %v", pkgs, err)
			}
			return
		}
		if max := (len(b) - ndbPageSize) / (2 * ndbBlockSize); len(pkgs) > max {
			t.Fatalf("%d packages in %d bytes", len(pkgs), len(b))
		}
		for _, p := range pkgs {
			if p.name == "" {
				t.Fatalf("a package without a name: %+v", p)
			}
		}
	})
}
