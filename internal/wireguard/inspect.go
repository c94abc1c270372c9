package wireguard

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Observed is a WireGuard device as Inspect found it.
type Observed struct {
	// Mode is ModeKernel for a wireguard link, ModeUserspace for a TUN
	// served by a device process, empty for anything else.
	Mode Mode
	MTU  int
	// Device is nil when the link was found but wgctrl could not read it.
	Device *wgtypes.Device
}

// Inspect reads the device called name without creating or changing
// anything (Ensure would create or reconfigure it; `wgmesh-agent status`
// and doctor must not). It reads a kernel device and a running agent's
// userspace device alike (wgctrl finds the latter's UAPI socket). On a
// wgctrl error the link's mode and MTU are still returned.
func Inspect(name string) (Observed, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return Observed{}, fmt.Errorf("device %s: %w (is the agent running on this node?)", name, err)
	}
	o := Observed{MTU: link.Attrs().MTU}
	switch {
	case link.Type() == "wireguard":
		o.Mode = ModeKernel
	case isTUN(link):
		o.Mode = ModeUserspace
	}
	wc, err := wgctrl.New()
	if err != nil {
		return o, fmt.Errorf("open wgctrl: %w", err)
	}
	defer wc.Close()
	if o.Device, err = wc.Device(name); err != nil {
		return o, fmt.Errorf("read WireGuard device %s: %w", name, err)
	}
	return o, nil
}
