package hostprep

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/adler32"
	"io"
	"os"
	"sort"
	"syscall"
	"time"

	"github.com/wgmesh/wgmesh/internal/hostfs"
)

// rpm's ndb database (Packages.db; SUSE Linux Enterprise 15, openSUSE Leap
// 15 and Tumbleweed) is rpm's own format (lib/backend/ndb/rpmpkg.c), every
// number a little-endian uint32 whatever the machine:
//
//	file header, 32 bytes   "RpmP", version 0, generation, the number of
//	                        slot pages, the next package index, zeros
//	slot pages of 4096 bytes, the first after the file header: slots of 16
//	                        bytes, "Slot", package index, block offset,
//	                        block count; block offset 0 is a free slot
//	blobs, each at its slot's block offset (blocks of 16 bytes), filling
//	                        its block count exactly:
//	    head, 16 bytes      "BlbS", package index, a stamp (the generation
//	                        it was written at in rpm 4.18, a time in older
//	                        rpm; not checked), length
//	    length bytes        the package's rpm header (see parseRPMHeader)
//	    zeros               to the last 12 bytes of the blocks
//	    tail, 12 bytes      adler32 of everything before it, length, "BlbE"
//
// readRPMNDB makes every check rpm makes when it reads the slots and the
// blobs (rpmpkgReadSlots, rpmpkgReadBlob; it checks the adler32 when it
// verifies a blob before moving or deleting it, rpmpkgVerifyblob), and a
// few more that rpm's writer guarantees and that cost nothing: no two slots
// for one package, no two blobs overlapping, free slots all zero, zero
// padding, a blob length within rpm's limit for a header. Any failure makes
// the database unreadable.

const (
	ndbHeaderSize = 32
	ndbPageSize   = 4096
	ndbSlotSize   = 16
	ndbBlockSize  = 16
	ndbBlobHead   = 16
	ndbBlobTail   = 12
	ndbVersion    = 0
)

var (
	ndbMagic     = [4]byte{'R', 'p', 'm', 'P'}
	ndbSlotMagic = [4]byte{'S', 'l', 'o', 't'}
	ndbHeadMagic = [4]byte{'B', 'l', 'b', 'S'}
	ndbTailMagic = [4]byte{'B', 'l', 'b', 'E'}
)

// ndbSlot is a slot in use: where package pkgidx's blob is.
type ndbSlot struct {
	slotno, pkgidx uint32
	blkoff, blkcnt uint64
}

// openRPMNDB reads Packages.db (at host path p): every installed package's
// header, as rpm lists them (by where their blobs are in the file). rpm
// finds a name through its Name index in Index.db, which it builds from
// these same headers; this reads the headers themselves.
//
// The file is opened read-only, and read under a shared lock (flock, as rpm
// itself reads it). rpm holds its exclusive lock while it adds or removes
// a package; one held for longer than ndbLockWait in all counts as
// unreadable, where rpm would wait. Nothing is written.
func openRPMNDB(root hostfs.Root, p string) (packageDB, error) {
	f, size, _, err := openRPMFile(root, p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := ndbLockShared(f); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errFix{
				err: fmt.Errorf("%s stayed locked for writing for %v (rpm or zypper is changing the database)", p, ndbLockWait),
				fix: "let rpm or zypper finish, then run wgmesh-hostprep again",
			}
		}
		return nil, fmt.Errorf("%s: lock for reading: %w", p, err)
	}
	pkgs, err := readRPMNDB(f, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return rpmDB{path: p, pkgs: pkgs}, nil
}

// ndbLockWait bounds how long openRPMNDB waits for rpm's exclusive lock
// to go, in steps of ndbLockStep.
const (
	ndbLockWait = time.Second
	ndbLockStep = 50 * time.Millisecond
)

// ndbLockShared takes a shared flock on f, waiting up to ndbLockWait.
func ndbLockShared(f *os.File) error {
	for waited := time.Duration(0); ; waited += ndbLockStep {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || waited >= ndbLockWait {
			return err
		}
		time.Sleep(ndbLockStep)
	}
}

// readRPMNDB reads the packages of an ndb database of size bytes.
func readRPMNDB(r io.ReaderAt, size int64) ([]rpmPackage, error) {
	slots, err := readNDBSlots(r, size)
	if err != nil {
		return nil, err
	}
	var pkgs []rpmPackage
	for _, s := range slots {
		blob, err := readNDBBlob(r, s)
		if err != nil {
			return nil, fmt.Errorf("package #%d (slot %d, bytes %d to %d): %w", s.pkgidx, s.slotno, s.blkoff*ndbBlockSize, (s.blkoff+s.blkcnt)*ndbBlockSize, err)
		}
		pkg, err := parseRPMHeader(blob)
		if err != nil {
			return nil, fmt.Errorf("package #%d: damaged header: %w", s.pkgidx, err)
		}
		pkgs = append(pkgs, pkg)
	}
	return pkgs, nil
}

// readNDBSlots checks the file header and returns the slots in use, by
// block offset.
func readNDBSlots(r io.ReaderAt, size int64) ([]ndbSlot, error) {
	switch {
	case size == 0:
		return nil, fmt.Errorf("the file is empty")
	case size < ndbHeaderSize:
		return nil, fmt.Errorf("not an rpm ndb database (%d bytes, shorter than its %d-byte header)", size, ndbHeaderSize)
	}
	head := make([]byte, ndbHeaderSize)
	if _, err := r.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("read the header: %w", err)
	}
	if [4]byte(head) != ndbMagic {
		return nil, fmt.Errorf("not an rpm ndb database (it does not start with %q)", ndbMagic[:])
	}
	if v := le32(head[4:]); v != ndbVersion {
		return nil, fmt.Errorf("ndb version %d, where rpm reads only version %d", v, ndbVersion)
	}
	if size%ndbBlockSize != 0 {
		return nil, fmt.Errorf("%d bytes, not a whole number of %d-byte blocks (rpm refuses it)", size, ndbBlockSize)
	}
	npages := uint64(le32(head[12:]))
	if npages == 0 || npages*ndbPageSize > uint64(size) {
		return nil, fmt.Errorf("the header counts %d slot pages of %d bytes, and the file has %d bytes", npages, ndbPageSize, size)
	}
	fileBlocks := uint64(size) / ndbBlockSize
	firstBlob := npages * ndbPageSize / ndbBlockSize // no blob in the slot pages

	var slots []ndbSlot
	owner := map[uint32]uint32{} // package index: its slot
	page := make([]byte, ndbPageSize)
	for pg := uint64(0); pg < npages; pg++ {
		if _, err := r.ReadAt(page, int64(pg*ndbPageSize)); err != nil {
			return nil, fmt.Errorf("read slot page %d: %w", pg, err)
		}
		o := 0
		if pg == 0 {
			o = ndbHeaderSize // the file header takes the first slots
		}
		for ; o < ndbPageSize; o += ndbSlotSize {
			b := page[o : o+ndbSlotSize]
			slotno := uint32((pg*ndbPageSize + uint64(o)) / ndbSlotSize)
			if [4]byte(b) != ndbSlotMagic {
				return nil, fmt.Errorf("slot %d (byte %d) does not start with %q", slotno, pg*ndbPageSize+uint64(o), ndbSlotMagic[:])
			}
			s := ndbSlot{slotno: slotno, pkgidx: le32(b[4:]), blkoff: uint64(le32(b[8:])), blkcnt: uint64(le32(b[12:]))}
			switch {
			case s.blkoff == 0 && (s.pkgidx != 0 || s.blkcnt != 0):
				return nil, fmt.Errorf("slot %d is free (block offset 0) but names package #%d of %d blocks", slotno, s.pkgidx, s.blkcnt)
			case s.blkoff == 0:
				continue
			case s.pkgidx == 0:
				return nil, fmt.Errorf("slot %d names package #0, which does not exist", slotno)
			case s.blkcnt == 0:
				return nil, fmt.Errorf("slot %d (package #%d) has 0 blocks", slotno, s.pkgidx)
			case s.blkoff < firstBlob:
				return nil, fmt.Errorf("slot %d (package #%d) points into the slot pages (block %d; blobs start at block %d)", slotno, s.pkgidx, s.blkoff, firstBlob)
			case s.blkoff+s.blkcnt > fileBlocks:
				return nil, fmt.Errorf("slot %d (package #%d) points past the end of the file (blocks %d to %d of %d: truncated)", slotno, s.pkgidx, s.blkoff, s.blkoff+s.blkcnt, fileBlocks)
			}
			if other, dup := owner[s.pkgidx]; dup {
				return nil, fmt.Errorf("slots %d and %d both hold package #%d", other, slotno, s.pkgidx)
			}
			owner[s.pkgidx] = slotno
			slots = append(slots, s)
		}
	}
	sort.Slice(slots, func(i, j int) bool { return slots[i].blkoff < slots[j].blkoff })
	for i := 1; i < len(slots); i++ {
		if a, b := slots[i-1], slots[i]; a.blkoff+a.blkcnt > b.blkoff {
			return nil, fmt.Errorf("the blobs of slots %d and %d (packages #%d and #%d) overlap", a.slotno, b.slotno, a.pkgidx, b.pkgidx)
		}
	}
	return slots, nil
}

// readNDBBlob returns the header held in slot s's blob, once the blob's
// head and tail agree with each other, with the slot and with its content.
func readNDBBlob(r io.ReaderAt, s ndbSlot) ([]byte, error) {
	if s.blkcnt*ndbBlockSize < ndbBlobHead+ndbBlobTail {
		return nil, fmt.Errorf("%d blocks cannot hold a blob's head and tail", s.blkcnt)
	}
	head := make([]byte, ndbBlobHead)
	if _, err := r.ReadAt(head, int64(s.blkoff*ndbBlockSize)); err != nil {
		return nil, fmt.Errorf("read the blob's head: %w", err)
	}
	if [4]byte(head) != ndbHeadMagic {
		return nil, fmt.Errorf("the blob does not start with %q", ndbHeadMagic[:])
	}
	if idx := le32(head[4:]); idx != s.pkgidx {
		return nil, fmt.Errorf("the blob is of package #%d", idx)
	}
	n := uint64(le32(head[12:]))
	if n > rpmMaxBlob {
		return nil, fmt.Errorf("the blob's length %d is more than rpm reads in a header (%d)", n, rpmMaxBlob)
	}
	if want := (ndbBlobHead + n + ndbBlobTail + ndbBlockSize - 1) / ndbBlockSize; want != s.blkcnt {
		return nil, fmt.Errorf("a blob of %d bytes takes %d blocks, not %d", n, want, s.blkcnt)
	}
	// The slot lies inside the file (readNDBSlots), so this is bounded by
	// the file's size.
	b := make([]byte, s.blkcnt*ndbBlockSize)
	if _, err := r.ReadAt(b, int64(s.blkoff*ndbBlockSize)); err != nil {
		return nil, fmt.Errorf("read the blob: %w", err)
	}
	body := b[ndbBlobHead : ndbBlobHead+n]
	pad := b[ndbBlobHead+n : len(b)-ndbBlobTail]
	tail := b[len(b)-ndbBlobTail:]
	if [4]byte(tail[8:]) != ndbTailMagic {
		return nil, fmt.Errorf("the blob does not end with %q", ndbTailMagic[:])
	}
	if l := uint64(le32(tail[4:])); l != n {
		return nil, fmt.Errorf("the blob's head says %d bytes, its tail %d", n, l)
	}
	for _, c := range pad {
		if c != 0 {
			return nil, fmt.Errorf("the padding after the blob's %d bytes is not zero", n)
		}
	}
	if sum, want := adler32.Checksum(b[:len(b)-ndbBlobTail]), le32(tail); sum != want {
		return nil, fmt.Errorf("the blob's adler32 is %#08x, its tail says %#08x", sum, want)
	}
	return body, nil
}

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
