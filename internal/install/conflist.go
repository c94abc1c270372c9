package install

import (
	"encoding/json"
	"fmt"

	"github.com/wgmesh/wgmesh/internal/subnetenv"
)

// ConflistName is the file install writes into the CNI conf dir. The "10-"
// prefix is the convention containerd's lexical ordering expects for the
// primary network.
const ConflistName = "10-wgmesh.conflist"

// ConflistConfig is what the conflist must agree on with the agent: the
// bridge, the WireGuard interface and the subnet file.
type ConflistConfig struct {
	Bridge             string
	WireguardInterface string
	SubnetFile         string
}

// conflist is the wgmesh chain: wgmesh (bridge + veth, IPAM wgmesh-ipam),
// then portmap (hostPort) and bandwidth (traffic shaping annotations), as the
// runtimes expect from a Kubernetes CNI. MTU is left to subnet.env.
type conflist struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []any  `json:"plugins"`
}

type wgmeshConf struct {
	Type               string   `json:"type"`
	Bridge             string   `json:"bridge"`
	SubnetFile         string   `json:"subnetFile"`
	WireguardInterface string   `json:"wireguardInterface"`
	HairpinMode        bool     `json:"hairpinMode"`
	IPAM               ipamConf `json:"ipam"`
}

// ipamConf names the subnet file only when it is not the default, so the
// default render is exactly conflist/10-wgmesh.conflist.
type ipamConf struct {
	Type       string `json:"type"`
	SubnetFile string `json:"subnetFile,omitempty"`
}

type chainedConf struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
	SNAT         *bool           `json:"snat,omitempty"`
}

// RenderConflist returns the conflist for c, ending in a newline.
func RenderConflist(c ConflistConfig) ([]byte, error) {
	if c.Bridge == "" || c.WireguardInterface == "" || c.SubnetFile == "" {
		return nil, fmt.Errorf("conflist needs a bridge, a WireGuard interface and a subnet file (got %+v)", c)
	}
	snat := true
	ipam := ipamConf{Type: "wgmesh-ipam"}
	if c.SubnetFile != subnetenv.DefaultPath {
		ipam.SubnetFile = c.SubnetFile
	}
	l := conflist{
		CNIVersion: "1.1.0",
		Name:       "wgmesh",
		Plugins: []any{
			wgmeshConf{
				Type:               "wgmesh",
				Bridge:             c.Bridge,
				WireguardInterface: c.WireguardInterface,
				SubnetFile:         c.SubnetFile,
				HairpinMode:        true,
				IPAM:               ipam,
			},
			// snat: hostPort traffic from the node itself reaches the pod.
			chainedConf{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}, SNAT: &snat},
			chainedConf{Type: "bandwidth", Capabilities: map[string]bool{"bandwidth": true}},
		},
	}
	out, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render conflist: %w", err)
	}
	return append(out, '\n'), nil
}

// SupportPlugins are reference plugins the node needs besides wgmesh's own:
// portmap and bandwidth (chained in the conflist) and loopback (containerd's
// CRI brings up the pod's lo with it). The image carries the reference
// builds; install copies each only into a bin dir that has none, never over
// the distribution's. k3s started with --flannel-backend=none points
// containerd at the bare /opt/cni/bin, which has none of them.
var SupportPlugins = []string{"portmap", "bandwidth", "loopback"}

// OwnPlugins are the binaries wgmesh builds and install always keeps current.
var OwnPlugins = []string{"wgmesh", "wgmesh-ipam"}
