package ipam

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"

	"github.com/wgmesh/wgmesh/internal/netconv"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
)

// rangeSets renders range sets as "subnet start-end gw gateway", one set a
// line, so that a test compares what a reader would check.
func rangeSets(sets []allocator.RangeSet) string {
	var b strings.Builder
	for _, set := range sets {
		for i, r := range set {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s %s gw %s", (*net.IPNet)(&r.Subnet), r.String(), r.Gateway)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// routes renders routes as "dst via gw" (gw <nil> when unset).
func routes(rs []*types.Route) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s via %s", &r.Dst, r.GW))
	}
	return out
}

// netipRange is r in netip values, for checks that are plain comparisons.
func netipRange(r allocator.Range) (subnet netip.Prefix, start, end, gw netip.Addr) {
	ones, _ := r.Subnet.Mask.Size()
	return netip.PrefixFrom(netconv.Addr(r.Subnet.IP), ones), netconv.Addr(r.RangeStart), netconv.Addr(r.RangeEnd), netconv.Addr(r.Gateway)
}

func conf(ipam string) string {
	return `{"cniVersion":"1.1.0","name":"wgmesh","type":"wgmesh","bridge":"cni0","ipam":` + ipam + `}`
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(conf(`{"type":"wgmesh-ipam"}`)))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{CNIVersion: "1.1.0", Network: "wgmesh", SubnetFile: "/run/wgmesh/subnet.env", DataDir: "/var/lib/cni/networks"}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
}

func TestParseConfigExplicit(t *testing.T) {
	c, err := ParseConfig([]byte(conf(`{"type":"wgmesh-ipam","subnetFile":"/tmp/s.env","dataDir":"/tmp/d",
		"ranges":[[{"subnet":"10.42.1.0/24","rangeStart":"10.42.1.10","rangeEnd":"10.42.1.20"},{"subnet":"10.42.2.0/24","gateway":"10.42.2.254"}],
		          [{"subnet":"fd00::/64"}]],
		"routes":[{"dst":"10.0.0.0/8"},{"dst":"fd00::/8","gw":"fd00::1"}]}`)))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{CNIVersion: "1.1.0", Network: "wgmesh", SubnetFile: "/tmp/s.env", DataDir: "/tmp/d"}
	wantRanges := "10.42.1.0/24 10.42.1.10-10.42.1.20 gw 10.42.1.1, 10.42.2.0/24 10.42.2.1-10.42.2.254 gw 10.42.2.254\n" +
		"fd00::/64 fd00::1-fd00::ffff:ffff:ffff:ffff gw fd00::1\n"
	if got := rangeSets(c.Ranges); got != wantRanges {
		t.Errorf("ranges:\n%s\nwant\n%s", got, wantRanges)
	}
	if got, want := routes(c.Routes), []string{"10.0.0.0/8 via <nil>", "fd00::/8 via fd00::1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("routes %q, want %q", got, want)
	}
	c.Ranges, c.Routes = nil, nil
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
}

func TestParseConfigGCList(t *testing.T) {
	for _, key := range []string{"cni.dev/valid-attachments", "cni.dev/attachments"} {
		c, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"wgmesh-ipam"},"` + key + `":[{"containerID":"c1","ifname":"eth0"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		if !c.HasValidAttachments || !reflect.DeepEqual(c.ValidAttachments, []Attachment{{"c1", "eth0"}}) {
			t.Errorf("%s: got %v %+v", key, c.HasValidAttachments, c.ValidAttachments)
		}
	}
	c, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"wgmesh-ipam"},"cni.dev/valid-attachments":null}`))
	if err != nil || !c.HasValidAttachments || len(c.ValidAttachments) != 0 {
		t.Errorf("null list: %v %v %v", err, c.HasValidAttachments, c.ValidAttachments)
	}
	c, err = ParseConfig([]byte(conf(`{"type":"wgmesh-ipam"}`)))
	if err != nil || c.HasValidAttachments {
		t.Errorf("no list: %v %v", err, c.HasValidAttachments)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		kind error
		msg  string
	}{
		{"not json", `{"name":`, ErrMalformed, "malformed network configuration: unexpected end of JSON input"},
		{"no name", `{"cniVersion":"1.1.0","ipam":{"type":"wgmesh-ipam"}}`, ErrInvalid, "invalid network configuration: name is missing"},
		{"name with slash", `{"name":"../etc","ipam":{"type":"wgmesh-ipam"}}`, ErrInvalid, `name "../etc": must start with a letter or digit`},
		{"name dotdot", `{"name":"..","ipam":{"type":"wgmesh-ipam"}}`, ErrInvalid, `name ".."`},
		{"no ipam", `{"name":"n"}`, ErrInvalid, "invalid network configuration: ipam is missing"},
		{"null ipam", `{"name":"n","ipam":null}`, ErrInvalid, "ipam is missing"},
		{"ipam not object", conf(`"x"`), ErrMalformed, "malformed network configuration: ipam: json: cannot unmarshal string"},
		{"unknown field", conf(`{"type":"wgmesh-ipam","subnet_file":"/x"}`), ErrInvalid, `invalid network configuration: ipam: unknown field "subnet_file" (known fields: type, subnetFile, dataDir, ranges, routes)`},
		{"field in wrong case", conf(`{"type":"wgmesh-ipam","subnetfile":"/x"}`), ErrInvalid, `ipam: unknown field "subnetfile"`},
		{"old-style subnet", conf(`{"type":"wgmesh-ipam","subnet":"10.42.1.0/24"}`), ErrInvalid, `ipam: unknown field "subnet"`},
		{"old-style bound, not an IP", conf(`{"type":"wgmesh-ipam","rangeStart":"ten"}`), ErrInvalid, `ipam: unknown field "rangeStart"`},
		{"host-local's resolvConf", conf(`{"type":"wgmesh-ipam","resolvConf":"/etc/resolv.conf"}`), ErrInvalid, `ipam: unknown field "resolvConf"`},
		{"unknown range field", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24","start":"10.42.1.5"}]]}`), ErrInvalid, `ipam.ranges[0][0]: unknown field "start" (known fields: subnet, rangeStart, rangeEnd, gateway)`},
		{"unknown route field", conf(`{"type":"wgmesh-ipam","routes":[{"dst":"0.0.0.0/0","mtu":1400}]}`), ErrInvalid, `ipam.routes[0]: unknown field "mtu" (known fields: dst, gw)`},
		{"wrong field type", conf(`{"type":"wgmesh-ipam","ranges":"10.42.1.0/24"}`), ErrMalformed, `ipam: json: cannot unmarshal string into Go struct field ipamJSON.ranges`},
		{"wrong type", conf(`{"type":"host-local"}`), ErrInvalid, `ipam.type is "host-local", want "wgmesh-ipam"`},
		{"missing type", conf(`{}`), ErrInvalid, `ipam.type is "", want "wgmesh-ipam"`},
		{"empty ranges", conf(`{"type":"wgmesh-ipam","ranges":[]}`), ErrInvalid, "ipam.ranges is empty (leave it out to use the node subnet from /run/wgmesh/subnet.env)"},
		{"empty range set", conf(`{"type":"wgmesh-ipam","ranges":[[]]}`), ErrInvalid, "ipam.ranges[0] is empty"},
		{"no subnet", conf(`{"type":"wgmesh-ipam","ranges":[[{"rangeStart":"10.0.0.2"}]]}`), ErrInvalid, "ipam.ranges[0][0]: subnet is missing"},
		{"bad cidr", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/33"}]]}`), ErrInvalid, `ipam.ranges[0][0]: subnet "10.42.1.0/33" is not a CIDR`},
		{"host bits", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.5/24"}]]}`), ErrInvalid, "subnet 10.42.1.5/24 has host bits set (did you mean 10.42.1.0/24?)"},
		{"too small v4", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/31"}]]}`), ErrInvalid, "subnet 10.42.1.0/31 is too small for a gateway and an address (at most /30)"},
		{"too small v6", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"fd00::/127"}]]}`), ErrInvalid, "subnet fd00::/127 is too small for a gateway and an address (at most /126)"},
		{"mapped", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"::ffff:10.0.0.0/120"}]]}`), ErrInvalid, "use a plain IPv4 or IPv6 prefix"},
		{"start outside", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24","rangeStart":"10.42.2.1"}]]}`), ErrInvalid, "ipam.ranges[0][0]: rangeStart 10.42.2.1 is outside subnet 10.42.1.0/24"},
		{"end outside", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24","rangeEnd":"10.42.2.1"}]]}`), ErrInvalid, "rangeEnd 10.42.2.1 is outside subnet 10.42.1.0/24"},
		{"gateway outside", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24","gateway":"10.42.2.1"}]]}`), ErrInvalid, "gateway 10.42.2.1 is outside subnet 10.42.1.0/24"},
		{"start not ip", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24","rangeStart":"ten"}]]}`), ErrInvalid, `rangeStart "ten" is not an IP address`},
		{"end before start", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24","rangeStart":"10.42.1.9","rangeEnd":"10.42.1.3"}]]}`), ErrInvalid, "rangeEnd 10.42.1.3 is before rangeStart 10.42.1.9"},
		{"mixed families", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24"},{"subnet":"fd00::/64"}]]}`), ErrInvalid, "ipam.ranges[0] mixes IPv4 and IPv6"},
		{"overlap in set", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24"},{"subnet":"10.42.0.0/16"}]]}`), ErrInvalid, "ipam.ranges[0][1] (10.42.0.1-10.42.255.254) overlaps ipam.ranges[0][0] (10.42.1.1-10.42.1.254)"},
		{"overlap sets", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24"}],[{"subnet":"10.42.1.0/25"}]]}`), ErrInvalid, "ipam.ranges[0] overlaps ipam.ranges[1]"},
		{"old version two v4", `{"cniVersion":"0.2.0","name":"n","ipam":{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24"}],[{"subnet":"10.42.2.0/24"}]]}}`, ErrInvalid, `cniVersion "0.2.0" allows one address per family`},
		{"route not cidr", conf(`{"type":"wgmesh-ipam","routes":[{"dst":"default"}]}`), ErrInvalid, `ipam.routes[0]: dst "default" is not a CIDR`},
		{"route bad gw", conf(`{"type":"wgmesh-ipam","routes":[{"dst":"0.0.0.0/0","gw":"x"}]}`), ErrInvalid, `ipam.routes[0]: gw "x" is not an IP address`},
		{"route family", conf(`{"type":"wgmesh-ipam","routes":[{"dst":"0.0.0.0/0","gw":"fd00::1"}]}`), ErrInvalid, "gw fd00::1 and dst 0.0.0.0/0 are of different families"},
		{"relative dataDir", conf(`{"type":"wgmesh-ipam","dataDir":"var/lib/cni"}`), ErrInvalid, `ipam.dataDir "var/lib/cni" must be an absolute path`},
		{"dot dataDir", conf(`{"type":"wgmesh-ipam","dataDir":"./ipam"}`), ErrInvalid, `ipam.dataDir "./ipam" must be an absolute path`},
		{"relative subnetFile", conf(`{"type":"wgmesh-ipam","subnetFile":"subnet.env"}`), ErrInvalid, `ipam.subnetFile "subnet.env" must be an absolute path`},
		{"name too long", `{"name":"` + strings.Repeat("n", 256) + `","ipam":{"type":"wgmesh-ipam"}}`, ErrInvalid, "name is 256 bytes long, at most 255"},
		{"multicast subnet", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"224.0.0.0/24"}]]}`), ErrInvalid, "ipam.ranges[0][0]: subnet 224.0.0.0/24 is not a unicast range usable for pods: it overlaps multicast"},
		{"loopback subnet", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"127.0.0.0/24"}]]}`), ErrInvalid, "overlaps loopback"},
		{"link-local subnet v6", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"fe80::/64"}]]}`), ErrInvalid, "overlaps link-local"},
		{"all-zero subnet", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"0.0.0.0/24"}]]}`), ErrInvalid, "overlaps all-zero"},
		{"start is network", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24","rangeStart":"10.42.1.0"}]]}`), ErrInvalid, "ipam.ranges[0][0]: rangeStart 10.42.1.0 is the network address of 10.42.1.0/24, which no pod can use: refused (the first usable address is 10.42.1.1)"},
		{"end is broadcast", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24","rangeEnd":"10.42.1.255"}]]}`), ErrInvalid, "ipam.ranges[0][0]: rangeEnd 10.42.1.255 is the broadcast address of 10.42.1.0/24, which no pod can use: refused (the last usable address is 10.42.1.254)"},
		{"start is broadcast", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24","rangeStart":"10.42.1.255"}]]}`), ErrInvalid, "rangeStart 10.42.1.255 is the broadcast address"},
		{"end is network", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24","rangeEnd":"10.42.1.0"}]]}`), ErrInvalid, "rangeEnd 10.42.1.0 is the network address"},
		{"v6 start is network", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"fd00::/64","rangeStart":"fd00::"}]]}`), ErrInvalid, "rangeStart fd00:: is the network address of fd00::/64"},
		{"gateway is network", conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24","gateway":"10.42.1.0"}]]}`), ErrInvalid, "gateway 10.42.1.0 is the network address"},
		{"gc list not list", `{"name":"n","ipam":{"type":"wgmesh-ipam"},"cni.dev/valid-attachments":{}}`, ErrMalformed, "cni.dev/valid-attachments: json: cannot unmarshal object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.in))
			if err == nil {
				t.Fatalf("no error, want %q", tc.msg)
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("error %q is not %v", err, tc.kind)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q\ndoes not contain %q", err, tc.msg)
			}
		})
	}
}

func TestRangesFromEnvGatewayContract(t *testing.T) {
	env := subnetenv.Env{Subnet: netip.MustParsePrefix("10.42.1.0/24"), Subnet6: netip.MustParsePrefix("fd00:42:1::/64")}
	got := rangeSets(RangesFromEnv(env))
	want := "10.42.1.0/24 10.42.1.1-10.42.1.254 gw 10.42.1.1\n" +
		"fd00:42:1::/64 fd00:42:1::1-fd00:42:1:0:ffff:ffff:ffff:ffff gw fd00:42:1::1\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if only6 := rangeSets(RangesFromEnv(subnetenv.Env{Subnet6: netip.MustParsePrefix("fd00::/64")})); only6 != "fd00::/64 fd00::1-fd00::ffff:ffff:ffff:ffff gw fd00::1\n" {
		t.Errorf("IPv6-only env: %s", only6)
	}
}

func TestResultRoutes(t *testing.T) {
	p := netip.MustParsePrefix
	both := RangesFromEnv(subnetenv.Env{Subnet: p("10.42.1.0/24"), Subnet6: p("fd00::/64")})
	only6 := RangesFromEnv(subnetenv.Env{Subnet6: p("fd00::/64")})
	for _, tc := range []struct {
		name string
		cfg  Config
		sets []allocator.RangeSet
		want []string
	}{
		{"default dual stack", Config{}, both, []string{"0.0.0.0/0 via <nil>", "::/0 via <nil>"}},
		{"default v6 only", Config{}, only6, []string{"::/0 via <nil>"}},
		{"explicit", Config{Routes: []*types.Route{{Dst: *netconv.IPNet(p("10.0.0.0/8"))}}}, both, []string{"10.0.0.0/8 via <nil>"}},
		{"explicit empty", Config{Routes: []*types.Route{}}, both, []string{}},
	} {
		if got := routes(tc.cfg.ResultRoutes(tc.sets)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v want %v", tc.name, got, tc.want)
		}
	}
}

// FuzzParseConfig: any input either fails with one of the two error kinds or
// gives ranges that the allocator can use as they are.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		conf(`{"type":"wgmesh-ipam"}`),
		conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/30","rangeStart":"10.42.1.2","gateway":"10.42.1.1"}]]}`),
		conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"fd00::/120"}],[{"subnet":"10.0.0.0/8"}]],"routes":[{"dst":"0.0.0.0/0"}]}`),
		`{"name":"n","ipam":{"type":"wgmesh-ipam"},"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
		`{"name":"n","ipam":{"type":"wgmesh-ipam"},"prevResult":{"ips":[]}}`,
		`{`, `null`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error of no known kind: %v", err)
			}
			return
		}
		if c.Network == "" || strings.ContainsAny(c.Network, "/\\") || c.Network == ".." || c.SubnetFile == "" || c.DataDir == "" {
			t.Fatalf("bad defaults: %+v", c)
		}
		if len(c.Network) > 255 || !filepath.IsAbs(c.DataDir) || !filepath.IsAbs(c.SubnetFile) {
			t.Fatalf("a name or path the kernel or the runtime cannot use: %+v", c)
		}
		for i, set := range c.Ranges {
			if len(set) == 0 {
				t.Fatalf("empty range set %d", i)
			}
			for _, r := range set {
				subnet, start, end, gw := netipRange(r)
				if subnet != subnet.Masked() || !subnet.Contains(start) || !subnet.Contains(end) || !subnet.Contains(gw) || end.Less(start) {
					t.Fatalf("range not usable: %s gw %s", r.String(), r.Gateway)
				}
				if subnetenv.CheckPodPrefix(subnet) != nil {
					t.Fatalf("subnet not usable for pods: %s", subnet)
				}
				for _, a := range []netip.Addr{start, end, gw} {
					if a == subnet.Addr() || (a.Is4() && a == lastAddr(subnet)) {
						t.Fatalf("range bound or gateway %s is the network or broadcast address: %s", a, r.String())
					}
				}
				if is4(r) != is4(set[0]) {
					t.Fatalf("mixed families in set %d", i)
				}
			}
			// The allocator takes the set as it is.
			canon := slices.Clone(set)
			if err := canon.Canonicalize(); err != nil || rangeSets([]allocator.RangeSet{canon}) != rangeSets([]allocator.RangeSet{set}) {
				t.Fatalf("set %d not canonical: %v", i, err)
			}
		}
	})
}

// DEL and GC find the allocations of any configuration ADD ever accepted,
// or refuses now: only the name (a path) must be safe.
func TestParseReleaseConfigIgnoresWhatDelDoesNotNeed(t *testing.T) {
	for _, in := range []string{
		conf(`{"type":"wgmesh-ipam","ranges":[[{"subnet":"10.42.1.0/24","rangeStart":"10.42.1.0"}]],"dataDir":"/d"}`),
		conf(`{"type":"wgmesh-ipam","ranges":"not even a list","dataDir":"/d"}`),
		conf(`{"type":"host-local","subnetFile":"relative","dataDir":"/d"}`),
	} {
		c, err := ParseReleaseConfig([]byte(in))
		if err != nil || c.Network != "wgmesh" || c.DataDir != "/d" {
			t.Errorf("ParseReleaseConfig(%s) = %+v, %v", in, c, err)
		}
	}
	for _, in := range []string{`{"name":"../etc","ipam":{}}`, `{"name":"","ipam":{}}`, `{`} {
		if _, err := ParseReleaseConfig([]byte(in)); err == nil {
			t.Errorf("ParseReleaseConfig(%s) accepted it", in)
		}
	}
}
