// Package ipam owns the wgmesh-ipam network configuration: it parses and
// validates the JSON a CNI runtime (or the wgmesh plugin, delegating) hands
// to the IPAM plugin, fills in defaults, and turns a node subnet from
// subnet.env into the address ranges to allocate from.
//
// Ranges and routes are host-local's own types (allocator.Range and
// RangeSet, the CNI library's types.Route), canonicalised and compared by
// host-local's code, so that the allocator takes them as they are; wgmesh
// adds stricter checks with messages that name the field. It is pure: no
// files, no syscalls. It never reads subnet.env itself (package subnetenv
// does) and never touches allocation state (package ipam/pool does).
package ipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"

	"github.com/wgmesh/wgmesh/internal/netconv"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
)

// PluginType is the IPAM type this plugin answers to ("ipam": {"type": ...}).
const PluginType = "wgmesh-ipam"

// DefaultDataDir is the parent directory of the per-network allocation
// directories, the same as host-local's, so operators find state where they
// expect it: /var/lib/cni/networks/<network name>/<address>.
const DefaultDataDir = "/var/lib/cni/networks"

// ErrMalformed marks configuration that is not valid JSON (or JSON of the
// wrong shape): CNI error code 6. ErrInvalid marks configuration that decodes
// but says something impossible or unsupported: CNI error code 7.
var (
	ErrMalformed = errors.New("malformed network configuration")
	ErrInvalid   = errors.New("invalid network configuration")
)

// Attachment names one container interface: the key of every allocation.
type Attachment struct {
	ContainerID string
	IfName      string
}

// Config is the parsed, validated and defaulted configuration.
type Config struct {
	// CNIVersion is the configuration's cniVersion; results are printed in it.
	CNIVersion string
	// Network is the network name: the allocation directory under DataDir.
	Network string
	// SubnetFile is where the node subnet(s) are read from when Ranges is nil.
	SubnetFile string
	// DataDir is the parent of the allocation directory.
	DataDir string
	// Ranges are explicit range sets from the config, canonical
	// (allocator.RangeSet.Canonicalize: RangeStart, RangeEnd and Gateway
	// filled in); a container gets one address from each set. Nil means
	// "from SubnetFile".
	Ranges []allocator.RangeSet
	// Routes are explicit routes; nil means one default route per family.
	// A nil GW means "via the gateway of the address of that family".
	Routes []*types.Route
	// RawPrevResult is the prevResult object (CHECK), undecoded: its shape
	// depends on CNIVersion and the CNI library decodes it.
	RawPrevResult json.RawMessage
	// ValidAttachments is the GC list; nil when the config carries none.
	ValidAttachments []Attachment
	// HasValidAttachments says whether the config carried a GC list at all
	// (an empty list means "no attachment is valid", a missing one means the
	// caller did not send a GC request we can act on).
	HasValidAttachments bool
}

// The JSON shapes. Only the ipam object is decoded strictly: the rest of the
// network configuration belongs to the calling plugin.
type netConfJSON struct {
	CNIVersion       string           `json:"cniVersion"`
	Name             string           `json:"name"`
	IPAM             *json.RawMessage `json:"ipam"`
	PrevResult       json.RawMessage  `json:"prevResult"`
	ValidAttachments json.RawMessage  `json:"cni.dev/valid-attachments"`
	// Attachments is the name the CNI 1.1.0 spec text used by mistake;
	// libcni sends both (containernetworking/cni#1101).
	Attachments json.RawMessage `json:"cni.dev/attachments"`
}

// ipamJSON is host-local's IPAM configuration (type, dataDir) plus
// subnetFile. Ranges and routes shadow host-local's, to be decoded as
// strings first: a bad address is then an invalid value (code 7) named by
// its field, not a JSON decoding failure (code 6). Fields of host-local's
// that wgmesh does not support (resolvConf, the old single range) are
// refused by checkFields.
type ipamJSON struct {
	allocator.IPAMConfig
	SubnetFile string        `json:"subnetFile"`
	Ranges     [][]rangeJSON `json:"ranges"`
	Routes     *[]routeJSON  `json:"routes"`
}

type rangeJSON struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart"`
	RangeEnd   string `json:"rangeEnd"`
	Gateway    string `json:"gateway"`
}

type routeJSON struct {
	Dst string `json:"dst"`
	GW  string `json:"gw"`
}

type attachmentJSON struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// networkName is the CNI spec's rule for network names. The name becomes a
// directory name, so it must never contain a path separator or be "..".
var networkName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// maxNetworkName is NAME_MAX: the network name is a directory name.
const maxNetworkName = 255

// ParseConfig decodes, validates and defaults a network configuration.
// Errors wrap ErrMalformed or ErrInvalid and name the offending field.
func ParseConfig(data []byte) (Config, error) {
	var n netConfJSON
	if err := json.Unmarshal(data, &n); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if n.Name == "" {
		return Config{}, fmt.Errorf("%w: name is missing", ErrInvalid)
	}
	if !networkName.MatchString(n.Name) || n.Name == "." || n.Name == ".." {
		return Config{}, fmt.Errorf("%w: name %q: must start with a letter or digit and contain only letters, digits, '_', '.' and '-'", ErrInvalid, n.Name)
	}
	if len(n.Name) > maxNetworkName {
		return Config{}, fmt.Errorf("%w: name is %d bytes long, at most %d: it names the directory <dataDir>/<name> that holds the allocations", ErrInvalid, len(n.Name), maxNetworkName)
	}
	if n.IPAM == nil || isNull(*n.IPAM) {
		return Config{}, fmt.Errorf("%w: ipam is missing", ErrInvalid)
	}
	// Keys first: host-local's embedded single range would otherwise
	// decode (and judge) a top-level "rangeStart" before it is refused.
	if err := checkFields(*n.IPAM); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var raw ipamJSON
	if err := json.Unmarshal(*n.IPAM, &raw); err != nil {
		return Config{}, fmt.Errorf("%w: ipam: %w", ErrMalformed, err)
	}
	if raw.Type != PluginType {
		return Config{}, fmt.Errorf("%w: ipam.type is %q, want %q", ErrInvalid, raw.Type, PluginType)
	}

	c := Config{
		CNIVersion:    n.CNIVersion,
		Network:       n.Name,
		SubnetFile:    raw.SubnetFile,
		DataDir:       raw.DataDir,
		RawPrevResult: n.PrevResult,
	}
	if c.SubnetFile == "" {
		c.SubnetFile = subnetenv.DefaultPath
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	// A relative path would be resolved against whatever directory the
	// runtime runs the plugin in, which differs between runtimes and
	// between ADD and DEL: addresses would be given twice or never freed.
	if !filepath.IsAbs(c.DataDir) {
		return Config{}, fmt.Errorf("%w: ipam.dataDir %q must be an absolute path", ErrInvalid, c.DataDir)
	}
	if !filepath.IsAbs(c.SubnetFile) {
		return Config{}, fmt.Errorf("%w: ipam.subnetFile %q must be an absolute path", ErrInvalid, c.SubnetFile)
	}

	if raw.Ranges != nil {
		if len(raw.Ranges) == 0 {
			return Config{}, fmt.Errorf("%w: ipam.ranges is empty (leave it out to use the node subnet from %s)", ErrInvalid, c.SubnetFile)
		}
		for i, rs := range raw.Ranges {
			set, err := parseRangeSet(i, rs)
			if err != nil {
				return Config{}, fmt.Errorf("%w: %w", ErrInvalid, err)
			}
			c.Ranges = append(c.Ranges, set)
		}
		if err := checkRangeSets(c.Ranges, c.CNIVersion); err != nil {
			return Config{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}

	if raw.Routes != nil {
		c.Routes = []*types.Route{} // present but empty: no routes at all
		for i, r := range *raw.Routes {
			rt, err := parseRoute(r)
			if err != nil {
				return Config{}, fmt.Errorf("%w: ipam.routes[%d]: %w", ErrInvalid, i, err)
			}
			c.Routes = append(c.Routes, rt)
		}
	}

	var err error
	if c.ValidAttachments, c.HasValidAttachments, err = n.validAttachments(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ParseReleaseConfig decodes only what DEL and GC need to find and free
// allocations: the network name, ipam.dataDir and the GC list. Ranges,
// routes and the subnet file are not looked at, so a configuration that ADD
// refuses today, or one an older, laxer version accepted, never makes DEL
// or GC fail: a runtime keeps a pod until its DEL succeeds.
//
// The name is still checked against the CNI rule, because it becomes a
// path: a name that could climb out of dataDir is refused here too.
func ParseReleaseConfig(data []byte) (Config, error) {
	var n netConfJSON
	if err := json.Unmarshal(data, &n); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if !networkName.MatchString(n.Name) || n.Name == "." || n.Name == ".." {
		return Config{}, fmt.Errorf("%w: name %q: must start with a letter or digit and contain only letters, digits, '_', '.' and '-'", ErrInvalid, n.Name)
	}
	var raw struct {
		DataDir string `json:"dataDir"`
	}
	if n.IPAM != nil && !isNull(*n.IPAM) {
		if err := json.Unmarshal(*n.IPAM, &raw); err != nil {
			return Config{}, fmt.Errorf("%w: ipam: %w", ErrMalformed, err)
		}
	}
	c := Config{CNIVersion: n.CNIVersion, Network: n.Name, DataDir: raw.DataDir}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	var err error
	if c.ValidAttachments, c.HasValidAttachments, err = n.validAttachments(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// An unknown field in our own section is almost always a typo ("rnages",
// "subnetfile", "rangestart") that would otherwise be silently ignored, so
// the ipam object and its ranges and routes may hold only the fields we
// know, spelled exactly (encoding/json alone would match "subnetfile" to
// subnetFile and drop "rnages"). The rest of the network configuration
// belongs to the calling plugin and is not checked.
func checkFields(ipamObj json.RawMessage) error {
	var top struct {
		Ranges [][]json.RawMessage `json:"ranges"`
		Routes []json.RawMessage   `json:"routes"`
	}
	// Only the keys matter here; a wrong shape is judged by decoding.
	_ = json.Unmarshal(ipamObj, &top)
	if err := knownKeys(ipamObj, "ipam", "type", "subnetFile", "dataDir", "ranges", "routes"); err != nil {
		return err
	}
	for i, set := range top.Ranges {
		for j, r := range set {
			if err := knownKeys(r, fmt.Sprintf("ipam.ranges[%d][%d]", i, j), "subnet", "rangeStart", "rangeEnd", "gateway"); err != nil {
				return err
			}
		}
	}
	for i, r := range top.Routes {
		if err := knownKeys(r, fmt.Sprintf("ipam.routes[%d]", i), "dst", "gw"); err != nil {
			return err
		}
	}
	return nil
}

func knownKeys(obj json.RawMessage, where string, known ...string) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil // null, or not an object: decoding already judged it
	}
	var unknown []string
	for k := range m {
		if !slices.Contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return fmt.Errorf("%s: unknown field %q (known fields: %s)", where, unknown[0], strings.Join(known, ", "))
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

// parseRangeSet checks what host-local's RangeSet.Canonicalize checks
// (one family, no overlap), with host-local's Range.Overlaps, but names the
// ranges by index.
func parseRangeSet(i int, rs []rangeJSON) (allocator.RangeSet, error) {
	if len(rs) == 0 {
		return nil, fmt.Errorf("ipam.ranges[%d] is empty", i)
	}
	var set allocator.RangeSet
	for j, r := range rs {
		rg, err := parseRange(r)
		if err != nil {
			return nil, fmt.Errorf("ipam.ranges[%d][%d]: %w", i, j, err)
		}
		if j > 0 && is4(rg) != is4(set[0]) {
			return nil, fmt.Errorf("ipam.ranges[%d] mixes IPv4 and IPv6 (one range set per family)", i)
		}
		for k, prev := range set {
			if prev.Overlaps(&rg) {
				return nil, fmt.Errorf("ipam.ranges[%d][%d] (%s) overlaps ipam.ranges[%d][%d] (%s)", i, j, rg.String(), i, k, prev.String())
			}
		}
		set = append(set, rg)
	}
	return set, nil
}

func checkRangeSets(sets []allocator.RangeSet, cniVersion string) error {
	var v4, v6 int
	for i, a := range sets {
		if is4(a[0]) {
			v4++
		} else {
			v6++
		}
		for j := i + 1; j < len(sets); j++ {
			if !a.Overlaps(&sets[j]) {
				continue
			}
			for _, ra := range a {
				for _, rb := range sets[j] {
					if ra.Overlaps(&rb) {
						return fmt.Errorf("ipam.ranges[%d] overlaps ipam.ranges[%d] (%s and %s)", i, j, ra.String(), rb.String())
					}
				}
			}
		}
	}
	// Results before CNI 0.3.0 carry one address per family.
	if (v4 > 1 || v6 > 1) && (cniVersion == "" || cniVersion == "0.1.0" || cniVersion == "0.2.0") {
		return fmt.Errorf("cniVersion %q allows one address per family, but ipam.ranges has %d IPv4 and %d IPv6 range sets", cniVersion, v4, v6)
	}
	return nil
}

// parseRange parses one range and canonicalises it with host-local's
// Range.Canonicalize (the gateway and the range default to the first host
// address, the end to the last one, before the broadcast address for
// IPv4), after checks host-local does not make: a subnet usable for pods,
// a gateway inside the subnet, no network or broadcast address, the end
// not before the start.
func parseRange(r rangeJSON) (allocator.Range, error) {
	if r.Subnet == "" {
		return allocator.Range{}, errors.New("subnet is missing")
	}
	subnet, err := netip.ParsePrefix(r.Subnet)
	if err != nil {
		return allocator.Range{}, fmt.Errorf("subnet %q is not a CIDR: %w", r.Subnet, err)
	}
	if subnet.Addr().Is4In6() || subnet.Addr().Zone() != "" {
		return allocator.Range{}, fmt.Errorf("subnet %q: use a plain IPv4 or IPv6 prefix", r.Subnet)
	}
	if subnet != subnet.Masked() {
		return allocator.Range{}, fmt.Errorf("subnet %s has host bits set (did you mean %s?)", subnet, subnet.Masked())
	}
	if subnet.Addr().BitLen()-subnet.Bits() < 2 {
		return allocator.Range{}, fmt.Errorf("subnet %s is too small for a gateway and an address (at most /%d)", subnet, subnet.Addr().BitLen()-2)
	}
	if err := subnetenv.CheckPodPrefix(subnet); err != nil {
		return allocator.Range{}, fmt.Errorf("subnet %w", err)
	}
	rg := allocator.Range{Subnet: types.IPNet(*netconv.IPNet(subnet))}
	fields := []struct {
		name string
		val  string
		dst  *net.IP
	}{
		{"rangeStart", r.RangeStart, &rg.RangeStart},
		{"rangeEnd", r.RangeEnd, &rg.RangeEnd},
		{"gateway", r.Gateway, &rg.Gateway},
	}
	for _, f := range fields {
		if f.val == "" {
			continue
		}
		a, err := netip.ParseAddr(f.val)
		if err != nil {
			return allocator.Range{}, fmt.Errorf("%s %q is not an IP address", f.name, f.val)
		}
		if !subnet.Contains(a) {
			return allocator.Range{}, fmt.Errorf("%s %s is outside subnet %s", f.name, a, subnet)
		}
		if err := notNetworkOrBroadcast(subnet, a); err != nil {
			return allocator.Range{}, fmt.Errorf("%s %w", f.name, err)
		}
		*f.dst = a.AsSlice()
	}
	// Before Canonicalize, which would call the start "not in network".
	// With one bound left out no order is wrong: neither bound is the
	// network or broadcast address, and the defaults are the first and
	// last usable addresses.
	if rg.RangeStart != nil && rg.RangeEnd != nil {
		if start, end := netconv.Addr(rg.RangeStart), netconv.Addr(rg.RangeEnd); end.Less(start) {
			return allocator.Range{}, fmt.Errorf("rangeEnd %s is before rangeStart %s", end, start)
		}
	}
	if err := rg.Canonicalize(); err != nil {
		return allocator.Range{}, err // checked above; here for safety
	}
	return rg, nil
}

// notNetworkOrBroadcast refuses the two addresses of a subnet that no pod
// can have: the network address (for IPv6 the subnet-router anycast
// address) and, for IPv4, the broadcast address. host-local accepts them
// as range bounds and leaves the allocator to trip over them; refusing
// says what is wrong before anything is made (we do not clamp: a range
// that silently differs from the one written is harder to debug).
func notNetworkOrBroadcast(subnet netip.Prefix, a netip.Addr) error {
	first, last := subnet.Addr().Next(), lastAddr(subnet)
	if a.Is4() {
		last = last.Prev()
	}
	switch {
	case a == subnet.Addr():
		return fmt.Errorf("%s is the network address of %s, which no pod can use: refused (the first usable address is %s)", a, subnet, first)
	case a.Is4() && a == lastAddr(subnet):
		return fmt.Errorf("%s is the broadcast address of %s, which no pod can use: refused (the last usable address is %s)", a, subnet, last)
	}
	return nil
}

func parseRoute(r routeJSON) (*types.Route, error) {
	dst, err := netip.ParsePrefix(r.Dst)
	if err != nil {
		return nil, fmt.Errorf("dst %q is not a CIDR: %w", r.Dst, err)
	}
	rt := &types.Route{Dst: *netconv.IPNet(dst.Masked())}
	if r.GW != "" {
		gw, err := netip.ParseAddr(r.GW)
		if err != nil {
			return nil, fmt.Errorf("gw %q is not an IP address", r.GW)
		}
		if gw.Is4() != dst.Addr().Is4() {
			return nil, fmt.Errorf("gw %s and dst %s are of different families", gw, dst)
		}
		rt.GW = gw.AsSlice()
	}
	return rt, nil
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func is4(r allocator.Range) bool { return r.Subnet.IP.To4() != nil }

// RangesFromEnv gives one range set per node subnet in subnet.env (IPv4
// first), each covering the whole subnet with host-local's defaults, which
// are the gateway contract: the gateway is the first host address.
// subnetenv.Read has checked the subnets (masked, room for a gateway and a
// pod), so canonicalising cannot fail.
func RangesFromEnv(env subnetenv.Env) []allocator.RangeSet {
	var sets []allocator.RangeSet
	for _, p := range env.Subnets() {
		r := allocator.Range{Subnet: types.IPNet(*netconv.IPNet(p.Masked()))}
		_ = r.Canonicalize()
		sets = append(sets, allocator.RangeSet{r})
	}
	return sets
}

// ResultRoutes returns the routes for a result that holds addresses of the
// given families: the explicit routes if the config has any (even an empty
// list), otherwise one default route per family present.
func (c Config) ResultRoutes(sets []allocator.RangeSet) []*types.Route {
	if c.Routes != nil {
		return c.Routes
	}
	var routes []*types.Route
	var have4, have6 bool
	for _, s := range sets {
		if is4(s[0]) {
			have4 = true
		} else {
			have6 = true
		}
	}
	if have4 {
		routes = append(routes, &types.Route{Dst: *netconv.IPNet(netip.MustParsePrefix("0.0.0.0/0"))})
	}
	if have6 {
		routes = append(routes, &types.Route{Dst: *netconv.IPNet(netip.MustParsePrefix("::/0"))})
	}
	return routes
}

// IsValid reports whether the attachment is in the GC list.
func (c Config) IsValid(a Attachment) bool {
	for _, v := range c.ValidAttachments {
		if v == a {
			return true
		}
	}
	return false
}

// validAttachments decodes the GC list (cni.dev/valid-attachments, or the
// older cni.dev/attachments); ok says whether the runtime sent one.
func (n netConfJSON) validAttachments() (atts []Attachment, ok bool, err error) {
	list := n.ValidAttachments
	if list == nil {
		list = n.Attachments
	}
	if list == nil {
		return nil, false, nil
	}
	var raw []attachmentJSON
	if err := json.Unmarshal(list, &raw); err != nil {
		return nil, true, fmt.Errorf("%w: cni.dev/valid-attachments: %w", ErrMalformed, err)
	}
	for _, a := range raw {
		atts = append(atts, Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	return atts, true, nil
}
