// Package wireguard owns the mesh's WireGuard device (wgmesh0): it creates
// or adopts it (a kernel link, or an embedded wireguard-go device when the
// kernel has no WireGuard, served by its own wireguard-go process), sets its key, port and MTU, and makes its peer
// set match the desired peers by applying only the difference
// (mesh.DiffPeers). It never touches another WireGuard device, and never
// deletes and recreates its own at start: an agent restart adopts the
// device and its peers as they are.
//
// Every function must be called from an OS thread in the network namespace
// of the device (the host namespace in the agent; tests wrap calls in
// ns.Do). A userspace device's process is forked from that thread, so it
// and its TUN and UDP sockets live in that namespace.
package wireguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/wgmesh/wgmesh/internal/cniconf"
	"github.com/wgmesh/wgmesh/internal/mesh"
)

// Mode selects how the device is provided.
type Mode string

const (
	// ModeAuto uses the kernel module when it is there, else userspace.
	ModeAuto Mode = "auto"
	// ModeKernel requires a kernel WireGuard link.
	ModeKernel Mode = "kernel"
	// ModeUserspace runs wireguard-go in a device process of its own that
	// the agent spawns detached and adopts after a restart (process.go).
	ModeUserspace Mode = "userspace"
)

// ParseMode parses the --wireguard flag value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeKernel, ModeUserspace:
		return m, nil
	case "":
		return ModeAuto, nil
	}
	return "", fmt.Errorf("wireguard mode %q: want auto, kernel or userspace", s)
}

// Defaults: the CNI netconf's, so a conflist that names no interface or MTU
// matches a device made without them.
const (
	DefaultName = cniconf.DefaultWireguardInterface
	DefaultMTU  = cniconf.DefaultMTU
)

// Config describes the device.
type Config struct {
	Name       string      // default DefaultName
	Mode       Mode        // default ModeAuto
	ListenPort int         // default mesh.DefaultListenPort
	PrivateKey wgtypes.Key // required; never logged
	MTU        int         // default DefaultMTU
	Logger     *slog.Logger
	// Replaces says that the device replaces one that had peers (the
	// data plane lost it): the first Apply opens a session with every
	// peer it adds (sessions.go). A device process that takes over a
	// detached TUN is taken to replace one, whatever Replaces says.
	Replaces bool
	// OnStartOver, when set, is called for each session the device starts
	// over (sessions.go), with why (mesh.Crossed, mesh.OneWay).
	OnStartOver func(why string)
	// OnDemandIdle > 0 has a userspace device process started here program
	// a peer into wireguard-go only while it carries traffic, and remove it
	// after this long idle (ondemand.go); 0 programs every peer. A device
	// process already running keeps the way it was started with.
	OnDemandIdle time.Duration
}

func (c *Config) setDefaults() error {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Mode == "" {
		c.Mode = ModeAuto
	}
	if _, err := ParseMode(string(c.Mode)); err != nil {
		return err
	}
	if c.ListenPort == 0 {
		c.ListenPort = mesh.DefaultListenPort
	}
	if c.ListenPort < 1 || c.ListenPort > 65535 {
		return fmt.Errorf("listen port %d out of range", c.ListenPort)
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return fmt.Errorf("MTU %d out of range 576..65535", c.MTU)
	}
	if c.PrivateKey == (wgtypes.Key{}) {
		return errors.New("no private key")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Device is the mesh's WireGuard device.
type Device struct {
	cfg    Config
	mode   Mode // ModeKernel or ModeUserspace: what it really is
	client *wgctrl.Client
	// index is the link's ifindex when Ensure returned: a link of the same
	// name with another index is a new device, without our peers.
	index int
	// pid and pidfd are the userspace device's process (pidfd -1 when
	// there is none, or the kernel has no pidfd_open): a pidfd tells that
	// the process is gone even if its pid has been reused since.
	pid   int
	pidfd int
	// EnsureOps counts kernel writes made by Ensure (create, MTU, up, key, port).
	EnsureOps int

	// mu orders Apply's writes and watchSessions' (which removes and adds
	// peers again: it must not bring back one Apply just removed), and
	// guards watch.
	mu    sync.Mutex
	watch *mesh.SessionWatch
	// reopen: the next Apply that adds peers opens their sessions.
	reopen bool
	// stop ends watchSessions; watching waits for it; poke wakes it.
	stop     chan struct{}
	poke     chan struct{}
	watching sync.WaitGroup
}

// Ensure creates the device or adopts the existing one, and makes its MTU,
// up state, private key and listen port right, writing only what differs.
func Ensure(cfg Config) (*Device, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("wireguard config: %w", err)
	}
	log := cfg.Logger.With("device", cfg.Name)
	d := &Device{cfg: cfg, pidfd: -1, reopen: cfg.Replaces}
	ok, spawned := false, false
	defer func() {
		if !ok {
			d.Close()
			if spawned { // a device process started here stops with us
				Remove(cfg.Name)
			}
		}
	}()
	var err error
	if d.client, err = wgctrl.New(); err != nil {
		return nil, fmt.Errorf("open wgctrl: %w", err)
	}

	link, err := netlinksafe.LinkByName(cfg.Name)
	if err == nil && isTUN(link) && cfg.Mode != ModeKernel && !isUserspace(d.client, cfg.Name) {
		link, err = awaitOrphanTUN(d.client, cfg.Name, log)
	}
	var notFound netlink.LinkNotFoundError
	switch {
	case err == nil && isTUN(link) && cfg.Mode != ModeKernel && detached(link) && !isUserspace(d.client, cfg.Name):
		// The device's own TUN, kept (persistent) after its device
		// process died, e.g. with the DaemonSet pod it ran in: its
		// addresses and routes are still there, so a new process takes
		// it over instead of a new link.
		if err := d.attach(log); err != nil {
			return nil, err
		}
		spawned, d.reopen = true, true
		d.EnsureOps++
	case err == nil:
		if err := d.adopt(link); err != nil {
			return nil, err
		}
		log.Info("device adopted", "mode", d.mode)
	case errors.As(err, &notFound):
		if err := d.create(log); err != nil {
			return nil, err
		}
		spawned = d.mode == ModeUserspace
		d.EnsureOps++
	default:
		return nil, fmt.Errorf("look up link %s: %w", cfg.Name, err)
	}
	if spawned && cfg.OnDemandIdle > 0 {
		// A device process with on-demand peers opens a session by itself
		// with each peer that sends it data of a session it does not have;
		// opening them all here would program every peer.
		d.reopen = false
	}

	if link, err = netlinksafe.LinkByName(cfg.Name); err != nil {
		return nil, fmt.Errorf("look up link %s: %w", cfg.Name, err)
	}
	if link.Attrs().MTU != cfg.MTU {
		if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
			return nil, fmt.Errorf("set MTU %d on %s: %w", cfg.MTU, cfg.Name, err)
		}
		d.EnsureOps++
	}
	if link.Attrs().Flags&netFlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("set %s up: %w", cfg.Name, err)
		}
		d.EnsureOps++
	}
	cur, err := d.client.Device(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("read device %s: %w", cfg.Name, err)
	}
	var set wgtypes.Config
	if cur.PrivateKey != cfg.PrivateKey {
		key := cfg.PrivateKey
		set.PrivateKey = &key
	}
	if cur.ListenPort != cfg.ListenPort {
		port := cfg.ListenPort
		set.ListenPort = &port
	}
	if set.PrivateKey != nil || set.ListenPort != nil {
		if err := d.client.ConfigureDevice(cfg.Name, set); err != nil {
			return nil, fmt.Errorf("set key/port on %s: %w", cfg.Name, err)
		}
		d.EnsureOps++
		log.Info("device configured", "listenPort", cfg.ListenPort, "publicKey", cfg.PrivateKey.PublicKey().String(),
			"keyChanged", set.PrivateKey != nil, "portChanged", set.ListenPort != nil)
	}
	d.index = link.Attrs().Index
	if d.mode == ModeUserspace {
		d.watchProcess()
	}
	watchClient, err := wgctrl.New() // here: in the device's network namespace
	if err != nil {
		return nil, fmt.Errorf("open wgctrl: %w", err)
	}
	d.watch, d.stop, d.poke = mesh.NewSessionWatch(d.PublicKey()), make(chan struct{}), make(chan struct{}, 1)
	d.watching.Add(1)
	go d.watchSessions(watchClient)
	ok = true
	return d, nil
}

const netFlagUp = 1 // net.FlagUp

// orphanWait bounds how long Ensure waits for a TUN of the device's name
// that no device process serves to go away.
const orphanWait = 5 * time.Second

func isTUN(link netlink.Link) bool { return link.Type() == "tuntap" || link.Type() == "tun" }

// detached reports whether no process holds the TUN link (its carrier is
// off) while it is up: a persistent TUN whose device process is gone.
func detached(link netlink.Link) bool {
	a := link.Attrs()
	return a.Flags&netFlagUp != 0 && a.RawFlags&unix.IFF_LOWER_UP == 0
}

// awaitOrphanTUN waits until the TUN name, which no device process serves
// in this namespace, is gone, served again or detached (no process holds
// it any more), and returns the link as it then is (a LinkNotFoundError
// once it is gone). Such a TUN is most often one whose device process is
// exiting: killed (the kernel closes its file descriptors, the UAPI
// listener first), or stopping because its socket was removed; the TUN is
// detached when the last descriptor closes, a moment later (and stays: it
// is persistent). Only a TUN still held after orphanWait belongs to
// someone else.
func awaitOrphanTUN(client *wgctrl.Client, name string, log *slog.Logger) (netlink.Link, error) {
	start := time.Now()
	for {
		link, err := netlinksafe.LinkByName(name)
		if err == nil && isTUN(link) && detached(link) {
			return link, nil
		}
		time.Sleep(20 * time.Millisecond)
		link, err = netlinksafe.LinkByName(name)
		if err != nil || !isTUN(link) || isUserspace(client, name) || detached(link) || time.Since(start) > orphanWait {
			log.Info("waited for a TUN without a device process", "waited", time.Since(start).Round(time.Millisecond), "gone", err != nil)
			return link, err
		}
	}
}

// watchProcess opens a pidfd on the device process serving d, so that
// Check sees its death without a round trip to the socket.
func (d *Device) watchProcess() {
	pid, ok := DevicePID(d.cfg.Name)
	if !ok {
		return
	}
	d.pid = pid
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		d.pidfd = fd
	}
}

// ErrDeviceLost says that the device Ensure returned is gone: its link was
// deleted or replaced, or its userspace device process died (a crash, an
// OOM kill, a container restart that took it along). The peers went with
// it; Ensure again and re-apply the full state.
var ErrDeviceLost = errors.New("WireGuard device lost")

// Check reports whether the device is still the one Ensure returned: an
// error wrapping ErrDeviceLost when it is not, another error when it
// cannot tell. It is cheap (one netlink request and, for a userspace
// device, one poll of a pidfd), for a periodic check.
func (d *Device) Check() error {
	if d.pidfd >= 0 {
		fds := []unix.PollFd{{Fd: int32(d.pidfd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			return fmt.Errorf("%w: device process %d of %s exited", ErrDeviceLost, d.pid, d.cfg.Name)
		}
	}
	link, err := netlinksafe.LinkByName(d.cfg.Name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return fmt.Errorf("%w: link %s is gone", ErrDeviceLost, d.cfg.Name)
	case err != nil:
		return fmt.Errorf("look up link %s: %w", d.cfg.Name, err)
	case link.Attrs().Index != d.index:
		return fmt.Errorf("%w: link %s was replaced (ifindex %d, now %d)", ErrDeviceLost, d.cfg.Name, d.index, link.Attrs().Index)
	}
	return nil
}

func (d *Device) adopt(link netlink.Link) error {
	name := d.cfg.Name
	switch link.Type() {
	case "wireguard":
		if d.cfg.Mode == ModeUserspace {
			return fmt.Errorf("%s exists as a kernel WireGuard link but --wireguard=userspace: delete it (ip link del %s) or use auto", name, name)
		}
		d.mode = ModeKernel
		return nil
	case "tuntap", "tun":
		if d.cfg.Mode == ModeKernel {
			return fmt.Errorf("%s exists as a userspace WireGuard device but --wireguard=kernel: run wgmesh-agent cleanup first, or use auto", name)
		}
		if isUserspace(d.client, name) {
			d.mode = ModeUserspace // our device process, left by the previous agent
			return nil
		}
		return fmt.Errorf("%s exists as a TUN device without a WireGuard UAPI socket (%s) in this namespace, still after %s; stop the process that holds it", name, socketPath(name), orphanWait)
	}
	return fmt.Errorf("%s exists and is a %q link, not a WireGuard device; rename it or choose another --wireguard-device", name, link.Type())
}

// attach starts a device process that takes over the detached TUN of the
// device's name (see detached).
func (d *Device) attach(log *slog.Logger) error {
	if err := checkTUN(tunPath); err != nil {
		return fmt.Errorf("userspace WireGuard device %s needs %s: %w; %s", d.cfg.Name, tunPath, err, tunAdvice)
	}
	if err := spawnDevice(d.cfg.Name, d.cfg.MTU, d.cfg.OnDemandIdle, log); err != nil {
		return fmt.Errorf("take over the TUN of userspace WireGuard device %s: %w", d.cfg.Name, err)
	}
	d.mode = ModeUserspace
	log.Info("device process took over the TUN", "mode", d.mode)
	return nil
}

func (d *Device) create(log *slog.Logger) error {
	name := d.cfg.Name
	var kernelErr error
	if d.cfg.Mode != ModeUserspace {
		kernelErr = netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: d.cfg.MTU}})
		if kernelErr == nil {
			d.mode = ModeKernel
			log.Info("device created", "mode", d.mode)
			return nil
		}
		if d.cfg.Mode == ModeKernel {
			return fmt.Errorf("create kernel WireGuard link %s: %w (use --wireguard=auto or userspace without the module)", name, kernelErr)
		}
		log.Info("kernel WireGuard unavailable, using userspace", "reason", kernelErr.Error())
	}
	// Only now is the TUN device needed: a node with kernel WireGuard
	// works without it (the DaemonSet mounts it only where the host has it).
	if err := checkTUN(tunPath); err != nil {
		if kernelErr != nil {
			return fmt.Errorf("no WireGuard for %s: the kernel has none (%v), and userspace WireGuard needs %s: %w; load the wireguard module on the host (modprobe wireguard), or %s", name, kernelErr, tunPath, err, tunAdvice)
		}
		return fmt.Errorf("userspace WireGuard device %s (--wireguard=userspace) needs %s: %w; %s, or use --wireguard=auto on a host with the wireguard module", name, tunPath, err, tunAdvice)
	}
	if err := spawnDevice(name, d.cfg.MTU, d.cfg.OnDemandIdle, log); err != nil {
		return fmt.Errorf("create userspace WireGuard device %s: %w", name, err)
	}
	d.mode = ModeUserspace
	log.Info("device created", "mode", d.mode)
	return nil
}

// tunPath is the TUN clone device that wireguard-go opens (its path is
// fixed there); a variable so that tests can point the check elsewhere.
var tunPath = "/dev/net/tun"

// tunAdvice says how to give the agent a TUN device.
const tunAdvice = "give the host a TUN device (modprobe tun; in an LXC container allow the device c 10:200 and bind-mount /dev/net/tun into it); the agent retries, and its pod sees the host's /dev/net"

// checkTUN says why path is not a usable TUN clone device: missing (the
// host has none, some LXC containers and minimal images) or not a
// character device (something else created a file of that name).
func checkTUN(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return errors.New("it does not exist (the host has no TUN device, or /dev/net is not mounted into the pod)")
	case err != nil:
		return err
	case fi.Mode().Type() != os.ModeDevice|os.ModeCharDevice:
		return fmt.Errorf("it is not a character device (mode %s)", fi.Mode())
	}
	return nil
}

// Name is the device's interface name.
func (d *Device) Name() string { return d.cfg.Name }

// Mode is what the device really is: ModeKernel or ModeUserspace.
func (d *Device) Mode() Mode { return d.mode }

// PublicKey is the device's public key.
func (d *Device) PublicKey() wgtypes.Key { return d.cfg.PrivateKey.PublicKey() }

// Read returns the device as wgctrl sees it (peers with handshake times,
// byte counters and endpoints).
func (d *Device) Read() (*wgtypes.Device, error) {
	if d.client == nil {
		return nil, fmt.Errorf("read device %s: closed", d.cfg.Name)
	}
	dev, err := d.client.Device(d.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("read device %s: %w", d.cfg.Name, err)
	}
	return dev, nil
}

// Apply makes the device's peers exactly the desired ones: it reads the
// device, computes mesh.DiffPeers and configures only that difference (in
// one call). It returns what it changed.
func (d *Device) Apply(desired []mesh.Peer) (mesh.PeerOps, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dev, err := d.Read()
	if err != nil {
		return mesh.PeerOps{}, err
	}
	cfg := mesh.DiffPeersAt(dev.Peers, desired, time.Now())
	if len(cfg.Peers) == 0 {
		return mesh.PeerOps{}, nil
	}
	if err := d.client.ConfigureDevice(d.cfg.Name, cfg); err != nil {
		return mesh.PeerOps{}, fmt.Errorf("configure %d peer(s) on %s: %w", len(cfg.Peers), d.cfg.Name, err)
	}
	added, quiet := addedPeers(cfg)
	if len(added) > 0 {
		d.watch.Added(added...)
		select {
		case d.poke <- struct{}{}:
		default: // a poke is pending
		}
	}
	if d.reopen && len(added) > 0 {
		if err := open(d.client, d.cfg.Name, quiet); err != nil {
			return mesh.CountPeerOps(cfg), err
		}
		d.reopen = false
		d.cfg.Logger.Info("opened sessions with the peers of the device this one replaces", "device", d.cfg.Name, "peers", len(added))
	}
	log := d.cfg.Logger.With("device", d.cfg.Name)
	for _, p := range cfg.Peers {
		var allowed []string
		for _, n := range p.AllowedIPs {
			allowed = append(allowed, n.String())
		}
		switch {
		case p.Remove:
			log.Info("peer removed", "publicKey", p.PublicKey.String())
		case p.UpdateOnly:
			log.Info("peer updated", "publicKey", p.PublicKey.String(), "allowedIPs", allowed, "endpoint", p.Endpoint)
		default:
			log.Info("peer added", "publicKey", p.PublicKey.String(), "allowedIPs", allowed, "endpoint", p.Endpoint)
		}
	}
	return mesh.CountPeerOps(cfg), nil
}

// Close releases the agent's handles and leaves a kernel device, with its
// peers, in place (an agent stopped by SIGTERM keeps the data plane). A
// userspace device's process keeps running too: the next agent adopts it.
func (d *Device) Close() error {
	if d.stop != nil {
		close(d.stop)
		d.watching.Wait()
		d.stop = nil
	}
	if d.pidfd >= 0 {
		unix.Close(d.pidfd)
		d.pidfd = -1
	}
	if d.client == nil {
		return nil
	}
	err := d.client.Close()
	d.client = nil
	return err
}

// Delete removes the device (wgmesh-agent cleanup) and closes d.
func (d *Device) Delete() error {
	err := d.Close()
	return errors.Join(err, Remove(d.cfg.Name))
}

// Remove deletes the WireGuard device name if it exists (kernel link, the
// userspace device process with its TUN and socket, or a leftover socket),
// waiting until it is gone, for cleanup without a running Device. It
// refuses to delete a link that is not WireGuard.
func Remove(name string) error {
	var errs []error
	link, err := netlinksafe.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		if err := removeStaleSocket(name); err != nil {
			errs = append(errs, err)
		}
	case err != nil:
		errs = append(errs, fmt.Errorf("look up link %s: %w", name, err))
	case link.Type() == "wireguard":
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete link %s: %w", name, err))
		}
	case link.Type() == "tuntap" || link.Type() == "tun":
		pid, ok := DevicePID(name)
		if !ok && !detached(link) {
			errs = append(errs, fmt.Errorf("%s is a TUN without a WireGuard UAPI socket in this namespace: left alone; stop the process that holds it", name))
			break
		}
		if ok {
			// The process lets go of the TUN; being persistent, it stays.
			released := func() bool {
				l, err := netlinksafe.LinkByName(name)
				return errors.As(err, &notFound) || (err == nil && detached(l))
			}
			if err := stopDevice(name, pid, released); err != nil {
				errs = append(errs, err)
				break
			}
		}
		if l, err := netlinksafe.LinkByName(name); err == nil {
			if err := netlink.LinkDel(l); err != nil && !errors.As(err, &notFound) {
				errs = append(errs, fmt.Errorf("delete TUN %s: %w", name, err))
			}
		}
		if err := removeStaleSocket(name); err != nil { // a killed process's
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("%s is a %q link, not WireGuard: left alone", name, link.Type()))
	}
	return errors.Join(errs...)
}

// removeStaleSocket removes the UAPI socket file of name that no process
// answers on: the leftover of a killed device process. One that answers
// is a device of the same name in another namespace (the socket directory
// is shared) and stays.
func removeStaleSocket(name string) error {
	sock := socketPath(name)
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return nil
	}
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", sock, err)
	}
	return nil
}

// MTU is the device MTU that Ensure set.
func (d *Device) MTU() int { return d.cfg.MTU }
