package pool

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/disk"

	"github.com/wgmesh/wgmesh/internal/ipam"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
)

func open(t *testing.T) (*Pool, string) {
	t.Helper()
	dataDir := t.TempDir()
	p, err := Open(dataDir, "net1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, filepath.Join(dataDir, "net1")
}

func sets(subnets ...string) []allocator.RangeSet {
	var env subnetenv.Env
	for _, s := range subnets {
		p := netip.MustParsePrefix(s)
		if p.Addr().Is4() {
			env.Subnet = p
		} else {
			env.Subnet6 = p
		}
	}
	return ipam.RangesFromEnv(env)
}

func all(t *testing.T, p *Pool) map[netip.Addr]ipam.Attachment {
	t.Helper()
	m, err := p.All()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAllocateSkipsGatewayAndIsIdempotent(t *testing.T) {
	p, _ := open(t)
	s := sets("10.42.1.0/24", "fd00:1::/64")
	c1 := ipam.Attachment{ContainerID: "c1", IfName: "eth0"}
	got, err := p.Allocate(c1, s)
	if err != nil {
		t.Fatal(err)
	}
	want := []Allocation{
		{Address: netip.MustParsePrefix("10.42.1.2/24"), Gateway: netip.MustParseAddr("10.42.1.1")},
		{Address: netip.MustParsePrefix("fd00:1::2/64"), Gateway: netip.MustParseAddr("fd00:1::1")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
	again, err := p.Allocate(c1, s)
	if err != nil || !reflect.DeepEqual(again, want) {
		t.Fatalf("second ADD of the same attachment: %v %v, want %v", again, err, want)
	}
	other, err := p.Allocate(ipam.Attachment{ContainerID: "c1", IfName: "net1"}, s)
	if err != nil || other[0].Address.Addr() != netip.MustParseAddr("10.42.1.3") {
		t.Fatalf("other interface of the same container: %v %v", other, err)
	}
	if n := len(all(t, p)); n != 4 {
		t.Fatalf("%d allocations, want 4", n)
	}
}

func TestExhaustionLeavesNothing(t *testing.T) {
	p, _ := open(t)
	s := sets("10.42.1.0/30", "fd00:1::/64") // one usable IPv4 address: .2
	if _, err := p.Allocate(ipam.Attachment{ContainerID: "c1", IfName: "eth0"}, s); err != nil {
		t.Fatal(err)
	}
	before := all(t, p)
	_, err := p.Allocate(ipam.Attachment{ContainerID: "c2", IfName: "eth0"}, s)
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("got %v, want ErrExhausted", err)
	}
	// docs/ipam.md quotes this message (code 100).
	if want := "address range exhausted: no free address in 10.42.1.0/30 (10.42.1.1-10.42.1.2) (every address is in use under "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("message %q, want it to start %q", err, want)
	}
	if after := all(t, p); !reflect.DeepEqual(before, after) {
		t.Fatalf("failed ADD left state behind: before %v after %v", before, after)
	}
	// The IPv6 set comes second: make the IPv4 one succeed and the IPv6 one fail.
	s2 := []allocator.RangeSet{sets("10.42.2.0/24")[0], sets("10.42.1.0/30")[0]}
	if _, err := p.Allocate(ipam.Attachment{ContainerID: "c3", IfName: "eth0"}, s2); !errors.Is(err, ErrExhausted) {
		t.Fatalf("got %v, want ErrExhausted", err)
	}
	if after := all(t, p); !reflect.DeepEqual(before, after) {
		t.Fatalf("partly failed ADD left state behind: before %v after %v", before, after)
	}
}

func TestReleaseAndOrphans(t *testing.T) {
	p, dir := open(t)
	s := sets("10.42.1.0/24")
	c1 := ipam.Attachment{ContainerID: "c1", IfName: "eth0"}
	if _, err := p.Allocate(c1, s); err != nil {
		t.Fatal(err)
	}
	// A process killed between the O_EXCL create and the write.
	if err := os.WriteFile(filepath.Join(dir, "10.42.1.77"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Release(ipam.Attachment{ContainerID: "nobody", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if m := all(t, p); len(m) != 1 || m[netip.MustParseAddr("10.42.1.2")] != c1 {
		t.Fatalf("after releasing an unknown attachment: %v (want c1 kept, orphan gone)", m)
	}
	for range 2 {
		if err := p.Release(c1); err != nil {
			t.Fatal(err)
		}
	}
	if m := all(t, p); len(m) != 0 {
		t.Fatalf("after release: %v", m)
	}
}

func TestGCKeepsOnlyValid(t *testing.T) {
	p, dir := open(t)
	s := sets("10.42.1.0/24")
	for _, id := range []string{"a", "b", "c"} {
		if _, err := p.Allocate(ipam.Attachment{ContainerID: id, IfName: "eth0"}, s); err != nil {
			t.Fatal(err)
		}
	}
	// host-local's old format (container ID only), valid and stale.
	os.WriteFile(filepath.Join(dir, "10.42.1.100"), []byte("old-valid"), 0o600)
	os.WriteFile(filepath.Join(dir, "10.42.1.101"), []byte("old-stale"), 0o600)
	os.WriteFile(filepath.Join(dir, "10.42.1.102"), nil, 0o600) // orphan

	freed, err := p.GC([]ipam.Attachment{{ContainerID: "b", IfName: "eth0"}, {ContainerID: "old-valid", IfName: "eth0"}, {ContainerID: "a", IfName: "net1"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(freed) != 4 {
		t.Errorf("freed %v, want a, c, old-stale and the orphan", freed)
	}
	got := all(t, p)
	want := map[netip.Addr]ipam.Attachment{
		netip.MustParseAddr("10.42.1.3"):   {ContainerID: "b", IfName: "eth0"},
		netip.MustParseAddr("10.42.1.100"): {ContainerID: "old-valid"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after GC: %v want %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "lock")); err != nil {
		t.Errorf("GC removed the lock file: %v", err)
	}
}

func TestOpenExistingDoesNotCreate(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "missing")
	p, err := OpenExisting(dataDir, "net1")
	if err != nil || p != nil {
		t.Fatalf("got %v %v, want nil nil", p, err)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenExisting created %s", dataDir)
	}
}

// BenchmarkAllocateRelease is the in-process cost of one ADD and one DEL
// against a /24 that already holds 100 pods (no process start, no config
// parsing), for this pool and for host-local's allocator on its disk store
// used the way host-local's main uses them.
func BenchmarkAllocateRelease(b *testing.B) {
	s := sets("10.42.1.0/24")
	att := ipam.Attachment{ContainerID: "bench", IfName: "eth0"}
	b.Run("wgmesh-ipam", func(b *testing.B) {
		p, err := Open(b.TempDir(), "bench")
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		for i := range 100 {
			if _, err := p.Allocate(ipam.Attachment{ContainerID: fmt.Sprintf("pod-%d", i), IfName: "eth0"}, s); err != nil {
				b.Fatal(err)
			}
		}
		for b.Loop() {
			if _, err := p.Allocate(att, s); err != nil {
				b.Fatal(err)
			}
			if err := p.Release(att); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("host-local", func(b *testing.B) {
		store, err := disk.New("bench", b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		defer store.Close()
		rs := s[0]
		a := allocator.NewIPAllocator(&rs, store, 0)
		for i := range 100 {
			if _, err := a.Get(fmt.Sprintf("pod-%d", i), "eth0", nil); err != nil {
				b.Fatal(err)
			}
		}
		for b.Loop() {
			if _, err := a.Get(att.ContainerID, att.IfName, nil); err != nil {
				b.Fatal(err)
			}
			if err := a.Release(att.ContainerID, att.IfName); err != nil {
				b.Fatal(err)
			}
		}
	})
}
