// Package cniconf parses and validates the network configuration (netconf)
// that the runtime passes to the wgmesh CNI plugin on stdin.
//
// It owns the netconf fields, their defaults and their validation, and the
// "effective" netconf handed to the IPAM delegate (the original bytes with a
// default ipam section added when the user gave none). It is pure: it never
// reads files other than its input and never touches the network.
package cniconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/wgmesh/wgmesh/internal/subnetenv"
)

// Defaults of the netconf fields. The bridge, the interface and the MTU are
// also the agent's defaults (its --bridge, and wireguard.DefaultName and
// DefaultMTU are these), so that a conflist that names none of them matches
// an agent started without flags. This package is their one home because it
// is pure and small enough for the plugin binary to import.
const (
	DefaultBridge             = "cni0"
	DefaultSubnetFile         = subnetenv.DefaultPath
	DefaultWireguardInterface = "wgmesh0"
	DefaultIPAMType           = "wgmesh-ipam"
	// DefaultMTU is used when neither the netconf nor subnet.env sets an MTU:
	// 1500 (the common underlay) minus 80 (WireGuard over IPv6, the larger
	// overhead), the value wg-quick and flannel settled on.
	DefaultMTU = 1420

	// maxIfName is IFNAMSIZ-1: Linux interface names are at most 15 bytes.
	maxIfName = 15
	minMTU    = 576
	maxMTU    = 65535
)

// NetConf is the wgmesh plugin configuration.
type NetConf struct {
	types.NetConf

	// Bridge is the Linux bridge the pods' host-side veths are attached to.
	Bridge string `json:"bridge"`
	// SubnetFile is the subnet.env written by wgmesh-agent.
	SubnetFile string `json:"subnetFile"`
	// MTU of the bridge and both veth ends. 0 means: WGMESH_MTU from
	// subnet.env, or DefaultMTU when that is unset too.
	MTU int `json:"mtu"`
	// WireguardInterface is the mesh device STATUS requires to be up.
	WireguardInterface string `json:"wireguardInterface"`
	// HairpinMode lets a pod reach itself through a service/host port.
	// A pointer so that an explicit false is told apart from "absent".
	HairpinMode *bool `json:"hairpinMode"`
}

// Hairpin reports the effective hairpin mode (default true).
func (n *NetConf) Hairpin() bool { return n.HairpinMode == nil || *n.HairpinMode }

// EffectiveMTU picks the MTU: the netconf's, else subnet.env's, else DefaultMTU.
func (n *NetConf) EffectiveMTU(subnetEnvMTU int) int {
	switch {
	case n.MTU > 0:
		return n.MTU
	case subnetEnvMTU > 0:
		return subnetEnvMTU
	default:
		return DefaultMTU
	}
}

// Config is a parsed netconf plus the bytes to hand to the IPAM delegate.
type Config struct {
	NetConf
	// IPAMStdin is the netconf as received, with "ipam" set to
	// {"type":"wgmesh-ipam"} when the user gave no ipam section, so the
	// delegate sees every other field (name, cniVersion, runtimeConfig, ...).
	IPAMStdin []byte
}

// ErrDecode marks a netconf that is not valid JSON of the right shape
// (CNI error code 6); other Parse errors are invalid values (code 7).
var ErrDecode = errors.New("cannot decode netconf")

// Parse decodes, defaults and validates a netconf.
func Parse(data []byte) (*Config, error) {
	n := NetConf{
		Bridge:             DefaultBridge,
		SubnetFile:         DefaultSubnetFile,
		WireguardInterface: DefaultWireguardInterface,
	}
	if err := json.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecode, err)
	}
	if n.IPAM.Type == "" {
		if err := requireNoTypelessIPAM(data); err != nil {
			return nil, err
		}
		n.IPAM.Type = DefaultIPAMType
	}
	if err := n.validate(); err != nil {
		return nil, err
	}
	ipamStdin, err := n.ipamStdin(data)
	if err != nil {
		return nil, err
	}
	return &Config{NetConf: n, IPAMStdin: ipamStdin}, nil
}

// requireNoTypelessIPAM refuses an ipam section that has keys but no type:
// it would be silently replaced by the default otherwise.
func requireNoTypelessIPAM(data []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("%w: %w", ErrDecode, err)
	}
	if m == nil {
		return fmt.Errorf("%w: not a JSON object", ErrDecode)
	}
	if raw, ok := m["ipam"]; ok && !isEmptyIPAM(raw) {
		return fmt.Errorf(`ipam section has no "type" (omit it to use %q)`, DefaultIPAMType)
	}
	return nil
}

// ipamStdin is the netconf for the IPAM delegate: the original bytes, except
// that wgmesh-ipam gets an ipam section when there was none and inherits
// the plugin's subnetFile when its own is unset, so both plugins always
// read the same file.
func (n *NetConf) ipamStdin(data []byte) ([]byte, error) {
	if n.IPAM.Type != DefaultIPAMType {
		return data, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecode, err)
	}
	ipam := map[string]json.RawMessage{}
	if raw, ok := m["ipam"]; ok && !isEmptyIPAM(raw) {
		if err := json.Unmarshal(raw, &ipam); err != nil {
			return nil, fmt.Errorf("%w: ipam: %w", ErrDecode, err)
		}
	}
	_, hasType := ipam["type"]
	_, hasFile := ipam["subnetFile"]
	if hasType && (hasFile || n.SubnetFile == DefaultSubnetFile) {
		return data, nil // nothing to add: keep the bytes as they came
	}
	ipam["type"], _ = json.Marshal(DefaultIPAMType)
	if !hasFile && n.SubnetFile != DefaultSubnetFile {
		ipam["subnetFile"], _ = json.Marshal(n.SubnetFile)
	}
	var err error
	if m["ipam"], err = json.Marshal(ipam); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

func isEmptyIPAM(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return bytes.Equal(t, []byte("null")) || bytes.Equal(t, []byte("{}"))
}

func (n *NetConf) validate() error {
	if n.Name == "" {
		return errors.New(`"name" is required`)
	}
	if n.Type != "" && n.Type != "wgmesh" {
		return fmt.Errorf(`"type" is %q, this plugin is "wgmesh"`, n.Type)
	}
	if err := ValidIfName("bridge", n.Bridge); err != nil {
		return err
	}
	if err := ValidIfName("wireguardInterface", n.WireguardInterface); err != nil {
		return err
	}
	if n.Bridge == n.WireguardInterface {
		return fmt.Errorf("bridge and wireguardInterface are both %q", n.Bridge)
	}
	if n.SubnetFile == "" || !strings.HasPrefix(n.SubnetFile, "/") {
		return fmt.Errorf("subnetFile %q must be an absolute path", n.SubnetFile)
	}
	if n.MTU != 0 && (n.MTU < minMTU || n.MTU > maxMTU) {
		return fmt.Errorf("mtu %d is out of range (%d-%d, or 0 for subnet.env's)", n.MTU, minMTU, maxMTU)
	}
	if strings.ContainsAny(n.IPAM.Type, `/\`) {
		return fmt.Errorf("ipam type %q must be a plugin name, not a path", n.IPAM.Type)
	}
	return nil
}

// ValidIfName checks a Linux interface name as the kernel would
// (dev_valid_name): 1-15 bytes, not "." or "..", no '/', ':' or whitespace.
func ValidIfName(field, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%s is empty", field)
	case len(name) > maxIfName:
		return fmt.Errorf("%s %q is longer than %d bytes", field, name, maxIfName)
	case name == "." || name == "..":
		return fmt.Errorf("%s %q is not a valid interface name", field, name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || r <= ' ' || r == 0x7f {
			return fmt.Errorf("%s %q contains %q, not allowed in an interface name", field, name, r)
		}
	}
	return nil
}
