// Package pool owns the allocation state of one wgmesh-ipam network: the
// directory <dataDir>/<network>/ with one file per address in use. It hands
// out, looks up, releases and garbage-collects addresses, always under the
// directory's flock, so that any number of concurrent plugin processes, and
// processes killed at any instruction, never give one address twice.
//
// It reuses the reference host-local plugin's disk store and allocator
// (github.com/containernetworking/plugins/plugins/ipam/host-local/backend),
// so the on-disk format is host-local's: a file named after the address
// containing "<containerID>\r\n<ifname>", a "lock" file, and
// "last_reserved_ip.<n>" files for round-robin allocation. It never touches
// anything outside that directory and never reads subnet.env.
package pool

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/disk"

	"github.com/wgmesh/wgmesh/internal/ipam"
)

// ErrExhausted means a range set has no free address left.
var ErrExhausted = errors.New("address range exhausted")

// Allocation is one address held by an attachment.
type Allocation struct {
	// Address is the address with the prefix length of its subnet.
	Address netip.Prefix
	// Gateway is the gateway of the range the address came from.
	Gateway netip.Addr
}

// Pool is the allocation state of one network. Close it when done.
type Pool struct {
	dir   string
	store *disk.Store
}

// Open opens (creating it if needed) the allocation directory of network
// under dataDir.
func Open(dataDir, network string) (*Pool, error) {
	s, err := disk.New(network, dataDir)
	if err != nil {
		return nil, fmt.Errorf("open allocation directory %s: %w", filepath.Join(dataDir, network), err)
	}
	return &Pool{dir: filepath.Join(dataDir, network), store: s}, nil
}

// OpenExisting opens the allocation directory only if it exists: releasing
// and garbage collection have nothing to do in a directory that was never
// created (or was wiped), and must not create one. It returns (nil, nil)
// when the directory does not exist.
func OpenExisting(dataDir, network string) (*Pool, error) {
	dir := filepath.Join(dataDir, network)
	// A name too long for a directory (ADD refuses those) never held any.
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENAMETOOLONG) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("allocation directory %s: %w", dir, err)
	}
	return Open(dataDir, network)
}

// Dir is the allocation directory.
func (p *Pool) Dir() string { return p.dir }

// Close releases the lock file descriptor.
func (p *Pool) Close() error { return p.store.Close() }

// Allocate gives att one address from each range set, or returns the
// addresses att already holds in a range set (an ADD retried by a runtime
// that timed out gets the same answer, not a second address). On any error
// it releases everything att holds, so a failed ADD leaves nothing behind.
//
// The whole operation runs under the directory lock: it is atomic with
// respect to every other Allocate, Release and GC.
func (p *Pool) Allocate(att ipam.Attachment, sets []allocator.RangeSet) ([]Allocation, error) {
	if err := p.store.Lock(); err != nil {
		return nil, fmt.Errorf("lock %s: %w", p.dir, err)
	}
	defer p.store.Unlock()

	success := false
	defer func() {
		if !success {
			// Best effort: the caller reports the original error; a file
			// that could not be removed here is removed by DEL or GC.
			_, _ = p.release(att)
		}
	}()

	var allocs []Allocation
	held := p.heldAddrs(att)
	for i, set := range sets {
		a, err := p.allocateFrom(i, set, att, held)
		if err != nil {
			return nil, err
		}
		allocs = append(allocs, a)
		held = append(held, a.Address.Addr())
	}
	success = true
	return allocs, nil
}

func (p *Pool) allocateFrom(idx int, set allocator.RangeSet, att ipam.Attachment, held []netip.Addr) (Allocation, error) {
	for _, a := range held {
		if r, err := set.RangeFor(a.AsSlice()); err == nil {
			ones, _ := r.Subnet.Mask.Size()
			gw, _ := netip.AddrFromSlice(r.Gateway)
			return Allocation{Address: netip.PrefixFrom(a, ones), Gateway: gw.Unmap()}, nil
		}
	}

	rs := slices.Clone(set) // Canonicalize writes; the caller's set stays as it is
	if err := rs.Canonicalize(); err != nil {
		// ipam.ParseConfig and ipam.RangesFromEnv only produce canonical
		// ranges; this is a bug, not a user error.
		return Allocation{}, fmt.Errorf("range set %d (%s): %w", idx, rs.String(), err)
	}
	// host-local's allocator takes the store lock itself, and a flock is
	// not reentrant (the inner Unlock would drop our lock between the
	// lookup above and the reservation). heldStore hands it the store with
	// the lock already held by us, answers its GetByID from the lookup we
	// made under this same lock (saving a second read of every file), and
	// remembers store failures: allocator.Get returns them and "no addresses
	// available" as plain errors alike.
	hs := &heldStore{Store: p.store, held: held}
	ipc, err := allocator.NewIPAllocator(&rs, hs, idx).Get(att.ContainerID, att.IfName, nil)
	if err != nil {
		if hs.err != nil {
			return Allocation{}, fmt.Errorf("reserve address in %s: %w", p.dir, hs.err)
		}
		return Allocation{}, fmt.Errorf("%w: no free address in %s (every address is in use under %s)", ErrExhausted, describe(set), p.dir)
	}
	addr, ok := netip.AddrFromSlice(ipc.Address.IP)
	if !ok {
		return Allocation{}, fmt.Errorf("allocator returned invalid address %v", ipc.Address.IP)
	}
	ones, _ := ipc.Address.Mask.Size()
	gw, _ := netip.AddrFromSlice(ipc.Gateway)
	return Allocation{Address: netip.PrefixFrom(addr.Unmap(), ones), Gateway: gw.Unmap()}, nil
}

// Release frees every address held by att. Releasing what is not held is
// not an error. It also removes orphans (see sweep).
func (p *Pool) Release(att ipam.Attachment) error {
	if err := p.store.Lock(); err != nil {
		return fmt.Errorf("lock %s: %w", p.dir, err)
	}
	defer p.store.Unlock()
	if _, err := p.release(att); err != nil {
		return fmt.Errorf("release %s/%s in %s: %w", att.ContainerID, att.IfName, p.dir, err)
	}
	return nil
}

// release removes att's files (and files in host-local's old format that
// name only att's container) and orphans, in one pass over the directory
// (host-local's ReleaseByID would be a second one); the lock must be held.
func (p *Pool) release(att ipam.Attachment) ([]netip.Addr, error) {
	mine := owner{containerID: att.ContainerID, ifName: att.IfName}
	mineOld := owner{containerID: att.ContainerID}
	return p.sweep(func(o owner) bool { return o != mine && o != mineOld })
}

// Lookup returns the addresses held by att.
func (p *Pool) Lookup(att ipam.Attachment) ([]netip.Addr, error) {
	if err := p.store.Lock(); err != nil {
		return nil, fmt.Errorf("lock %s: %w", p.dir, err)
	}
	defer p.store.Unlock()
	return p.heldAddrs(att), nil
}

// GC frees every address whose owner is not in valid, and every orphan. It
// returns the freed addresses.
//
// host-local (v1.9.1) implements no GC, and its disk store cannot list
// allocations, so GC reads the directory itself, in the store's format,
// under the store's lock.
func (p *Pool) GC(valid []ipam.Attachment) ([]netip.Addr, error) {
	if err := p.store.Lock(); err != nil {
		return nil, fmt.Errorf("lock %s: %w", p.dir, err)
	}
	defer p.store.Unlock()
	keep := make(map[owner]bool, 2*len(valid))
	for _, a := range valid {
		keep[owner{containerID: a.ContainerID, ifName: a.IfName}] = true
		// Files written by host-local before it recorded the interface
		// name hold the container ID only.
		keep[owner{containerID: a.ContainerID}] = true
	}
	return p.sweep(func(o owner) bool { return keep[o] })
}

// owner is the content of an allocation file.
type owner struct {
	containerID, ifName string
}

// All returns every allocation in the directory with its owner; for tests
// and diagnostics.
func (p *Pool) All() (map[netip.Addr]ipam.Attachment, error) {
	if err := p.store.Lock(); err != nil {
		return nil, fmt.Errorf("lock %s: %w", p.dir, err)
	}
	defer p.store.Unlock()
	out := map[netip.Addr]ipam.Attachment{}
	err := p.walk(func(a netip.Addr, _ string, o owner) error {
		out[a] = ipam.Attachment{ContainerID: o.containerID, IfName: o.ifName}
		return nil
	})
	return out, err
}

// sweep removes every allocation file whose owner keep rejects, and every
// orphan: a file with no owner at all. The disk store creates the file
// (O_EXCL) and then writes the owner; a process killed between the two
// leaves an empty file. Since both steps run under the lock we hold, an
// empty file seen now belongs to a dead process, never to one in progress.
func (p *Pool) sweep(keep func(owner) bool) ([]netip.Addr, error) {
	var freed []netip.Addr
	var errs []error
	err := p.walk(func(a netip.Addr, path string, o owner) error {
		if o.containerID != "" && keep(o) {
			return nil
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			return nil
		}
		freed = append(freed, a)
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	return freed, errors.Join(errs...)
}

// walk calls fn for every allocation file (a file named after an address).
func (p *Pool) walk(fn func(a netip.Addr, path string, o owner) error) error {
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", p.dir, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		a, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue // lock, last_reserved_ip.N, anything else
		}
		path := filepath.Join(p.dir, e.Name())
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if err := fn(a, path, parseOwner(data)); err != nil {
			return err
		}
	}
	return nil
}

func parseOwner(data []byte) owner {
	id, ifName, _ := strings.Cut(strings.TrimSpace(string(data)), disk.LineBreak)
	return owner{containerID: strings.TrimSpace(id), ifName: strings.TrimSpace(ifName)}
}

// heldAddrs reads which addresses att holds; the lock must be held.
func (p *Pool) heldAddrs(att ipam.Attachment) []netip.Addr {
	var out []netip.Addr
	for _, ip := range p.store.GetByID(att.ContainerID, att.IfName) {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// heldStore is the store seen by host-local's allocator while we hold the
// lock: Lock and Unlock do nothing, failures are remembered.
type heldStore struct {
	backend.Store
	held []netip.Addr
	err  error
}

func (h *heldStore) Lock() error   { return nil }
func (h *heldStore) Unlock() error { return nil }

func (h *heldStore) GetByID(string, string) []net.IP {
	out := make([]net.IP, 0, len(h.held))
	for _, a := range h.held {
		out = append(out, net.IP(a.AsSlice()))
	}
	return out
}

func (h *heldStore) Reserve(id, ifname string, ip net.IP, rangeID string) (bool, error) {
	ok, err := h.Store.Reserve(id, ifname, ip, rangeID)
	if err != nil && h.err == nil {
		h.err = err
	}
	return ok, err
}

var _ backend.Store = (*heldStore)(nil)

func describe(set allocator.RangeSet) string {
	parts := make([]string, 0, len(set))
	for _, r := range set {
		parts = append(parts, fmt.Sprintf("%s (%s)", (*net.IPNet)(&r.Subnet), r.String()))
	}
	return strings.Join(parts, ", ")
}
