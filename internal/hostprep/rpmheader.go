package hostprep

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// An rpm header, as rpm keeps one per installed package in its database
// (the blob column of rpmdb.sqlite's Packages table; rpm's "hdrblob"):
//
//	il uint32, dl uint32   big-endian: the number of index entries and the
//	                       length of the data that follows them
//	il entries of 16 bytes {tag, type, offset, count}, each a big-endian
//	                       uint32 (offset signed), offset into the data
//	dl bytes of data
//
// The first entry is usually a region tag (63, HEADERIMMUTABLE): its data
// is a 16-byte trailer entry at the end of the region's data, whose negated
// offset is the region's size in index bytes. Entries past the region
// ("dribbles", such as the install time) follow it.
//
// parseRPMHeader accepts a blob only when it passes the structural checks
// rpm itself makes before it uses a header read from its database
// (hdrblobInit, hdrblobVerifyRegion, hdrblobVerifyInfo and the length
// check of hdrblobImport in rpm's lib/header.c), and is stricter where
// that costs nothing on headers rpm writes: NAME, VERSION and RELEASE must
// be of type STRING, appear once, and NAME must not be empty. It does not
// verify the header's digests (SHA256HEADER, SHA1HEADER), which rpm checks
// too, nor the type of tags it does not read.

const (
	rpmTagHeaderImage      = 61  // legacy region tag
	rpmTagHeaderSignatures = 62  // region tag of a signature header
	rpmTagHeaderImmutable  = 63  // region tag of a package header
	rpmTagMinEntry         = 100 // HEADER_I18NTABLE: no entry but a region tag is below it
	rpmTagName             = 1000
	rpmTagVersion          = 1001
	rpmTagRelease          = 1002

	rpmTypeString      = 6
	rpmTypeBin         = 7
	rpmTypeStringArray = 8
	rpmTypeI18NString  = 9
	rpmTypeMax         = rpmTypeI18NString

	rpmEntrySize = 16

	rpmMaxEntries = 0xffff     // HEADER_TAGS_MAX
	rpmMaxData    = 0x0fffffff // HEADER_DATA_MAX
	rpmMaxArray   = 0x000fffff // HEADER_ARRAY_MAX: elements of a non-BIN entry
	rpmMaxBlob    = 256 << 20  // headerMaxbytes
)

// rpmTypeSize is the size of one element of each type; -1 for the string
// types (NUL-terminated), 0 for NULL. rpm aligns an entry's offset to it.
var rpmTypeSize = [rpmTypeMax + 1]int{0, 1, 1, 2, 4, 8, -1, 1, -1, -1}

// rpmPackage is what `rpm -q` compares of an installed package.
type rpmPackage struct{ name, version, release string }

type rpmEntry struct {
	tag, typ uint32
	offset   int32
	count    uint32
}

// parseRPMHeader returns the name, version and release of the package an
// rpm header blob describes.
func parseRPMHeader(b []byte) (rpmPackage, error) {
	var p rpmPackage
	if len(b) < 8 {
		return p, fmt.Errorf("header of %d bytes is shorter than its two length fields", len(b))
	}
	il, dl := binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
	if il < 1 || il > rpmMaxEntries {
		return p, fmt.Errorf("header has %d index entries, not 1 to %d", il, rpmMaxEntries)
	}
	if dl > rpmMaxData {
		return p, fmt.Errorf("header has %d bytes of data, more than %d", dl, rpmMaxData)
	}
	if want := 8 + rpmEntrySize*uint64(il) + uint64(dl); want >= rpmMaxBlob || uint64(len(b)) != want {
		return p, fmt.Errorf("header is %d bytes, not 8 + 16 * %d index entries + %d bytes of data", len(b), il, dl)
	}
	index, data := b[8:8+rpmEntrySize*int(il)], b[8+rpmEntrySize*int(il):]
	entry := func(i int) rpmEntry {
		e := index[rpmEntrySize*i:]
		return rpmEntry{tag: binary.BigEndian.Uint32(e), typ: binary.BigEndian.Uint32(e[4:]),
			offset: int32(binary.BigEndian.Uint32(e[8:])), count: binary.BigEndian.Uint32(e[12:])}
	}

	// The region: its trailer sits at the end of the region's data.
	first, regionEnd := 0, 0 // regionEnd: data bytes up to and with the trailer
	if e := entry(0); e.tag == rpmTagHeaderImage || e.tag == rpmTagHeaderSignatures || e.tag == rpmTagHeaderImmutable {
		if e.typ != rpmTypeBin || e.count != rpmEntrySize {
			return p, fmt.Errorf("region tag %d has type %d and count %d, not %d and %d", e.tag, e.typ, e.count, rpmTypeBin, rpmEntrySize)
		}
		if e.offset < 0 || int64(e.offset)+rpmEntrySize > int64(dl) {
			return p, fmt.Errorf("region tag %d: trailer at %d is outside the %d bytes of data", e.tag, e.offset, dl)
		}
		t := data[e.offset : e.offset+rpmEntrySize]
		ttag, ttyp, tcount := binary.BigEndian.Uint32(t), binary.BigEndian.Uint32(t[4:]), binary.BigEndian.Uint32(t[12:])
		size := -int64(int32(binary.BigEndian.Uint32(t[8:])))
		if ttag != e.tag || ttyp != rpmTypeBin || tcount != rpmEntrySize {
			return p, fmt.Errorf("region trailer has tag %d, type %d, count %d, not %d, %d, %d", ttag, ttyp, tcount, e.tag, rpmTypeBin, rpmEntrySize)
		}
		if size < 0 || size%rpmEntrySize != 0 || size/rpmEntrySize > int64(il) {
			return p, fmt.Errorf("region trailer gives the region %d index bytes, not a multiple of 16 up to %d entries", size, il)
		}
		first, regionEnd = 1, int(e.offset)+rpmEntrySize
	}

	// The other entries: each within the data, in order, not overlapping;
	// their lengths, aligned, add up to the data (hdrblobImport).
	end, total := 0, 0
	var seen [3]bool // NAME, VERSION, RELEASE
	for i := first; i < int(il); i++ {
		e := entry(i)
		switch {
		case e.tag < rpmTagMinEntry:
			return p, fmt.Errorf("entry %d has tag %d, below %d", i, e.tag, rpmTagMinEntry)
		case e.typ > rpmTypeMax:
			return p, fmt.Errorf("entry %d (tag %d) has type %d, not 0 to %d", i, e.tag, e.typ, rpmTypeMax)
		case e.count < 1 || e.count > dl:
			return p, fmt.Errorf("entry %d (tag %d) has count %d, not 1 to %d", i, e.tag, e.count, dl)
		case e.typ != rpmTypeBin && e.count > rpmMaxArray:
			return p, fmt.Errorf("entry %d (tag %d) has %d elements, more than %d", i, e.tag, e.count, rpmMaxArray)
		case e.offset < 0 || int64(e.offset) > int64(dl):
			return p, fmt.Errorf("entry %d (tag %d) has offset %d, outside the %d bytes of data", i, e.tag, e.offset, dl)
		case int(e.offset) < end:
			return p, fmt.Errorf("entry %d (tag %d) at offset %d overlaps the data before it (up to %d)", i, e.tag, e.offset, end)
		case rpmTypeSize[e.typ] > 1 && int(e.offset)%rpmTypeSize[e.typ] != 0:
			return p, fmt.Errorf("entry %d (tag %d) of type %d has offset %d, not aligned", i, e.tag, e.typ, e.offset)
		}
		size, err := rpmDataSize(e, data[e.offset:])
		if err != nil {
			return p, fmt.Errorf("entry %d (tag %d): %w", i, e.tag, err)
		}
		end = int(e.offset) + size
		if regionEnd > 0 && end > regionEnd-rpmEntrySize && int(e.offset) < regionEnd {
			return p, fmt.Errorf("entry %d (tag %d) overlaps the region trailer", i, e.tag)
		}
		if a := rpmTypeSize[e.typ]; a > 1 && total%a != 0 {
			total += a - total%a
		}
		total += size

		if e.tag < rpmTagName || e.tag > rpmTagRelease {
			continue
		}
		if e.typ != rpmTypeString {
			return p, fmt.Errorf("tag %d has type %d, not STRING (%d)", e.tag, e.typ, rpmTypeString)
		}
		if seen[e.tag-rpmTagName] {
			return p, fmt.Errorf("tag %d is in the header twice", e.tag)
		}
		seen[e.tag-rpmTagName] = true
		*[]*string{&p.name, &p.version, &p.release}[e.tag-rpmTagName] = string(data[e.offset : end-1])
	}
	if regionEnd > 0 {
		total += rpmEntrySize
	}
	if total != int(dl) {
		return p, fmt.Errorf("entries hold %d bytes of data, the header has %d", total, dl)
	}
	if p.name == "" {
		return p, fmt.Errorf("no NAME (tag %d), or an empty one", rpmTagName)
	}
	return p, nil
}

// rpmDataSize is the length of an entry's data at the start of rest (the
// data from its offset on), as rpm's dataLength counts it.
func rpmDataSize(e rpmEntry, rest []byte) (int, error) {
	switch e.typ {
	case rpmTypeString, rpmTypeStringArray, rpmTypeI18NString:
		if e.typ == rpmTypeString && e.count != 1 {
			return 0, fmt.Errorf("a STRING of count %d, not 1", e.count)
		}
		n := 0
		for c := uint32(0); c < e.count; c++ {
			nul := bytes.IndexByte(rest[n:], 0)
			if nul < 0 {
				return 0, fmt.Errorf("string %d of %d has no NUL before the end of the data", c+1, e.count)
			}
			n += nul + 1
		}
		return n, nil
	}
	if e.typ == 0 {
		return 0, fmt.Errorf("type 0 (NULL) holds no data")
	}
	size := rpmTypeSize[e.typ] * int(e.count)
	if size > len(rest) {
		return 0, fmt.Errorf("%d elements of type %d do not fit in the %d bytes of data left", e.count, e.typ, len(rest))
	}
	return size, nil
}
