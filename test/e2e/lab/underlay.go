package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/plugins/pkg/ns"
)

// UnderlayBridge is the bridge, inside the underlay namespace, that every
// node and the control plane are plugged into: the lab's "internet".
const UnderlayBridge = "br0"

// NetNSPath is where `ip netns` keeps a named namespace.
func NetNSPath(name string) string { return filepath.Join("/run/netns", name) }

// UnderlayNetNS is the namespace that holds the underlay bridge (tcpdump here
// sees every packet between nodes).
func (l *Lab) UnderlayNetNS() string { return l.nsName("ul") }

// ControlPlaneNetNS is the namespace of etcd, kube-apiserver and
// kube-controller-manager.
func (l *Lab) ControlPlaneNetNS() string { return l.nsName("cp") }

func (l *Lab) makeUnderlay(ctx context.Context) error {
	ul := l.UnderlayNetNS()
	if _, err := runCmd(ctx, "ip", "netns", "add", ul); err != nil {
		return err
	}
	l.addNetNS(ul)
	if err := runAll(ctx,
		[]string{"ip", "-n", ul, "link", "set", "lo", "up"},
		[]string{"ip", "-n", ul, "link", "add", UnderlayBridge, "type", "bridge"},
		[]string{"ip", "-n", ul, "link", "set", UnderlayBridge, "up"},
	); err != nil {
		return err
	}
	cp := l.ControlPlaneNetNS()
	if _, err := runCmd(ctx, "ip", "netns", "add", cp); err != nil {
		return err
	}
	l.addNetNS(cp)
	if _, err := runCmd(ctx, "ip", "-n", cp, "link", "set", "lo", "up"); err != nil {
		return err
	}
	if err := l.plug(ctx, cp, "cp", ControlPlaneIP); err != nil {
		return err
	}
	return l.plug6(ctx, cp, ControlPlaneIP6)
}

// plug connects namespace netns to the underlay bridge with a veth whose
// namespace side is eth0 with addr/24.
func (l *Lab) plug(ctx context.Context, netns, port string, addr netip.Addr) error {
	ul := l.UnderlayNetNS()
	return runAll(ctx,
		[]string{"ip", "link", "add", "eth0", "netns", netns, "type", "veth", "peer", "name", port, "netns", ul},
		[]string{"ip", "-n", ul, "link", "set", port, "master", UnderlayBridge, "up"},
		[]string{"ip", "-n", netns, "addr", "add", netip.PrefixFrom(addr, UnderlayPrefix.Bits()).String(), "dev", "eth0"},
		[]string{"ip", "-n", netns, "link", "set", "eth0", "up"},
	)
}

// InNetNS runs fn on a locked OS thread inside the named network namespace.
// Sockets opened by fn stay in that namespace after it returns.
func InNetNS(name string, fn func() error) error {
	h, err := ns.GetNS(NetNSPath(name))
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer h.Close()
	return h.Do(func(ns.NetNS) error { return fn() })
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }
