// Package subnetenv reads and writes /run/wgmesh/subnet.env, the file through
// which the agent tells the CNI plugins which node subnet(s) and MTU to use.
//
// It owns the file format only: KEY=VALUE lines (WGMESH_NETWORK,
// WGMESH_SUBNET, WGMESH_SUBNET6, WGMESH_MTU, WGMESH_IPMASQ), '#' comments and
// blank lines allowed. It never touches the network.
package subnetenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wgmesh/wgmesh/internal/atomicfile"
)

// DefaultPath is where the agent writes the file and the plugins read it.
const DefaultPath = "/run/wgmesh/subnet.env"

// Env is the content of subnet.env. At least one of Subnet and Subnet6 is set.
type Env struct {
	// Network is the cluster pod CIDR (IPv4), e.g. 10.42.0.0/16. Optional.
	Network netip.Prefix
	// Network6 is the cluster pod CIDR (IPv6). Optional.
	Network6 netip.Prefix
	// Subnet is this node's IPv4 pod subnet, e.g. 10.42.1.0/24.
	Subnet netip.Prefix
	// Subnet6 is this node's IPv6 pod subnet.
	Subnet6 netip.Prefix
	// MTU is the pod MTU (underlay MTU minus WireGuard overhead).
	MTU int
	// IPMasq says whether the agent masquerades pod traffic leaving the cluster.
	IPMasq bool
}

const (
	keyNetwork  = "WGMESH_NETWORK"
	keyNetwork6 = "WGMESH_NETWORK6"
	keySubnet   = "WGMESH_SUBNET"
	keySubnet6  = "WGMESH_SUBNET6"
	keyMTU      = "WGMESH_MTU"
	keyIPMasq   = "WGMESH_IPMASQ"
)

// Subnets returns the node subnets that are set, IPv4 first.
func (e Env) Subnets() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []netip.Prefix{e.Subnet, e.Subnet6} {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

// Validate checks the invariants a plugin relies on.
func (e Env) Validate() error {
	if !e.Subnet.IsValid() && !e.Subnet6.IsValid() {
		return fmt.Errorf("neither %s nor %s is set", keySubnet, keySubnet6)
	}
	if e.Subnet.IsValid() && !e.Subnet.Addr().Is4() {
		return fmt.Errorf("%s=%s is not an IPv4 prefix", keySubnet, e.Subnet)
	}
	if e.Subnet6.IsValid() && !e.Subnet6.Addr().Is6() {
		return fmt.Errorf("%s=%s is not an IPv6 prefix", keySubnet6, e.Subnet6)
	}
	if e.Network.IsValid() && !e.Network.Addr().Is4() {
		return fmt.Errorf("%s=%s is not an IPv4 prefix", keyNetwork, e.Network)
	}
	if e.Network6.IsValid() && !e.Network6.Addr().Is6() {
		return fmt.Errorf("%s=%s is not an IPv6 prefix", keyNetwork6, e.Network6)
	}
	if e.Network.IsValid() && e.Subnet.IsValid() && !contains(e.Network, e.Subnet) {
		return fmt.Errorf("%s=%s is not inside %s=%s", keySubnet, e.Subnet, keyNetwork, e.Network)
	}
	if e.Network6.IsValid() && e.Subnet6.IsValid() && !contains(e.Network6, e.Subnet6) {
		return fmt.Errorf("%s=%s is not inside %s=%s", keySubnet6, e.Subnet6, keyNetwork6, e.Network6)
	}
	for _, kv := range []struct {
		key string
		p   netip.Prefix
	}{{keySubnet, e.Subnet}, {keySubnet6, e.Subnet6}} {
		if kv.p.IsValid() {
			if err := CheckPodPrefix(kv.p); err != nil {
				return fmt.Errorf("%s=%w", kv.key, err)
			}
		}
	}
	if e.Subnet.IsValid() && e.Subnet.Bits() > 30 {
		return fmt.Errorf("%s=%s is too small for a gateway and pods (at most /30)", keySubnet, e.Subnet)
	}
	if e.Subnet6.IsValid() && e.Subnet6.Bits() > 126 {
		return fmt.Errorf("%s=%s is too small for a gateway and pods (at most /126)", keySubnet6, e.Subnet6)
	}
	if e.MTU != 0 && (e.MTU < 576 || e.MTU > 65535) {
		return fmt.Errorf("%s=%d is out of range (576-65535)", keyMTU, e.MTU)
	}
	return nil
}

func contains(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// Parse reads subnet.env content. Unknown WGMESH_ keys are rejected so that a
// typo is not silently ignored; other keys are ignored (the file may be
// sourced by shell scripts that add their own).
func Parse(data []byte) (Env, error) {
	var e Env
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return Env{}, fmt.Errorf("line %d: %q is not KEY=VALUE", n, line)
		}
		key, val = strings.TrimSpace(key), unquote(strings.TrimSpace(val))
		if !strings.HasPrefix(key, "WGMESH_") {
			continue
		}
		if seen[key] {
			return Env{}, fmt.Errorf("line %d: %s is set twice", n, key)
		}
		seen[key] = true
		var err error
		switch key {
		case keyNetwork:
			e.Network, err = parsePrefix(val)
		case keyNetwork6:
			e.Network6, err = parsePrefix(val)
		case keySubnet:
			e.Subnet, err = parsePrefix(val)
		case keySubnet6:
			e.Subnet6, err = parsePrefix(val)
		case keyMTU:
			e.MTU, err = strconv.Atoi(val)
		case keyIPMasq:
			e.IPMasq, err = strconv.ParseBool(val)
		default:
			err = errors.New("unknown key")
		}
		if err != nil {
			return Env{}, fmt.Errorf("line %d: %s: %w", n, key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return Env{}, err
	}
	if err := e.Validate(); err != nil {
		return Env{}, err
	}
	return e, nil
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		return s[1 : len(s)-1]
	}
	return s
}

// parsePrefix accepts an empty value (unset) or a canonical prefix: a prefix
// with host bits set (10.42.1.5/24) is refused because it is almost always a
// mistake in a hand-written file.
func parsePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%s has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

// Format renders e in the file format. Parse(Format(e)) == e for a valid e.
func Format(e Env) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by wgmesh-agent. Read by the wgmesh CNI plugins.\n")
	for _, kv := range []struct {
		k string
		p netip.Prefix
	}{{keyNetwork, e.Network}, {keyNetwork6, e.Network6}, {keySubnet, e.Subnet}, {keySubnet6, e.Subnet6}} {
		if kv.p.IsValid() {
			fmt.Fprintf(&b, "%s=%s\n", kv.k, kv.p)
		}
	}
	if e.MTU != 0 {
		fmt.Fprintf(&b, "%s=%d\n", keyMTU, e.MTU)
	}
	fmt.Fprintf(&b, "%s=%t\n", keyIPMasq, e.IPMasq)
	return b.Bytes()
}

// Read parses the file at path. A missing file gives an error that wraps
// os.ErrNotExist, so callers can tell "agent not ready yet" from "broken".
func Read(path string) (Env, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Env{}, err
	}
	e, err := Parse(data)
	if err != nil {
		return Env{}, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

// Write replaces the file at path atomically (atomicfile.Write), creating
// the directory if needed, so a plugin never reads a half-written file.
func Write(path string, e Env) error {
	if err := e.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, Format(e), 0o644)
}
