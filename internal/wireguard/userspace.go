package wireguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// socketDir is where wireguard-go puts its UAPI sockets (what `wg` and
// wgctrl read). It is one directory for every network namespace, so two
// devices of the same name in two namespaces would collide there.
const socketDir = "/var/run/wireguard"

// userspace is a wireguard-go device served on its UAPI socket, so that
// `wg show` and wgctrl see it like a kernel device.
type userspace struct {
	netns    *netnsHandle
	dev      *device.Device
	uapi     net.Listener
	accepted sync.WaitGroup
	// uapiDone closes when the UAPI listener stops accepting: closed, or
	// its socket file was removed (wireguard-go watches it with inotify).
	uapiDone chan struct{}
	// od programs peers on demand (ondemand.go); nil when every peer is
	// programmed. stopTrim ends its idle trim.
	od       *onDemand
	stopTrim chan struct{}
	tidy     *tidier
}

// startUserspace creates the TUN and the device in the namespace of the
// calling thread, and serves the UAPI socket. With idle > 0 it programs
// peers on demand and removes those idle that long (ondemand.go).
//
// wireguard-go does its namespace-sensitive work on its own goroutines:
// opening the UDP sockets (on "link up" events and on a listen-port change
// through UAPI) and reading the MTU (on link events). Go starts those
// goroutines on threads of the initial namespace, not the caller's, so the
// bind and the TUN are wrapped to do that work inside the caller's
// namespace. Without this, in a test namespace the sockets would listen in
// the host namespace.
func startUserspace(name string, mtu int, idle time.Duration, log *slog.Logger) (u *userspace, err error) {
	u = &userspace{}
	defer func() {
		if err != nil {
			u.close()
		}
	}()
	cur, err := ns.GetCurrentNS()
	if err != nil {
		return nil, fmt.Errorf("open current netns: %w", err)
	}
	u.netns = &netnsHandle{netns: cur}
	t, err := tun.CreateTUN(name, mtu) // or attach to a detached one of that name
	if err != nil {
		return nil, fmt.Errorf("create TUN: %w", err)
	}
	// Persistent: the link, its addresses and routes outlive this process.
	// In the DaemonSet it dies with the agent's pod (a rollout, a
	// restart); the next agent's device process takes the TUN over, so the
	// node never lacks its mesh device (the CNI plugin's STATUS) and no
	// route is deleted and added again. Remove deletes the link.
	if err := setPersist(t); err != nil {
		t.Close()
		return nil, fmt.Errorf("make TUN %s persistent: %w", name, err)
	}
	wlog := log.With("component", "wireguard-go") // the caller names the device
	logger := &device.Logger{
		Verbosef: func(format string, args ...any) { wlog.Debug(fmt.Sprintf(format, args...)) },
		Errorf:   func(format string, args ...any) { wlog.Warn(fmt.Sprintf(format, args...)) },
	}
	var td tun.Device = &nsTUN{Device: t, netns: u.netns}
	var bind conn.Bind = &nsBind{Bind: conn.NewDefaultBind(), netns: u.netns}
	if idle > 0 {
		u.od = newOnDemand(idle, log) // the caller names the device
		td, bind = &odTUN{Device: td, od: u.od}, &odBind{Bind: bind, od: u.od}
	}
	u.dev = device.NewDevice(td, bind, logger)
	u.stopTrim = make(chan struct{})
	u.tidy = newTidier()
	go u.tidy.run(u.stopTrim)
	if u.od != nil {
		u.od.dev, u.od.tidy = u.dev, u.tidy
		go u.od.trim(u.stopTrim)
	}

	f, err := ipc.UAPIOpen(name)
	if err != nil {
		return nil, fmt.Errorf("open UAPI socket: %w", err)
	}
	u.uapi, err = ipc.UAPIListen(name, f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("listen on UAPI socket: %w", err)
	}
	u.uapiDone = make(chan struct{})
	u.accepted.Add(1)
	go func() {
		defer u.accepted.Done()
		defer close(u.uapiDone)
		for {
			c, err := u.uapi.Accept()
			if err != nil {
				return
			}
			go func() {
				if u.od != nil {
					u.od.serve(c)
				} else {
					u.dev.IpcHandle(c)
				}
				u.tidy.poke()
			}()
		}
	}()
	return u, nil
}

// close stops the device: the TUN (and so the interface) and the UAPI
// socket (which is unlinked) go away.
func (u *userspace) close() error {
	var errs []error
	if u.uapi != nil {
		select {
		case <-u.uapiDone: // stopped already (socket removed): Close only says so
			u.uapi.Close()
		default:
			errs = append(errs, u.uapi.Close())
		}
		u.accepted.Wait()
	}
	if u.stopTrim != nil {
		close(u.stopTrim)
	}
	if u.dev != nil {
		// Down first: it closes the UDP sockets while the TUN still exists.
		// wireguard-go's Close removes the TUN before it closes the sockets,
		// and a new device process, started as soon as the TUN is gone
		// (Ensure waits for exactly that), would then find its listen port
		// still taken (EADDRINUSE).
		_ = u.dev.Down()
		u.dev.Close()
		<-u.dev.Wait()
	}
	if u.netns != nil {
		errs = append(errs, u.netns.close())
	}
	return errors.Join(errs...)
}

// tidier returns the memory of configuration work to the operating system
// soon after it: reading or writing 1000 peers over UAPI leaves about
// 14 MiB of garbage (lines, answers) that the Go runtime would otherwise
// keep for minutes, and the device process's memory is what an operator
// sees of it (kubectl top, the OOM killer).
type tidier struct{ c chan struct{} }

// tidyAfter is how long the tidier waits after a poke, so that a burst of
// operations (an Apply: get, set, get) is tidied once. It does not wait
// for the burst to end: after peers are added the agent's session watch
// reads the device every 250 ms for 10 s.
const tidyAfter = time.Second

func newTidier() *tidier { return &tidier{c: make(chan struct{}, 1)} }

func (t *tidier) poke() {
	select {
	case t.c <- struct{}{}:
	default:
	}
}

func (t *tidier) run(stop <-chan struct{}) {
	var due <-chan time.Time // nil while nothing is to tidy
	for {
		select {
		case <-stop:
			return
		case <-t.c:
			if due == nil {
				due = time.After(tidyAfter)
			}
		case <-due:
			due = nil
			debug.FreeOSMemory()
		}
	}
}

// nsBind opens its UDP sockets inside netns; a socket stays in the
// namespace it was created in, so only Open needs it.
type nsBind struct {
	conn.Bind
	netns *netnsHandle
}

func (b *nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	nerr := b.netns.do(func() error {
		fns, actual, err = b.Bind.Open(port)
		return nil
	})
	if nerr != nil {
		return nil, 0, nerr
	}
	return fns, actual, err
}

// nsTUN reads the MTU (an ioctl by interface name) inside netns.
type nsTUN struct {
	tun.Device
	netns *netnsHandle
}

func (t *nsTUN) MTU() (mtu int, err error) {
	nerr := t.netns.do(func() error {
		mtu, err = t.Device.MTU()
		return nil
	})
	if nerr != nil {
		return 0, nerr
	}
	return mtu, err
}

// netnsHandle is the device's namespace, shared by the bind and the TUN
// wrappers, whose wireguard-go goroutines may still run while the device
// closes: closing waits for a running do, and a later do fails cleanly.
type netnsHandle struct {
	mu     sync.RWMutex
	netns  ns.NetNS
	closed bool
}

var errDeviceClosed = errors.New("userspace device closed")

func (h *netnsHandle) do(f func() error) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed {
		return errDeviceClosed
	}
	// Entering a namespace (setns) needs CAP_SYS_ADMIN, which the
	// DaemonSet's agent does not have (NET_ADMIN and NET_RAW only): every
	// UDP socket open failed with "operation not permitted" and the device
	// never sent a handshake. A thread already in the namespace needs no
	// switch, and in the device process every thread is (the process
	// started in it), so the switch is left to the threads that need it:
	// those of a process that runs the device in a namespace of one thread
	// (the tests).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if h.inNamespace() {
		return f()
	}
	return h.netns.Do(func(ns.NetNS) error { return f() })
}

// inNamespace reports whether the calling (locked) thread is in the
// device's namespace.
func (h *netnsHandle) inNamespace() bool {
	var want, cur unix.Stat_t
	if unix.Fstat(int(h.netns.Fd()), &want) != nil || unix.Stat("/proc/thread-self/ns/net", &cur) != nil {
		return false
	}
	return want.Dev == cur.Dev && want.Ino == cur.Ino
}

func (h *netnsHandle) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	return h.netns.Close()
}

// setPersist sets TUNSETPERSIST on the TUN's descriptor (through
// SyscallConn: File.Fd would switch it to blocking mode).
func setPersist(t tun.Device) error {
	rc, err := t.File().SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlSetInt(int(fd), unix.TUNSETPERSIST, 1) }); err != nil {
		return err
	}
	return ierr
}
