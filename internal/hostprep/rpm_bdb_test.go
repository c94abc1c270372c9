package hostprep

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/internal/hostprep/fakehost"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// rpmBDBFixture is a Packages file in testdata/rpmbdb, written by Berkeley
// DB 5.3 itself: `db5.3_load` (Debian 12's db5.3-util) loaded these
// headers as rpm stores them, keys the instance numbers 1, 2, ... in the
// file's byte order and key 0 the largest instance number. To write the
// files again: WGMESH_WRITE_RPMBDB=1 go test -run TestWriteRPMBDBTestdata
// ./internal/hostprep/ (with db5.3_load on the PATH).
type rpmBDBFixture struct {
	file     string
	lorder   int // Berkeley DB's byte order: 1234 little-endian, 4321 big-endian
	pageSize int
	pkgs     []string // each "file:NAME" (testdata/rpmheader/NAME, by rpm), "small:N V R" (NAME, VERSION, RELEASE only) or "N V R" (rpmTestPackage)
}

var centos7Packages = []string{
	"file:nfs-utils-2.5.4-1.noarch",                   // 1248 bytes, on 3 overflow pages of 512 bytes
	"iscsi-initiator-utils 6.2.0.874 22.el7_9",        // on 1 overflow page
	"cryptsetup 2.0.3 6.el7",                          // on 1 overflow page
	"small:device-mapper 1.02.170 6.el7",              // 117 bytes: on the hash page itself (up to a quarter page)
	"small:device-mapper-persistent-data 0.8.5 3.el7", // 130 bytes, on 1 overflow page; not device-mapper to rpm -q
}

var rpmBDBFixtures = []rpmBDBFixture{
	{"centos7.le", 1234, 512, centos7Packages},
	{"centos7.be", 4321, 512, centos7Packages}, // as on s390x
	{"centos7-provided.le", 1234, 512, []string{
		"file:nfs-utils-2.5.4-1.noarch",
		"file:open-iscsi-git-1.0-1.noarch", // provides iscsi-initiator-utils, which rpm -q does not count
		"cryptsetup 2.0.3 6.el7",
		"small:device-mapper 1.02.170 6.el7",
	}},
	{"many.le", 1234, 512, manyRPMPackages()},
}

// manyRPMPackages are 150 packages: most of about 100 bytes, on hash
// pages, every tenth of 1 to 4 KB, on overflow pages; enough for Berkeley
// DB to split buckets and chain hash pages.
func manyRPMPackages() []string {
	var pkgs []string
	for i := 0; i < 150; i++ {
		if i%10 == 0 {
			pkgs = append(pkgs, fmt.Sprintf("pkg%03d 1.%d %d.el8", i, i%7, i%89))
		} else {
			pkgs = append(pkgs, fmt.Sprintf("small:p%03d 1.%d %d.el8", i, i%7, i%89))
		}
	}
	return pkgs
}

// rpmBDBBlob is the header a fixture's package entry describes.
func rpmBDBBlob(t testing.TB, spec string) []byte {
	t.Helper()
	if name, ok := strings.CutPrefix(spec, "file:"); ok {
		b, err := os.ReadFile("testdata/rpmheader/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	small := strings.HasPrefix(spec, "small:")
	f := strings.Fields(strings.TrimPrefix(spec, "small:"))
	if small {
		return rpmHeaderBlob(rpmString(rpmTagName, f[0]), rpmString(rpmTagVersion, f[1]), rpmString(rpmTagRelease, f[2]))
	}
	var provides []string
	if i, err := strconv.Atoi(strings.TrimPrefix(f[0], "pkg")); err == nil {
		for j := 0; j < i%120; j++ { // 0 to 119 names of 34 bytes
			provides = append(provides, fmt.Sprintf("%s-provided-capability-%06d", f[0], j))
		}
	}
	return rpmTestPackage(f[0], f[1], f[2], provides...)
}

type bdbTestOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

func (fx rpmBDBFixture) order() bdbTestOrder {
	if fx.lorder == 4321 {
		return binary.BigEndian
	}
	return binary.LittleEndian
}

// records are the fixture's packages as readRPMBDB returns them.
func (fx rpmBDBFixture) records(t testing.TB) []rpmBDBRecord {
	var recs []rpmBDBRecord
	for i, spec := range fx.pkgs {
		recs = append(recs, rpmBDBRecord{uint32(i + 1), rpmBDBBlob(t, spec)})
	}
	return recs
}

func (fx rpmBDBFixture) read(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/rpmbdb/" + fx.file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rpmBDBFixtureNamed(t testing.TB, file string) rpmBDBFixture {
	for _, fx := range rpmBDBFixtures {
		if fx.file == file {
			return fx
		}
	}
	t.Fatalf("no fixture %s", file)
	return rpmBDBFixture{}
}

// TestWriteRPMBDBTestdata has Berkeley DB write each fixture again with
// db5.3_load, into a temporary directory (into testdata/rpmbdb with
// WGMESH_WRITE_RPMBDB=1), and reads back what was loaded: the reader
// against files Berkeley DB has just written, not only the ones committed.
func TestWriteRPMBDBTestdata(t *testing.T) {
	if _, err := exec.LookPath("db5.3_load"); err != nil {
		testutil.SkipUnlessCI(t, "db5.3_load is not installed (apt-get install db5.3-util)")
	}
	dir := t.TempDir()
	if os.Getenv("WGMESH_WRITE_RPMBDB") != "" {
		dir = "testdata/rpmbdb"
	}
	for _, fx := range rpmBDBFixtures {
		o := fx.order()
		var in strings.Builder
		fmt.Fprintf(&in, "VERSION=3\nformat=bytevalue\ntype=hash\ndb_pagesize=%d\ndb_lorder=%d\nHEADER=END\n", fx.pageSize, fx.lorder)
		fmt.Fprintf(&in, " %x\n %x\n", o.AppendUint32(nil, 0), o.AppendUint32(nil, uint32(len(fx.pkgs))))
		want := fx.records(t)
		for _, r := range want {
			fmt.Fprintf(&in, " %x\n %x\n", o.AppendUint32(nil, r.hnum), r.blob)
		}
		in.WriteString("DATA=END\n")
		out := filepath.Join(dir, fx.file)
		os.Remove(out)
		cmd := exec.Command("db5.3_load", out)
		cmd.Stdin = strings.NewReader(in.String())
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("db5.3_load %s: %v\n%s", out, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := readRPMBDB(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatalf("%s as db5.3_load wrote it: %v", fx.file, err)
		}
		if len(recs) != len(want) {
			t.Fatalf("%s as db5.3_load wrote it: %d records, want %d", fx.file, len(recs), len(want))
		}
		for i := range want {
			if recs[i].hnum != want[i].hnum || !bytes.Equal(recs[i].blob, want[i].blob) {
				t.Errorf("%s as db5.3_load wrote it: record %d is #%d of %d bytes, want #%d of %d bytes", fx.file, i, recs[i].hnum, len(recs[i].blob), want[i].hnum, len(want[i].blob))
			}
		}
	}
}

// Each fixture reads as the packages loaded into it, and as Berkeley DB
// itself (db5.3_dump, where it is installed) dumps it.
func TestReadRPMBDBFixtures(t *testing.T) {
	for _, fx := range rpmBDBFixtures {
		t.Run(fx.file, func(t *testing.T) {
			b := fx.read(t)
			recs, err := readRPMBDB(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			want := fx.records(t)
			if len(recs) != len(want) {
				t.Fatalf("%d records, want %d", len(recs), len(want))
			}
			for i := range want {
				if recs[i].hnum != want[i].hnum || !bytes.Equal(recs[i].blob, want[i].blob) {
					t.Errorf("record %d: #%d of %d bytes, want #%d of %d bytes", i, recs[i].hnum, len(recs[i].blob), want[i].hnum, len(want[i].blob))
				}
			}

			dump, err := exec.Command("db5.3_dump", "testdata/rpmbdb/"+fx.file).Output()
			if err != nil {
				testutil.SkipUnlessCI(t, fmt.Sprintf("db5.3_dump: %v (install db5.3-util to compare with Berkeley DB)", err))
			}
			got := map[string]string{hex.EncodeToString(fx.order().AppendUint32(nil, 0)): hex.EncodeToString(fx.order().AppendUint32(nil, uint32(len(fx.pkgs))))}
			for _, r := range recs {
				got[hex.EncodeToString(fx.order().AppendUint32(nil, r.hnum))] = hex.EncodeToString(r.blob)
			}
			dumped := map[string]string{}
			sc := bufio.NewScanner(bytes.NewReader(dump))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() && sc.Text() != "HEADER=END" {
			}
			for sc.Scan() && sc.Text() != "DATA=END" {
				k := strings.TrimSpace(sc.Text())
				sc.Scan()
				dumped[k] = strings.TrimSpace(sc.Text())
			}
			if len(dumped) != len(got) {
				t.Errorf("db5.3_dump lists %d keys, readRPMBDB %d (with key 0)", len(dumped), len(got))
			}
			for k, v := range dumped {
				if got[k] != v {
					t.Errorf("key %s: db5.3_dump has %d bytes, readRPMBDB %d", k, len(v)/2, len(got[k])/2)
				}
			}
		})
	}
}

// The fixtures hold what the reader must handle: both byte orders,
// values on the hash page, on one overflow page and on a chain of them,
// and (many.le) split buckets and several hash pages.
func TestRPMBDBFixturesCoverTheFormat(t *testing.T) {
	for _, fx := range rpmBDBFixtures {
		b := fx.read(t)
		l := bdbTestLayout(t, b)
		if l.order != fx.order() || l.pageSize != fx.pageSize {
			t.Errorf("%s: byte order %v, page size %d", fx.file, l.order, l.pageSize)
		}
		inline, chains, long := 0, 0, 0
		for _, it := range l.items {
			if it.index%2 == 0 {
				continue
			}
			switch b[it.at] {
			case bdbKeyData:
				inline++
			case bdbOffPage:
				chains++
				if n := len(l.chain(b, l.order.Uint32(b[it.at+4:]))); n > 1 {
					long++
				}
			}
		}
		if inline < 2 || chains < 2 || long < 1 { // key 0's value is inline too
			t.Errorf("%s: %d values on hash pages, %d on overflow pages, %d of those on more than one", fx.file, inline, chains, long)
		}
		t.Logf("%s: %d pages, %d hash pages, %d values on hash pages, %d on overflow pages, %d of those on more than one", fx.file, len(b)/fx.pageSize, len(l.hashPages), inline, chains, long)
	}
	l := bdbTestLayout(t, rpmBDBFixtureNamed(t, "many.le").read(t))
	if len(l.hashPages) < 8 {
		t.Errorf("many.le has %d hash pages", len(l.hashPages))
	}
}

// bdbTestItem is an item of a hash page: where its bytes start.
type bdbTestItem struct {
	page  uint32
	index int // on the page: keys even, values odd
	at    int // in the file
}

type bdbTestLayoutT struct {
	order     binary.ByteOrder
	pageSize  int
	hashPages []uint32
	items     []bdbTestItem
}

// bdbTestLayout finds the hash pages and their items of a well-formed file.
func bdbTestLayout(t testing.TB, b []byte) bdbTestLayoutT {
	t.Helper()
	f, err := openBDBHash(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	l := bdbTestLayoutT{order: f.order, pageSize: f.pageSize}
	for n := uint32(1); n <= f.last; n++ {
		p := b[int(n)*f.pageSize:]
		if p[25] != bdbPageHash {
			continue
		}
		l.hashPages = append(l.hashPages, n)
		for i := 0; i < int(f.order.Uint16(p[20:])); i++ {
			l.items = append(l.items, bdbTestItem{n, i, int(n)*f.pageSize + int(f.order.Uint16(p[bdbPageHeader+2*i:]))})
		}
	}
	return l
}

// chain is the overflow pages from page first on.
func (l bdbTestLayoutT) chain(b []byte, first uint32) []uint32 {
	var pages []uint32
	for n := first; n != 0 && len(pages) < 100; n = l.order.Uint32(b[int(n)*l.pageSize+16:]) {
		pages = append(pages, n)
	}
	return pages
}

// offPage is the first value on an overflow chain of at least n pages.
func (l bdbTestLayoutT) offPage(t testing.TB, b []byte, n int) bdbTestItem {
	t.Helper()
	for _, it := range l.items {
		if it.index%2 == 1 && b[it.at] == bdbOffPage && len(l.chain(b, l.order.Uint32(b[it.at+4:]))) >= n {
			return it
		}
	}
	t.Fatalf("no value on %d overflow pages", n)
	return bdbTestItem{}
}

// Damaged files are errors that say what is wrong, never a hang or a
// wrong answer: each case changes a copy of centos7.le.
func TestReadRPMBDBRefusesDamage(t *testing.T) {
	good := rpmBDBFixtureNamed(t, "centos7.le").read(t)
	l := bdbTestLayout(t, good)
	le := binary.LittleEndian
	long := l.offPage(t, good, 3) // nfs-utils, on 3 pages
	chain := l.chain(good, le.Uint32(good[long.at+4:]))
	tlen := le.Uint32(good[long.at+8:])
	page := func(n uint32) int { return int(n) * l.pageSize }
	var inlineValue bdbTestItem
	for _, it := range l.items {
		if it.index%2 == 1 && good[it.at] == bdbKeyData {
			inlineValue = it
		}
	}
	last := le.Uint32(good[32:])

	for _, tt := range []struct {
		name   string
		change func(b []byte) []byte
		err    string
	}{
		{"empty", func([]byte) []byte { return nil }, "the file is empty"},
		{"shorter than the metadata page", func(b []byte) []byte { return b[:300] }, "fewer than a Berkeley DB metadata page (512)"},
		{"cut short by a page", func(b []byte) []byte { return b[:len(b)-512] }, "it is cut short"},
		{"cut short inside a page", func(b []byte) []byte { return b[:len(b)-1] }, "it is cut short"},
		{"wrong magic", func(b []byte) []byte { le.PutUint32(b[12:], 0x061562); return b }, "not a Berkeley DB hash database (bytes 12 to 15 are 62 15 06 00"},
		{"a btree", func(b []byte) []byte { le.PutUint32(b[12:], bdbBtreeMagic); return b }, "a Berkeley DB btree database"},
		{"an sqlite file", func([]byte) []byte { return []byte(sqliteMagic + strings.Repeat("\x00", 600)) }, "not a Berkeley DB hash database"},
		{"hash version 10", func(b []byte) []byte { le.PutUint32(b[16:], 10); return b }, "hash version 10; wgmesh-hostprep reads versions 8 and 9"},
		{"page size 1000", func(b []byte) []byte { le.PutUint32(b[20:], 1000); return b }, "page size 1000 is not a power of 2"},
		{"page size 256", func(b []byte) []byte { le.PutUint32(b[20:], 256); return b }, "page size 256 is not"},
		{"encrypted", func(b []byte) []byte { b[24] = 1; return b }, "encrypted"},
		{"metadata of a btree", func(b []byte) []byte { b[25] = 9; return b }, "page 0 has type 9, not 8"},
		{"checksums", func(b []byte) []byte { b[26] = 1; return b }, "checksums or partitions"},
		{"metadata says page 3", func(b []byte) []byte { le.PutUint32(b[8:], 3); return b }, "the metadata page says it is page 3"},
		{"subdatabases", func(b []byte) []byte { le.PutUint32(b[48:], bdbHashSubDB); return b }, "several databases"},
		{"last page past the file", func(b []byte) []byte { le.PutUint32(b[32:], last+1); return b }, fmt.Sprintf("fewer than the %d pages of 512 bytes its metadata counts", last+2)},
		{"last page number 2^32-1", func(b []byte) []byte { le.PutUint32(b[32:], 0xffffffff); return b }, "it is cut short"},
		{"a btree leaf page", func(b []byte) []byte { b[page(l.hashPages[0])+25] = 5; return b }, "page 1 has type 5 (btree leaf), which a hash database of rpm's does not hold"},
		{"a hash page that says it is another", func(b []byte) []byte { le.PutUint32(b[page(l.hashPages[0])+8:], 7); return b }, "page 1 says it is page 7"},
		{"an odd number of items", func(b []byte) []byte { b[page(l.hashPages[0])+20]--; return b }, "not key and value pairs"},
		{"an index larger than the page", func(b []byte) []byte { le.PutUint16(b[page(l.hashPages[0])+20:], 300); return b }, "larger than the page"},
		{"an item offset into the index", func(b []byte) []byte { le.PutUint16(b[page(l.hashPages[0])+bdbPageHeader:], 20); return b }, "item 0 at offset 20, outside"},
		{"an item offset past the page", func(b []byte) []byte { le.PutUint16(b[page(l.hashPages[0])+bdbPageHeader:], 512); return b }, "item 0 at offset 512, outside"},
		{"item offsets out of order", func(b []byte) []byte {
			p := page(l.hashPages[0]) + bdbPageHeader
			le.PutUint16(b[p+2:], le.Uint16(b[p:])+1)
			return b
		}, "item 1 at offset"},
		{"free offset disagreeing", func(b []byte) []byte { b[page(l.hashPages[0])+22]--; return b }, "its header says"},
		{"a key of 5 bytes", func(b []byte) []byte {
			p := page(long.page) + bdbPageHeader + 2*(long.index-1)
			le.PutUint16(b[p:], le.Uint16(b[p:])-1) // the key takes a byte of the item before it
			return b
		}, "the key is not a 4-byte package number"},
		{"package number twice", func(b []byte) []byte {
			for _, it := range l.items {
				if it.index%2 == 0 {
					le.PutUint32(b[it.at+1:], 9)
				}
			}
			return b
		}, "package #9 is in the database twice"},
		{"duplicate values", func(b []byte) []byte { b[long.at] = bdbDuplicate; return b }, "duplicate values (item type 2)"},
		{"off-page duplicates", func(b []byte) []byte { b[long.at] = bdbOffDup; return b }, "item type 4"},
		{"unknown item type", func(b []byte) []byte { b[long.at] = 9; return b }, "unknown item type 9"},
		{"an off-page reference of 11 bytes", func(b []byte) []byte { b[inlineValue.at] = bdbOffPage; return b }, "off-page reference of"},
		{"value of length 0", func(b []byte) []byte { le.PutUint32(b[long.at+8:], 0); return b }, "value of 0 bytes"},
		{"value larger than the file", func(b []byte) []byte { le.PutUint32(b[long.at+8:], 1<<20); return b }, fmt.Sprintf("does not fit on the database's %d pages", last)},
		{"value one byte longer", func(b []byte) []byte { le.PutUint32(b[long.at+8:], tlen+1); return b }, fmt.Sprintf("the overflow pages hold %d bytes of the value's %d", tlen, tlen+1)},
		{"value one byte shorter", func(b []byte) []byte { le.PutUint32(b[long.at+8:], tlen-1); return b }, "hold more than the value's"},
		{"overflow page outside the file", func(b []byte) []byte { le.PutUint32(b[long.at+4:], last+1); return b }, fmt.Sprintf("overflow page %d is outside the database (1 to %d)", last+1, last)},
		{"overflow page 0", func(b []byte) []byte { le.PutUint32(b[long.at+4:], 0); return b }, "overflow page 0 is outside"},
		{"next overflow page outside the file", func(b []byte) []byte { le.PutUint32(b[page(chain[1])+16:], 4000); return b }, "overflow page 4000 is outside"},
		{"value on a hash page", func(b []byte) []byte { le.PutUint32(b[long.at+4:], l.hashPages[0]); return b }, "page 1 has type 13 (hash), not an overflow page"},
		{"overflow page that says it is another", func(b []byte) []byte { le.PutUint32(b[page(chain[1])+8:], 2); return b }, fmt.Sprintf("page %d says it is page 2", chain[1])},
		{"overflow page following another", func(b []byte) []byte { le.PutUint32(b[page(chain[2])+12:], 1); return b }, "says it follows page 1"},
		{"overflow page holding nothing", func(b []byte) []byte { le.PutUint16(b[page(chain[1])+22:], 0); return b }, "holds 0 bytes, not 1 to 486"},
		{"overflow page holding more than a page", func(b []byte) []byte { le.PutUint16(b[page(chain[1])+22:], 487); return b }, "holds 487 bytes"},
		{"overflow loop", func(b []byte) []byte {
			le.PutUint32(b[page(chain[2])+16:], chain[0])
			le.PutUint32(b[long.at+8:], tlen+486) // longer than the chain, so the loop goes on
			return b
		}, fmt.Sprintf("overflow page %d is used twice", chain[0])},
		{"overflow page pointing at itself", func(b []byte) []byte {
			le.PutUint32(b[page(chain[1])+16:], chain[1])
			return b
		}, "is used twice"},
		{"two values on the same overflow pages", func(b []byte) []byte {
			var other bdbTestItem
			for _, it := range l.items {
				if it.index%2 == 1 && good[it.at] == bdbOffPage && it.at != long.at {
					other = it
				}
			}
			copy(b[other.at+4:other.at+12], b[long.at+4:long.at+12])
			return b
		}, "is used twice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.change(append([]byte(nil), good...))
			done := make(chan error, 1)
			go func() {
				_, err := readRPMBDB(bytes.NewReader(b), int64(len(b)))
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("readRPMBDB = %v; want an error with %q", err, tt.err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("readRPMBDB did not return in 10 s")
			}
		})
	}

	// Free pages (type 0, whatever else they hold) are no packages.
	b := append([]byte(nil), good...)
	b = append(b, make([]byte, 2*l.pageSize)...)
	copy(b[len(b)-l.pageSize:], good[page(chain[0]):page(chain[0]+1)])
	b[len(b)-l.pageSize+25] = bdbPageInvalid
	le.PutUint32(b[32:], last+2)
	if recs, err := readRPMBDB(bytes.NewReader(b), int64(len(b))); err != nil || len(recs) != len(centos7Packages) {
		t.Errorf("with free pages: %d records, %v", len(recs), err)
	}
	// Version 8 (Berkeley DB before 4.8) has the same pages.
	b = append([]byte(nil), good...)
	le.PutUint32(b[16:], 8)
	if recs, err := readRPMBDB(bytes.NewReader(b), int64(len(b))); err != nil || len(recs) != len(centos7Packages) {
		t.Errorf("version 8: %d records, %v", len(recs), err)
	}
}

// openRPM reads the Packages file, follows the /var/lib/rpm link, says
// which header is damaged, and changes nothing in the rpm directory.
func TestOpenRPMBDB(t *testing.T) {
	tr := fakehost.New(t)
	be := rpmBDBFixtureNamed(t, "centos7.be")
	tr.File("usr/lib/sysimage/rpm/Packages", string(be.read(t)), 0o644).Link("var/lib/rpm", "../../usr/lib/sysimage/rpm")
	before := tr.Listing()
	db, err := openRPM(tr.Root())
	if err != nil {
		t.Fatal(err)
	}
	for label, want := range map[string]string{
		"nfs-utils":     "installed as nfs-utils-2.5.4-1 (/var/lib/rpm/Packages)",
		"device-mapper": "installed as device-mapper-1.02.170-6.el7 (/var/lib/rpm/Packages)",
		"lvm2":          "none of the 5 packages in /var/lib/rpm/Packages is named lvm2",
	} {
		if ev, _ := db.installed(label); ev != want {
			t.Errorf("%s: %s; want %s", label, ev, want)
		}
	}
	if after := tr.Listing(); after != before {
		t.Errorf("the tree changed:\n%s\n---\n%s", before, after)
	}

	// A header that does not parse makes the database unreadable.
	b := be.read(t)
	l := bdbTestLayout(t, b)
	for _, it := range l.items {
		if it.index%2 == 1 && b[it.at] == bdbKeyData && it.at+1+4 <= len(b) && binary.BigEndian.Uint32(b[it.at+1:]) == 4 { // device-mapper: 4 index entries
			binary.BigEndian.PutUint32(b[it.at+1:], 5)
		}
	}
	tr.File("usr/lib/sysimage/rpm/Packages", string(b), 0o644)
	if _, err := openRPM(tr.Root()); err == nil || !strings.Contains(err.Error(), "/var/lib/rpm/Packages: package #4: damaged header: ") {
		t.Errorf("damaged header: %v", err)
	}
	tr.Remove("usr/lib/sysimage/rpm/Packages").Mkdir("usr/lib/sysimage/rpm/Packages")
	if _, err := openRPM(tr.Root()); err == nil || !strings.Contains(err.Error(), "/var/lib/rpm/Packages: not a regular file") {
		t.Errorf("directory: %v", err)
	}
}

func FuzzRPMBDB(f *testing.F) {
	for _, fx := range rpmBDBFixtures {
		if b := fx.read(f); len(b) < 8192 { // not many.le: the fuzzer minimizes what it finds slowly on 70 KB
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := readRPMBDB(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		total := 0
		for _, r := range recs {
			total += len(r.blob)
			parseRPMHeader(r.blob)
		}
		if total > len(b) {
			t.Errorf("%d bytes of values from a file of %d", total, len(b))
		}
	})
}
