package hostprep

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"
)

// rpmTestEntry is one entry of a header built for a test.
type rpmTestEntry struct {
	tag, typ, count uint32
	data            []byte
}

func rpmString(tag uint32, s string) rpmTestEntry {
	return rpmTestEntry{tag, rpmTypeString, 1, append([]byte(s), 0)}
}

func rpmStringArray(tag uint32, ss ...string) rpmTestEntry {
	return rpmTestEntry{tag, rpmTypeStringArray, uint32(len(ss)), []byte(strings.Join(ss, "\x00") + "\x00")}
}

func rpmInt32(tag uint32, v uint32) rpmTestEntry {
	return rpmTestEntry{tag, 4, 1, binary.BigEndian.AppendUint32(nil, v)}
}

// rpmHeaderBlob lays entries out as rpm writes a package header to its
// database: the immutable region tag first, then each entry's data in
// order, aligned to its type, then the region trailer (the region holds
// every entry).
func rpmHeaderBlob(entries ...rpmTestEntry) []byte {
	var index [][4]uint32
	var data []byte
	for _, e := range entries {
		if a := rpmTypeSize[e.typ]; a > 1 {
			for len(data)%a != 0 {
				data = append(data, 0)
			}
		}
		index = append(index, [4]uint32{e.tag, e.typ, uint32(len(data)), e.count})
		data = append(data, e.data...)
	}
	il := uint32(len(index) + 1)
	trailer := [4]uint32{rpmTagHeaderImmutable, rpmTypeBin, uint32(-int32(il * rpmEntrySize)), rpmEntrySize}
	region := [4]uint32{rpmTagHeaderImmutable, rpmTypeBin, uint32(len(data)), rpmEntrySize}
	for _, v := range trailer {
		data = binary.BigEndian.AppendUint32(data, v)
	}
	return rawRPMHeader(append([][4]uint32{region}, index...), data)
}

// rawRPMHeader is il, dl, the index entries and the data, as they are.
func rawRPMHeader(index [][4]uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(index)))
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	for _, e := range index {
		for _, v := range e {
			b = binary.BigEndian.AppendUint32(b, v)
		}
	}
	return append(b, data...)
}

// rpmTestPackage is the header of an installed package with the tags rpm
// queries look at most: name, version, release, summary, build time,
// architecture, and what it provides (itself, as rpmbuild adds, and
// provides).
func rpmTestPackage(name, version, release string, provides ...string) []byte {
	return rpmHeaderBlob(
		rpmString(rpmTagName, name),
		rpmString(rpmTagVersion, version),
		rpmString(rpmTagRelease, release),
		rpmString(1004, "the "+name+" package"),
		rpmInt32(1006, 1700000000),
		rpmString(1022, "x86_64"),
		rpmStringArray(1047, append([]string{name}, provides...)...),
	)
}

// rpmHeaderSet returns b with field f (0 tag, 1 type, 2 offset, 3 count)
// of index entry i set to v.
func rpmHeaderSet(b []byte, i, f int, v uint32) []byte {
	b = append([]byte(nil), b...)
	binary.BigEndian.PutUint32(b[8+rpmEntrySize*i+4*f:], v)
	return b
}

// Headers written by rpm itself: rpm 4.18.0 (Debian 12) built packages
// from specs with no files (open-iscsi-git with "Provides:
// iscsi-initiator-utils") and installed them with `rpm -i --justdb` into an
// empty root; these are their Packages.blob in that rpmdb.sqlite (a region
// of 32 entries with SHA1HEADER and SHA256HEADER, and 8 entries after it).
func TestParseRPMHeaderFromRPM(t *testing.T) {
	for file, want := range map[string]rpmPackage{
		"nfs-utils-2.5.4-1.noarch":    {"nfs-utils", "2.5.4", "1"},
		"open-iscsi-git-1.0-1.noarch": {"open-iscsi-git", "1.0", "1"},
	} {
		b, err := os.ReadFile("testdata/rpmheader/" + file)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseRPMHeader(b)
		if err != nil || got != want {
			t.Errorf("%s: %+v, %v; want %+v", file, got, err, want)
		}
	}
}

func TestParseRPMHeader(t *testing.T) {
	good := rpmTestPackage("nfs-utils", "2.5.4", "9.el9", "nfs-client")
	if p, err := parseRPMHeader(good); err != nil || p != (rpmPackage{"nfs-utils", "2.5.4", "9.el9"}) {
		t.Fatalf("built header: %+v, %v", p, err)
	}
	il := binary.BigEndian.Uint32(good)
	dl := binary.BigEndian.Uint32(good[4:])
	dataAt := 8 + rpmEntrySize*int(il)
	buildTime := binary.BigEndian.Uint32(good[8+rpmEntrySize*5+8:]) // offset of entry 5, an INT32
	noNUL := rawRPMHeader([][4]uint32{{rpmTagName, rpmTypeString, 0, 1}}, []byte("nfs-utils"))

	for _, tt := range []struct {
		name string
		blob []byte
		err  string // in the error
	}{
		{"empty", nil, "shorter than its two length fields"},
		{"7 bytes", good[:7], "shorter than its two length fields"},
		{"no entries", make([]byte, 8), "0 index entries"},
		{"il too large", append(binary.BigEndian.AppendUint32(nil, 0x10000), good[4:]...), "65536 index entries"},
		{"dl too large", append(append(good[:4:4], 0x10, 0, 0, 0), good[8:]...), "bytes of data, more than"},
		{"one byte short", good[:len(good)-1], "not 8 + 16 *"},
		{"one byte more", append(good[:len(good):len(good)], 0), "not 8 + 16 *"},
		{"region tag of type STRING", rpmHeaderSet(good, 0, 1, rpmTypeString), "region tag 63 has type 6"},
		{"region tag count 8", rpmHeaderSet(good, 0, 3, 8), "count 8"},
		{"region trailer past the data", rpmHeaderSet(good, 0, 2, dl-8), "outside the"},
		{"region trailer at a negative offset", rpmHeaderSet(good, 0, 2, 0xfffffff0), "outside the"},
		{"region trailer of another tag", func() []byte {
			b := append([]byte(nil), good...)
			binary.BigEndian.PutUint32(b[dataAt+int(dl)-16:], rpmTagHeaderImage)
			return b
		}(), "region trailer has tag 61"},
		{"region larger than the index", func() []byte {
			b := append([]byte(nil), good...)
			binary.BigEndian.PutUint32(b[dataAt+int(dl)-8:], uint32(-int32((il+1)*16)))
			return b
		}(), "region trailer gives the region"},
		{"region size not a multiple of 16", func() []byte {
			b := append([]byte(nil), good...)
			binary.BigEndian.PutUint32(b[dataAt+int(dl)-8:], 0xffffffec) // -20
			return b
		}(), "not a multiple of 16"},
		{"entry tag below 100", rpmHeaderSet(good, 4, 0, 99), "tag 99, below 100"},
		{"entry of type 10", rpmHeaderSet(good, 4, 1, 10), "type 10, not 0 to 9"},
		{"entry of count 0", rpmHeaderSet(good, 5, 3, 0), "count 0"},
		{"entry count larger than the data", rpmHeaderSet(good, 5, 3, dl+1), "not 1 to"},
		{"entry offset negative", rpmHeaderSet(good, 1, 2, 0xffffffff), "offset -1"},
		{"entry offset past the data", rpmHeaderSet(good, 7, 2, dl+1), "outside the"},
		{"entries out of order", rpmHeaderSet(good, 2, 2, 0), "overlaps the data before it"},
		{"INT32 not aligned", rpmHeaderSet(good, 5, 2, buildTime+1), "not aligned"},
		{"INT32 array past the data", rpmHeaderSet(good, 5, 3, 20), "do not fit"},
		{"NULL type", rpmHeaderSet(good, 5, 1, 0), "type 0 (NULL) holds no data"},
		{"STRING without NUL", noNUL, "has no NUL before the end of the data"},
		{"STRING of count 2", rpmHeaderSet(good, 1, 3, 2), "a STRING of count 2"},
		{"strings running into the trailer", rpmHeaderSet(good, 7, 3, 4), "overlaps the region trailer"},
		{"NAME as a string array", rpmHeaderSet(good, 1, 1, rpmTypeStringArray), "tag 1000 has type 8, not STRING"},
		{"NAME twice", rpmHeaderBlob(rpmString(rpmTagName, "a"), rpmString(rpmTagName, "b")), "tag 1000 is in the header twice"},
		{"no NAME", rpmHeaderBlob(rpmString(rpmTagVersion, "1"), rpmString(rpmTagRelease, "1")), "no NAME"},
		{"empty NAME", rpmHeaderBlob(rpmString(rpmTagName, "")), "no NAME (tag 1000), or an empty one"},
		{"a gap in the data", rawRPMHeader([][4]uint32{{rpmTagName, rpmTypeString, 4, 1}}, []byte("xxx\x00nfs\x00")), "entries hold 4 bytes of data, the header has 8"},
		{"no region, entry below 100", rawRPMHeader([][4]uint32{{1004, rpmTypeString, 0, 1}, {50, rpmTypeString, 4, 1}}, []byte("nfs\x00abc\x00")), "tag 50, below 100"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := parseRPMHeader(tt.blob)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseRPMHeader = %+v, %v; want an error with %q", p, err, tt.err)
			}
		})
	}

	// Without a region tag rpm still reads a header (an old v3 one).
	if p, err := parseRPMHeader(rawRPMHeader([][4]uint32{{rpmTagName, rpmTypeString, 0, 1}}, []byte("nfs\x00"))); err != nil || p.name != "nfs" {
		t.Errorf("header without a region: %+v, %v", p, err)
	}
}
