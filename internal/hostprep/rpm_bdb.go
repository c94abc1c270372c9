package hostprep

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/wgmesh/wgmesh/internal/hostfs"
)

// rpm's Berkeley DB database (rpm before 4.16: CentOS 7, RHEL 8 and its
// rebuilds, Amazon Linux 2) keeps one rpm header per installed package
// in the file Packages, a Berkeley DB hash database: the key is the
// package's instance number (4 bytes, in the database's byte order), the
// value its header blob. Instance 0 is no package: its value is the
// largest instance number yet, which rpm skips.
//
// The file is a sequence of pages of one size (Berkeley DB's db_page.h):
//
//	page 0, the metadata page: lsn [8], pgno u32, magic u32 (0x061561 for
//	    hash), version u32, pagesize u32, encrypt_alg u8, type u8 (8,
//	    P_HASHMETA), metaflags u8, unused u8, free u32, last_pgno u32, ...,
//	    flags u32 at 48; then the hash fields from 72
//	every other page: a 26-byte header lsn [8], pgno u32, prev_pgno u32,
//	    next_pgno u32, entries u16, hf_offset u16, level u8, type u8
//
// Numbers are in the byte order of the machine that created the file; the
// magic number tells which. A hash page (type 13, P_HASH, or 2,
// P_HASH_UNSORTED before Berkeley DB 4.6) has entries 2-byte offsets after
// its header, to items packed from the end of the page down, key and data
// alternating; an item runs from its offset to the previous item's offset
// (the page's end for the first). Its first byte is its type: 1
// (H_KEYDATA) followed by the bytes themselves, or 3 (H_OFFPAGE): 3 unused
// bytes, the first page u32 and the total length u32 of the value, which
// is on overflow pages (type 7): each holds hf_offset bytes after its
// header and names the next in next_pgno (0 for the last) and the one
// before in prev_pgno. Free and never written pages have type 0
// (P_INVALID).
//
// readRPMBDB reads every page once, in page order, up to the metadata's
// last page, and follows each value's overflow pages, none of which may
// belong to two values, so a damaged file is an error and never a loop.
// It refuses what rpm's Packages file never holds (duplicate keys, pages
// of another access method, checksummed, encrypted or partitioned
// databases) and checks every offset, length and page number it uses; it
// reads the file as it is on disk, without Berkeley DB's environment
// (changes that rpm, while it runs, holds in the environment's cache are
// not in the file yet).

const (
	bdbHashMagic  = 0x061561
	bdbBtreeMagic = 0x053162
	bdbQueueMagic = 0x042253
	bdbHeapMagic  = 0x074582

	bdbMetaSize   = 512 // DBMETASIZE: the smallest page, and what the metadata needs
	bdbPageHeader = 26  // SIZEOF_PAGE

	bdbPageInvalid      = 0  // P_INVALID: free, or never written
	bdbPageHashUnsorted = 2  // P_HASH_UNSORTED
	bdbPageOverflow     = 7  // P_OVERFLOW
	bdbPageHashMeta     = 8  // P_HASHMETA
	bdbPageHash         = 13 // P_HASH

	bdbKeyData     = 1  // H_KEYDATA
	bdbDuplicate   = 2  // H_DUPLICATE
	bdbOffPage     = 3  // H_OFFPAGE
	bdbOffDup      = 4  // H_OFFDUP
	bdbOffPageSize = 12 // HOFFPAGE: type, 3 unused, pgno, tlen

	bdbHashSubDB = 0x02 // DB_HASH_SUBDB in the metadata's flags
)

// rpmBDBRecord is one package of the Packages file: its instance number
// and its header blob.
type rpmBDBRecord struct {
	hnum uint32
	blob []byte
}

// openRPMBDB reads rpm's Berkeley DB Packages file at host path p: every
// header must parse, as in rpmdb.sqlite (see openRPMSQLite).
func openRPMBDB(root hostfs.Root, p string) (packageDB, error) {
	f, size, _, err := openRPMFile(root, p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := readRPMBDB(f, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	d := rpmDB{path: p}
	for _, r := range recs {
		pkg, err := parseRPMHeader(r.blob)
		if err != nil {
			return nil, fmt.Errorf("%s: package #%d: damaged header: %w", p, r.hnum, err)
		}
		d.pkgs = append(d.pkgs, pkg)
	}
	return d, nil
}

// bdbFile is an open Berkeley DB hash database.
type bdbFile struct {
	r        io.ReaderAt
	order    binary.ByteOrder
	pageSize int
	last     uint32 // last_pgno
	claimed  []bool // overflow pages a value has used, by page number
}

// bdbPage is a page's header.
type bdbPage struct {
	pgno, prev, next  uint32
	entries, hfOffset uint16
	typ               byte
}

// readRPMBDB returns the packages of rpm's Packages file, r of size bytes,
// by instance number.
func readRPMBDB(r io.ReaderAt, size int64) ([]rpmBDBRecord, error) {
	f, err := openBDBHash(r, size)
	if err != nil {
		return nil, err
	}
	var recs []rpmBDBRecord
	seen := map[uint32]bool{}
	buf := make([]byte, f.pageSize)
	for n := uint32(1); n <= f.last; n++ {
		h, err := f.readPage(n, buf)
		if err != nil {
			return nil, err
		}
		switch h.typ {
		case bdbPageInvalid, bdbPageOverflow:
			continue // free; or read with the value it holds
		case bdbPageHash, bdbPageHashUnsorted:
		default:
			return nil, fmt.Errorf("page %d has type %d (%s), which a hash database of rpm's does not hold", n, h.typ, bdbPageTypeName(h.typ))
		}
		if h.pgno != n {
			return nil, fmt.Errorf("page %d says it is page %d", n, h.pgno)
		}
		items, err := f.hashItems(n, h, buf)
		if err != nil {
			return nil, err
		}
		for i := 0; i < len(items); i += 2 {
			key, data := items[i], items[i+1]
			if key[0] != bdbKeyData || len(key) != 5 {
				return nil, fmt.Errorf("page %d, item %d: the key is not a 4-byte package number (type %d, %d bytes)", n, i, key[0], len(key)-1)
			}
			hnum := f.order.Uint32(key[1:])
			if seen[hnum] {
				return nil, fmt.Errorf("page %d, item %d: package #%d is in the database twice", n, i, hnum)
			}
			seen[hnum] = true
			var blob []byte
			switch data[0] {
			case bdbKeyData:
				blob = append([]byte(nil), data[1:]...)
			case bdbOffPage:
				if len(data) != bdbOffPageSize {
					return nil, fmt.Errorf("page %d, item %d: off-page reference of %d bytes, not %d", n, i+1, len(data), bdbOffPageSize)
				}
				blob, err = f.overflow(f.order.Uint32(data[4:]), f.order.Uint32(data[8:]))
				if err != nil {
					return nil, fmt.Errorf("package #%d (page %d, item %d): %w", hnum, n, i+1, err)
				}
			case bdbDuplicate, bdbOffDup:
				return nil, fmt.Errorf("page %d, item %d: duplicate values (item type %d), which rpm never writes", n, i+1, data[0])
			default:
				return nil, fmt.Errorf("page %d, item %d: unknown item type %d", n, i+1, data[0])
			}
			if hnum == 0 {
				continue // the largest instance number, not a package
			}
			recs = append(recs, rpmBDBRecord{hnum, blob})
		}
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].hnum < recs[j].hnum })
	return recs, nil
}

// openBDBHash reads and checks the metadata page.
func openBDBHash(r io.ReaderAt, size int64) (*bdbFile, error) {
	if size == 0 {
		return nil, errors.New("the file is empty")
	}
	if size < bdbMetaSize {
		return nil, fmt.Errorf("the file has %d bytes, fewer than a Berkeley DB metadata page (%d)", size, bdbMetaSize)
	}
	m := make([]byte, bdbMetaSize)
	if _, err := r.ReadAt(m, 0); err != nil {
		return nil, fmt.Errorf("metadata page: %w", err)
	}
	f := &bdbFile{r: r}
	switch {
	case binary.LittleEndian.Uint32(m[12:]) == bdbHashMagic:
		f.order = binary.LittleEndian
	case binary.BigEndian.Uint32(m[12:]) == bdbHashMagic:
		f.order = binary.BigEndian
	default:
		for _, o := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			switch o.Uint32(m[12:]) {
			case bdbBtreeMagic:
				return nil, errors.New("a Berkeley DB btree database, not the hash database rpm's Packages is")
			case bdbQueueMagic:
				return nil, errors.New("a Berkeley DB queue database, not the hash database rpm's Packages is")
			case bdbHeapMagic:
				return nil, errors.New("a Berkeley DB heap database, not the hash database rpm's Packages is")
			}
		}
		return nil, fmt.Errorf("not a Berkeley DB hash database (bytes 12 to 15 are % x, not the magic number %#06x)", m[12:16], bdbHashMagic)
	}
	o := f.order
	if v := o.Uint32(m[16:]); v != 8 && v != 9 {
		return nil, fmt.Errorf("Berkeley DB hash version %d; wgmesh-hostprep reads versions 8 and 9 (Berkeley DB 4 and 5)", v)
	}
	ps := o.Uint32(m[20:])
	if ps < bdbMetaSize || ps > 65536 || ps&(ps-1) != 0 {
		return nil, fmt.Errorf("page size %d is not a power of 2 from 512 to 65536", ps)
	}
	f.pageSize = int(ps)
	switch {
	case m[24] != 0:
		return nil, fmt.Errorf("the database is encrypted (algorithm %d), which rpm does not set up", m[24])
	case m[25] != bdbPageHashMeta:
		return nil, fmt.Errorf("page 0 has type %d, not %d (hash metadata)", m[25], bdbPageHashMeta)
	case m[26] != 0:
		return nil, fmt.Errorf("the metadata's flags %#x ask for page checksums or partitions, which rpm does not set up", m[26])
	case o.Uint32(m[8:]) != 0:
		return nil, fmt.Errorf("the metadata page says it is page %d, not 0", o.Uint32(m[8:]))
	case o.Uint32(m[48:])&bdbHashSubDB != 0:
		return nil, errors.New("a Berkeley DB file of several databases, not rpm's Packages")
	}
	f.last = o.Uint32(m[32:])
	if need := (int64(f.last) + 1) * int64(f.pageSize); size < need {
		return nil, fmt.Errorf("the file has %d bytes, fewer than the %d pages of %d bytes its metadata counts (%d bytes): it is cut short", size, int64(f.last)+1, f.pageSize, need)
	}
	f.claimed = make([]bool, int(f.last)+1)
	return f, nil
}

// readPage reads page n (1 to last) into buf and returns its header.
func (f *bdbFile) readPage(n uint32, buf []byte) (bdbPage, error) {
	if _, err := f.r.ReadAt(buf, int64(n)*int64(f.pageSize)); err != nil {
		return bdbPage{}, fmt.Errorf("page %d: %w", n, err)
	}
	o := f.order
	return bdbPage{
		pgno:     o.Uint32(buf[8:]),
		prev:     o.Uint32(buf[12:]),
		next:     o.Uint32(buf[16:]),
		entries:  o.Uint16(buf[20:]),
		hfOffset: o.Uint16(buf[22:]),
		typ:      buf[25],
	}, nil
}

// hashItems returns the items of hash page n (header h, bytes buf), each
// with its type byte first.
func (f *bdbFile) hashItems(n uint32, h bdbPage, buf []byte) ([][]byte, error) {
	if h.entries%2 != 0 {
		return nil, fmt.Errorf("page %d holds %d items, not key and value pairs", n, h.entries)
	}
	indexEnd := bdbPageHeader + 2*int(h.entries)
	if indexEnd > f.pageSize {
		return nil, fmt.Errorf("page %d: the index of %d items is larger than the page", n, h.entries)
	}
	items := make([][]byte, h.entries)
	end := f.pageSize
	for i := range items {
		off := int(f.order.Uint16(buf[bdbPageHeader+2*i:]))
		if off < indexEnd || off >= end {
			return nil, fmt.Errorf("page %d: item %d at offset %d, outside %d to %d", n, i, off, indexEnd, end-1)
		}
		items[i] = buf[off:end]
		end = off
	}
	if int(h.hfOffset) != end && !(end == 65536 && h.hfOffset == 0) { // 65536 is 0 in 16 bits
		return nil, fmt.Errorf("page %d: its items start at offset %d, its header says %d", n, end, h.hfOffset)
	}
	return items, nil
}

// overflow returns the tlen bytes of a value held on the overflow pages
// from page first on.
func (f *bdbFile) overflow(first, tlen uint32) ([]byte, error) {
	if tlen == 0 || tlen > rpmMaxBlob {
		return nil, fmt.Errorf("value of %d bytes, not 1 to %d", tlen, rpmMaxBlob)
	}
	space := uint32(f.pageSize - bdbPageHeader)
	if pages := (uint64(tlen) + uint64(space) - 1) / uint64(space); pages > uint64(f.last) {
		return nil, fmt.Errorf("value of %d bytes does not fit on the database's %d pages", tlen, f.last)
	}
	blob := make([]byte, 0, tlen)
	buf := make([]byte, f.pageSize)
	prev := uint32(0)
	for n := first; ; {
		if n == 0 || n > f.last {
			return nil, fmt.Errorf("overflow page %d is outside the database (1 to %d)", n, f.last)
		}
		if f.claimed[n] {
			return nil, fmt.Errorf("overflow page %d is used twice", n)
		}
		f.claimed[n] = true
		h, err := f.readPage(n, buf)
		if err != nil {
			return nil, err
		}
		switch {
		case h.typ != bdbPageOverflow:
			return nil, fmt.Errorf("page %d has type %d (%s), not an overflow page", n, h.typ, bdbPageTypeName(h.typ))
		case h.pgno != n:
			return nil, fmt.Errorf("page %d says it is page %d", n, h.pgno)
		case h.prev != prev:
			return nil, fmt.Errorf("overflow page %d follows page %d, and says it follows page %d", n, prev, h.prev)
		case h.hfOffset == 0 || uint32(h.hfOffset) > space:
			return nil, fmt.Errorf("overflow page %d holds %d bytes, not 1 to %d", n, h.hfOffset, space)
		case uint64(len(blob))+uint64(h.hfOffset) > uint64(tlen):
			return nil, fmt.Errorf("the overflow pages hold more than the value's %d bytes", tlen)
		}
		blob = append(blob, buf[bdbPageHeader:bdbPageHeader+int(h.hfOffset)]...)
		if h.next == 0 {
			break
		}
		prev, n = n, h.next
	}
	if len(blob) != int(tlen) {
		return nil, fmt.Errorf("the overflow pages hold %d bytes of the value's %d", len(blob), tlen)
	}
	return blob, nil
}

// bdbPageTypeName names a page type of db_page.h.
func bdbPageTypeName(t byte) string {
	names := []string{"invalid", "duplicate", "unsorted hash", "btree internal", "recno internal", "btree leaf", "recno leaf",
		"overflow", "hash metadata", "btree metadata", "queue metadata", "queue data", "off-page duplicate leaf", "hash",
		"heap metadata", "heap", "heap internal"}
	if int(t) < len(names) {
		return names[t]
	}
	return "unknown"
}
