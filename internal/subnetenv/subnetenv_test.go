package subnetenv

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Env
		wantErr string
	}{
		{
			name: "full",
			in:   "# c\nWGMESH_NETWORK=10.42.0.0/16\nWGMESH_SUBNET=10.42.1.0/24\nWGMESH_SUBNET6=fd00:42:1::/64\nWGMESH_MTU=1420\nWGMESH_IPMASQ=true\n",
			want: Env{Network: pfx("10.42.0.0/16"), Subnet: pfx("10.42.1.0/24"), Subnet6: pfx("fd00:42:1::/64"), MTU: 1420, IPMasq: true},
		},
		{name: "quoted and spaced", in: ` WGMESH_SUBNET = "10.42.1.0/24" `, want: Env{Subnet: pfx("10.42.1.0/24")}},
		{name: "foreign keys ignored", in: "FLANNEL_MTU=1\nWGMESH_SUBNET=10.42.1.0/24", want: Env{Subnet: pfx("10.42.1.0/24")}},
		{name: "empty", in: "", wantErr: "neither"},
		{name: "not kv", in: "WGMESH_SUBNET", wantErr: "not KEY=VALUE"},
		{name: "bad cidr", in: "WGMESH_SUBNET=10.42.1.0/33", wantErr: "WGMESH_SUBNET"},
		{name: "host bits", in: "WGMESH_SUBNET=10.42.1.5/24", wantErr: "host bits"},
		{name: "v6 in v4 key", in: "WGMESH_SUBNET=fd00::/64", wantErr: "not an IPv4"},
		{name: "subnet outside network", in: "WGMESH_NETWORK=10.42.0.0/16\nWGMESH_SUBNET=10.43.1.0/24", wantErr: "not inside"},
		{name: "too small", in: "WGMESH_SUBNET=10.42.1.0/31", wantErr: "too small"},
		{name: "bad mtu", in: "WGMESH_SUBNET=10.42.1.0/24\nWGMESH_MTU=abc", wantErr: "WGMESH_MTU"},
		{name: "mtu range", in: "WGMESH_SUBNET=10.42.1.0/24\nWGMESH_MTU=100", wantErr: "out of range"},
		{name: "unknown key", in: "WGMESH_SUBNETS=10.42.1.0/24", wantErr: "unknown key"},
		{name: "all-zero v4", in: "WGMESH_SUBNET=0.0.0.0/24", wantErr: "WGMESH_SUBNET=0.0.0.0/24 is not a unicast range usable for pods: it overlaps all-zero"},
		{name: "all of v4", in: "WGMESH_SUBNET=0.0.0.0/0", wantErr: "all-zero"},
		{name: "all-zero v6", in: "WGMESH_SUBNET6=::/64", wantErr: "WGMESH_SUBNET6=::/64 is not a unicast range usable for pods: it overlaps all-zero"},
		{name: "multicast v4", in: "WGMESH_SUBNET=224.1.0.0/24", wantErr: "multicast"},
		{name: "multicast v6", in: "WGMESH_SUBNET6=ff02::/64", wantErr: "multicast"},
		{name: "loopback v4", in: "WGMESH_SUBNET=127.0.1.0/24", wantErr: "loopback"},
		{name: "loopback v6", in: "WGMESH_SUBNET6=::1/128", wantErr: "loopback"},
		{name: "link-local v4", in: "WGMESH_SUBNET=169.254.3.0/24", wantErr: "link-local"},
		{name: "link-local v6", in: "WGMESH_SUBNET6=fe80::/64", wantErr: "link-local"},
		{name: "reserved v4", in: "WGMESH_SUBNET=255.255.255.0/24", wantErr: "reserved or broadcast"},
		{name: "wide v4 over loopback", in: "WGMESH_SUBNET=96.0.0.0/3", wantErr: "loopback"},
		{name: "ula v6", in: "WGMESH_SUBNET6=fd00:42:1::/64", want: Env{Subnet6: pfx("fd00:42:1::/64")}},
		{name: "public v4", in: "WGMESH_SUBNET=100.64.1.0/24", want: Env{Subnet: pfx("100.64.1.0/24")}},
		{name: "duplicate", in: "WGMESH_SUBNET=10.42.1.0/24\nWGMESH_SUBNET=10.42.2.0/24", wantErr: "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse() error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			if got != tt.want {
				t.Fatalf("Parse() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "wgmesh", "subnet.env")
	want := Env{Network: pfx("10.42.0.0/16"), Subnet: pfx("10.42.7.0/24"), MTU: 1420, IPMasq: true}
	if err := Write(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("Read() = %+v, want %+v", got, want)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("Write left temp files behind: %v", entries)
	}
}

func TestReadMissingIsNotExist(t *testing.T) {
	_, err := Read(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Read() error = %v, want os.ErrNotExist", err)
	}
}

func TestWriteRefusesInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	if err := Write(path, Env{}); err == nil {
		t.Fatal("Write() of an empty Env succeeded")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("invalid Write left a file: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("WGMESH_NETWORK=10.42.0.0/16\nWGMESH_SUBNET=10.42.1.0/24\nWGMESH_MTU=1420\nWGMESH_IPMASQ=true\n"))
	f.Add([]byte("WGMESH_SUBNET6=fd00::/64\n# x\n"))
	f.Add([]byte("WGMESH_SUBNET='10.0.0.0/8'"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid Env: %v", err)
		}
		again, err := Parse(Format(e))
		if err != nil {
			t.Fatalf("Parse(Format(%+v)) = %v", e, err)
		}
		if again != e {
			t.Fatalf("round trip changed %+v into %+v", e, again)
		}
	})
}

// Whatever prefix CheckPodPrefix accepts contains no address that is
// unspecified, loopback, link-local, multicast or in 240.0.0.0/4.
func FuzzCheckPodPrefix(f *testing.F) {
	f.Add([]byte{10, 42, 1, 0}, 24)
	f.Add([]byte{0xfd, 0, 0, 0x42, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 64)
	f.Add([]byte{127, 0, 0, 0}, 7)
	f.Fuzz(func(t *testing.T, b []byte, bits int) {
		a, ok := netip.AddrFromSlice(b)
		if !ok || bits < 0 || bits > a.BitLen() {
			return
		}
		p := netip.PrefixFrom(a, bits).Masked()
		if CheckPodPrefix(p) != nil {
			return
		}
		first, last := p.Addr(), p.Addr()
		for i := p.Bits(); i < p.Addr().BitLen(); i++ {
			last = setBit(last, i)
		}
		for _, x := range []netip.Addr{first, last} {
			if x.IsUnspecified() || x.IsLoopback() || x.IsLinkLocalUnicast() || x.IsMulticast() || x.IsLinkLocalMulticast() ||
				(x.Is4() && x.As4()[0] >= 240) {
				t.Fatalf("CheckPodPrefix accepted %s, which holds %s", p, x)
			}
		}
	})
}

func setBit(a netip.Addr, i int) netip.Addr {
	s := a.AsSlice()
	s[i/8] |= 0x80 >> (i % 8)
	out, _ := netip.AddrFromSlice(s)
	return out
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
