package wireguard

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgmesh/wgmesh/internal/wireguard/uapi"
)

// On-demand peers (issue 16), for the userspace device only.
//
// wireguard-go spends about 50 KiB on each peer it has (two 1024-slot
// queues, handshake state, timers, two goroutines), fixed by its constants:
// 52 MiB at 1000 peers, most of them idle in a large mesh. With on-demand
// peers the device process keeps every peer's configuration itself and
// programs into wireguard-go only the peers that carry traffic, as
// Tailscale's engine does:
//
//   - a packet from a pod toward a peer's subnet (read from the TUN) adds
//     that peer before wireguard-go looks the packet up, so it is sent;
//   - a packet from a peer's endpoint address (read from the UDP socket)
//     adds it before wireguard-go handles the packet, so the peer's
//     handshake is answered; a data packet (the peer holds a session this
//     process does not know, e.g. after it restarted) also starts a
//     handshake at once, rather than after the peer's 15 s timeout;
//   - a peer through which no byte moved for the idle time is removed from
//     wireguard-go again; its configuration, last handshake and counters
//     stay, and `wg show` and wgctrl see every peer as configured.
//
// A peer with a persistent keepalive, or without an endpoint (it could not
// be recognised by its packets), is always programmed.
//
// The UAPI socket is served here instead of by wireguard-go's IpcHandle:
// set operations update the kept configuration and are forwarded for the
// programmed peers; get answers wireguard-go's own answer followed by the
// peers that are not programmed.

// activateWait bounds how long a packet path waits for its peer to be
// programmed. It cannot wait for ever: wireguard-go holds locks that a
// programming needs while it waits for these paths to return (closing the
// device, rebinding its sockets). When it gives up the packet goes on and
// is dropped as today's unknown-peer packets are; the peer is programmed
// anyway, and WireGuard's retries carry the next one.
const activateWait = 200 * time.Millisecond

// onDemand keeps the peers' configuration and programs wireguard-go.
type onDemand struct {
	dev  *device.Device
	idle time.Duration
	log  *slog.Logger
	tidy *tidier // poked after programming and trimming

	// mu orders every UAPI operation on dev and guards the fields below.
	mu         sync.Mutex
	peers      map[string]*uapi.Peer // every configured peer, by hex key
	programmed map[string]*activity  // those in wireguard-go
	owner      map[netip.Prefix]string

	// parked is what the packet paths read without a lock: the peers not
	// programmed, by subnet and by endpoint address.
	parked atomic.Pointer[parkedPeers]

	pendingMu sync.Mutex
	pending   map[string]chan struct{} // programmings in flight

	// Activations counts peers programmed on a packet; Trims, removed idle.
	Activations, Trims atomic.Int64
}

// activity is what the idle trim last saw of a programmed peer.
type activity struct {
	bytes uint64 // rx + tx
	since time.Time
}

// parkedPeers is an immutable lookup of the peers not programmed.
type parkedPeers struct {
	lens      []int // prefix lengths present, longest first
	bySubnet  map[netip.Prefix]string
	byAddress map[netip.Addr][]string
}

func newOnDemand(idle time.Duration, log *slog.Logger) *onDemand {
	od := &onDemand{idle: idle, log: log, peers: map[string]*uapi.Peer{}, programmed: map[string]*activity{},
		owner: map[netip.Prefix]string{}, pending: map[string]chan struct{}{}}
	od.parked.Store(&parkedPeers{})
	return od
}

// serve handles one UAPI connection, as wireguard-go's IpcHandle does.
func (od *onDemand) serve(c net.Conn) {
	defer c.Close()
	rw := bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	for {
		op, err := rw.ReadString('\n')
		if err != nil {
			return
		}
		switch op {
		case "set=1\n":
			var s uapi.Set
			if s, err = uapi.ReadSet(rw.Reader); err == nil {
				err = od.set(s)
			}
		case "get=1\n":
			var b byte
			if b, err = rw.ReadByte(); err != nil {
				return
			}
			if b != '\n' {
				err = &uapi.Error{Invalid: true, Msg: fmt.Sprintf("trailing character in UAPI get: %q", b)}
				break
			}
			err = od.get(rw.Writer)
		default:
			od.log.Warn("invalid UAPI operation", "op", op)
			return
		}
		fmt.Fprintf(rw, "errno=%d\n\n", errno(err))
		if err != nil {
			od.log.Warn("UAPI operation failed", "error", err)
		}
		rw.Flush()
	}
}

// errno is the UAPI status of err: 0, or the code wireguard-go would
// answer (a negative errno).
func errno(err error) int64 {
	var ue *uapi.Error
	var de *device.IPCError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue) && ue.Invalid:
		return ipc.IpcErrorInvalid
	case errors.As(err, &ue):
		return ipc.IpcErrorProtocol
	case errors.As(err, &de):
		return de.ErrorCode()
	}
	return ipc.IpcErrorIO
}

// set keeps what s configures and forwards to wireguard-go the device's
// lines and those of its programmed peers.
func (od *onDemand) set(s uapi.Set) error {
	od.mu.Lock()
	defer od.mu.Unlock()
	var fwd strings.Builder
	for _, l := range s.Device {
		fwd.WriteString(l + "\n")
	}
	if s.ReplacePeers { // wireguard-go removes all its peers too
		clear(od.peers)
		clear(od.programmed)
		clear(od.owner)
	}
	for _, op := range s.Peers {
		k := op.PublicKey
		p, known := od.peers[k]
		_, programmed := od.programmed[k]
		switch {
		case op.Remove:
			if known {
				od.forget(p)
			}
		case op.UpdateOnly && !known:
			continue
		default:
			if !known {
				p = &uapi.Peer{}
				od.peers[k] = p
			}
			had := slices.Clone(p.AllowedIPs)
			p.Apply(op)
			od.claim(p, had)
			if !programmed && (p.Keepalive > 0 || p.Endpoint == "") {
				fwd.WriteString(p.SetLines())
				od.programmed[k] = &activity{since: time.Now()}
				continue
			}
		}
		if programmed {
			fwd.WriteString(strings.Join(op.Lines, "\n") + "\n")
		}
	}
	od.publish()
	if fwd.Len() == 0 {
		return nil
	}
	return od.dev.IpcSetOperation(strings.NewReader(fwd.String()))
}

// forget drops p and its subnets.
func (od *onDemand) forget(p *uapi.Peer) {
	for _, a := range p.AllowedIPs {
		if od.owner[a] == p.PublicKey {
			delete(od.owner, a)
		}
	}
	delete(od.peers, p.PublicKey)
	delete(od.programmed, p.PublicKey)
}

// claim records p as the owner of its subnets, of which it had those in
// had before this change. As in WireGuard, a subnet given to one peer is
// taken from any other.
func (od *onDemand) claim(p *uapi.Peer, had []netip.Prefix) {
	for _, a := range p.AllowedIPs {
		if prev, ok := od.owner[a]; ok && prev != p.PublicKey {
			if q := od.peers[prev]; q != nil {
				q.AllowedIPs = slices.DeleteFunc(q.AllowedIPs, func(b netip.Prefix) bool { return b == a })
			}
		}
		od.owner[a] = p.PublicKey
	}
	for _, a := range had { // subnets p no longer has
		if od.owner[a] == p.PublicKey && !slices.Contains(p.AllowedIPs, a) {
			delete(od.owner, a)
		}
	}
}

// publish rebuilds the packet paths' lookup of the peers not programmed.
func (od *onDemand) publish() {
	pp := &parkedPeers{bySubnet: map[netip.Prefix]string{}, byAddress: map[netip.Addr][]string{}}
	seen := map[int]bool{}
	for k, p := range od.peers {
		if _, ok := od.programmed[k]; ok {
			continue
		}
		for _, a := range p.AllowedIPs {
			pp.bySubnet[a] = k
			if !seen[a.Bits()] {
				seen[a.Bits()] = true
				pp.lens = append(pp.lens, a.Bits())
			}
		}
		if ap, err := netip.ParseAddrPort(p.Endpoint); err == nil {
			addr := ap.Addr().Unmap()
			pp.byAddress[addr] = append(pp.byAddress[addr], k)
		}
	}
	slices.Sort(pp.lens)
	slices.Reverse(pp.lens) // longest first, as a route lookup
	od.parked.Store(pp)
}

// get writes wireguard-go's answer, then the peers it does not have.
func (od *onDemand) get(w io.Writer) error {
	od.mu.Lock()
	defer od.mu.Unlock()
	if err := od.dev.IpcGetOperation(w); err != nil {
		return err
	}
	for k, p := range od.peers {
		if _, ok := od.programmed[k]; !ok {
			if _, err := io.WriteString(w, p.GetLines()); err != nil {
				return err
			}
		}
	}
	return nil
}

// activate programs the peer k (not programmed when the packet paths
// looked), waiting at most activateWait; with handshake it also starts a
// handshake at once.
func (od *onDemand) activate(k string, handshake bool) {
	od.pendingMu.Lock()
	done, inFlight := od.pending[k]
	if !inFlight {
		done = make(chan struct{})
		od.pending[k] = done
		go func() {
			od.program(k, handshake)
			od.pendingMu.Lock()
			delete(od.pending, k)
			od.pendingMu.Unlock()
			close(done)
		}()
	}
	od.pendingMu.Unlock()
	select {
	case <-done:
	case <-time.After(activateWait):
	}
}

func (od *onDemand) program(k string, handshake bool) {
	od.mu.Lock()
	defer od.mu.Unlock()
	p, known := od.peers[k]
	if _, ok := od.programmed[k]; ok || !known {
		return
	}
	if err := od.dev.IpcSetOperation(strings.NewReader(p.SetLines())); err != nil {
		od.log.Warn("program peer on demand", "publicKey", k, "error", err)
		return
	}
	od.programmed[k] = &activity{since: time.Now()}
	od.Activations.Add(1)
	od.log.Debug("peer programmed on demand", "publicKey", k, "handshake", handshake, "programmed", len(od.programmed))
	od.publish()
	od.tidy.poke()
	if handshake {
		var pk device.NoisePublicKey
		if b, err := hex.DecodeString(k); err == nil && len(b) == len(pk) {
			copy(pk[:], b)
			if peer := od.dev.LookupPeer(pk); peer != nil {
				_ = peer.SendHandshakeInitiation(false)
			}
		}
	}
}

// packetToPeer programs the peer a packet from the TUN is for, if it is
// parked.
func (od *onDemand) packetToPeer(pkt []byte) {
	pp := od.parked.Load()
	if len(pp.lens) == 0 || len(pkt) < 1 {
		return
	}
	var dst netip.Addr
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return
		}
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
	case 6:
		if len(pkt) < 40 {
			return
		}
		dst = netip.AddrFrom16([16]byte(pkt[24:40]))
	default:
		return
	}
	for _, l := range pp.lens {
		if l > dst.BitLen() {
			continue
		}
		if k, ok := pp.bySubnet[netip.PrefixFrom(dst, l).Masked()]; ok {
			od.activate(k, false)
			return
		}
	}
}

// WireGuard's message types (the first byte of a UDP payload).
const (
	msgInitiation = 1
	msgTransport  = 4
)

// packetFromPeer programs the parked peers at the address a UDP packet
// came from: for its handshake initiation, or with a handshake of our own
// for data of a session this device does not have.
func (od *onDemand) packetFromPeer(pkt []byte, from netip.Addr) {
	pp := od.parked.Load()
	if len(pp.byAddress) == 0 || len(pkt) < 1 || (pkt[0] != msgInitiation && pkt[0] != msgTransport) {
		return
	}
	for _, k := range pp.byAddress[from.Unmap()] {
		od.activate(k, pkt[0] == msgTransport)
	}
}

// trim removes from wireguard-go the peers through which nothing moved for
// od.idle, keeping their figures. It runs every od.idle/4 until stop.
func (od *onDemand) trim(stop <-chan struct{}) {
	t := time.NewTicker(max(od.idle/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			if err := od.trimIdle(now); err != nil {
				od.log.Warn("trim idle peers", "error", err)
			}
		}
	}
}

func (od *onDemand) trimIdle(now time.Time) error {
	od.mu.Lock()
	defer od.mu.Unlock()
	var get bytes.Buffer
	if err := od.dev.IpcGetOperation(&get); err != nil {
		return err
	}
	stats, err := uapi.ReadStats(get.String())
	if err != nil {
		return err
	}
	var rm strings.Builder
	var trimmed int
	for k, a := range od.programmed {
		p, st := od.peers[k], stats[k]
		if moved := st.RxBytes + st.TxBytes; moved != a.bytes {
			a.bytes, a.since = moved, now
			continue
		}
		if p.Keepalive > 0 || p.Endpoint == "" || now.Sub(a.since) < od.idle {
			continue
		}
		fmt.Fprintf(&rm, "public_key=%s\nremove=true\n", k)
		p.Stats = st
		delete(od.programmed, k)
		trimmed++
	}
	if trimmed == 0 {
		return nil
	}
	od.publish()
	od.tidy.poke()
	od.Trims.Add(int64(trimmed))
	od.log.Info("idle peers removed from wireguard-go", "peers", trimmed, "programmed", len(od.programmed), "configured", len(od.peers))
	return od.dev.IpcSetOperation(strings.NewReader(rm.String()))
}

// odTUN hands each packet read from the TUN to packetToPeer first.
type odTUN struct {
	tun.Device
	od *onDemand
}

func (t *odTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	for i := 0; i < n; i++ {
		t.od.packetToPeer(bufs[i][offset : offset+sizes[i]])
	}
	return n, err
}

// odBind hands each UDP packet received to packetFromPeer first.
type odBind struct {
	conn.Bind
	od *onDemand
}

func (b *odBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	for i, fn := range fns {
		fns[i] = func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			n, err := fn(packets, sizes, eps)
			for j := 0; j < n; j++ {
				if eps[j] != nil {
					b.od.packetFromPeer(packets[j][:sizes[j]], eps[j].DstIP())
				}
			}
			return n, err
		}
	}
	return fns, actual, err
}
