// Package uapi reads and writes the parts of WireGuard's cross-platform
// configuration protocol (https://www.wireguard.com/xplatform/) that the
// on-demand userspace device keeps for itself: a set operation's body,
// split into device lines and per-peer operations, and a peer's
// configuration, written back as a set (to program it into wireguard-go)
// or as a get section (to report it to `wg` and wgctrl while it is not
// programmed).
//
// Parsing validates every value the way wireguard-go does (keys are 64 hex
// digits, endpoints host:port, allowed IPs prefixes, the keepalive 0 to
// 65535), so that a request the device would refuse is refused here, before
// anything is kept.
package uapi

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Set is one set operation's body.
type Set struct {
	// Device holds the lines before the first public_key, as sent
	// (private_key, listen_port, fwmark, replace_peers).
	Device []string
	// ReplacePeers is replace_peers=true among them.
	ReplacePeers bool
	Peers        []PeerOp
}

// PeerOp is one peer's section of a set operation.
type PeerOp struct {
	PublicKey string // 64 lower-case hex digits
	// Lines are the section's lines as sent, public_key first, to forward
	// unchanged to a device that has the peer.
	Lines             []string
	Remove            bool
	UpdateOnly        bool
	ReplaceAllowedIPs bool
	PresharedKey      *string // hex
	Endpoint          *string
	Keepalive         *int
	// AllowedIPs are the allowed_ip lines in their order, those before a
	// replace_allowed_ips left out: wireguard-go applies them one by one.
	AllowedIPs []AllowedIPChange
}

// AllowedIPChange is one allowed_ip line: a prefix given to the peer, or
// taken from it (allowed_ip=-PREFIX).
type AllowedIPChange struct {
	Prefix netip.Prefix
	Remove bool
}

// Error is a set operation refused, with the errno wireguard-go answers.
type Error struct {
	Invalid bool // EINVAL when true, else EPROTO (a line that is not key=value)
	Msg     string
}

func (e *Error) Error() string { return e.Msg }

func invalid(format string, args ...any) error {
	return &Error{Invalid: true, Msg: fmt.Sprintf(format, args...)}
}

// ReadSet reads a set operation's body up to its blank line.
func ReadSet(r *bufio.Reader) (Set, error) {
	var s Set
	var op *PeerOp
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return s, fmt.Errorf("read set operation: %w", err)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			return s, nil
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return s, &Error{Msg: fmt.Sprintf("failed to parse line %q", line)}
		}
		if key == "public_key" {
			k, err := parseKey(value)
			if err != nil {
				return s, invalid("public_key: %v", err)
			}
			s.Peers = append(s.Peers, PeerOp{PublicKey: k, Lines: []string{"public_key=" + k}})
			op = &s.Peers[len(s.Peers)-1]
			continue
		}
		if op == nil {
			if err := deviceLine(&s, key, value); err != nil {
				return s, err
			}
			s.Device = append(s.Device, line)
			continue
		}
		if err := op.line(key, value); err != nil {
			return s, err
		}
		op.Lines = append(op.Lines, line)
	}
}

func deviceLine(s *Set, key, value string) error {
	switch key {
	case "private_key":
		_, err := parseKey(value)
		return errIf(err, "private_key")
	case "listen_port", "fwmark":
		_, err := strconv.ParseUint(value, 10, 32)
		return errIf(err, key)
	case "replace_peers":
		if value != "true" {
			return invalid("replace_peers: want true, got %q", value)
		}
		s.ReplacePeers = true
		return nil
	}
	return invalid("unknown device key %q", key)
}

func (op *PeerOp) line(key, value string) error {
	switch key {
	case "remove", "update_only", "replace_allowed_ips":
		if value != "true" {
			return invalid("%s: want true, got %q", key, value)
		}
		switch key {
		case "remove":
			op.Remove = true
		case "update_only":
			op.UpdateOnly = true
		default:
			op.ReplaceAllowedIPs = true
			op.AllowedIPs = nil // the lines before it are undone
		}
	case "preshared_key":
		k, err := parseKey(value)
		if err != nil {
			return invalid("preshared_key: %v", err)
		}
		op.PresharedKey = &k
	case "endpoint":
		ap, err := netip.ParseAddrPort(value)
		if err != nil {
			return invalid("endpoint: %v", err)
		}
		e := ap.String()
		op.Endpoint = &e
	case "persistent_keepalive_interval":
		n, err := strconv.ParseUint(value, 10, 16)
		if err != nil {
			return invalid("persistent_keepalive_interval: %v", err)
		}
		ka := int(n)
		op.Keepalive = &ka
	case "allowed_ip":
		remove := strings.HasPrefix(value, "-")
		p, err := netip.ParsePrefix(strings.TrimPrefix(value, "-"))
		if err != nil {
			return invalid("allowed_ip: %v", err)
		}
		op.AllowedIPs = append(op.AllowedIPs, AllowedIPChange{Prefix: p.Masked(), Remove: remove})
	case "protocol_version":
		if value != "1" {
			return invalid("protocol_version: want 1, got %q", value)
		}
	default:
		return invalid("unknown peer key %q", key)
	}
	return nil
}

func errIf(err error, key string) error {
	if err != nil {
		return invalid("%s: %v", key, err)
	}
	return nil
}

func parseKey(s string) (string, error) {
	if len(s) != 64 {
		return "", errors.New("want 64 hex digits")
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// Peer is a peer's configuration, and the figures of its last session
// while it was programmed.
type Peer struct {
	PublicKey    string // hex
	PresharedKey string // hex; "" for none
	Endpoint     string // "" for none
	Keepalive    int
	AllowedIPs   []netip.Prefix
	Stats        Stats
}

// Stats are what a get reports of a peer's traffic.
type Stats struct {
	HandshakeSec, HandshakeNsec int64
	RxBytes, TxBytes            uint64
}

// Apply changes p as op says (op is not a removal).
func (p *Peer) Apply(op PeerOp) {
	p.PublicKey = op.PublicKey
	if op.PresharedKey != nil {
		p.PresharedKey = *op.PresharedKey
	}
	if op.Endpoint != nil {
		p.Endpoint = *op.Endpoint
	}
	if op.Keepalive != nil {
		p.Keepalive = *op.Keepalive
	}
	if op.ReplaceAllowedIPs {
		p.AllowedIPs = nil
	}
	for _, c := range op.AllowedIPs {
		i := slices.Index(p.AllowedIPs, c.Prefix)
		switch {
		case c.Remove && i >= 0:
			p.AllowedIPs = slices.Delete(p.AllowedIPs, i, i+1)
		case !c.Remove && i < 0:
			p.AllowedIPs = append(p.AllowedIPs, c.Prefix)
		}
	}
}

// SetLines is the set section that programs p into a device that does not
// have it.
func (p *Peer) SetLines() string {
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\n", p.PublicKey)
	if p.PresharedKey != "" {
		fmt.Fprintf(&b, "preshared_key=%s\n", p.PresharedKey)
	}
	if p.Endpoint != "" {
		fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
	}
	fmt.Fprintf(&b, "persistent_keepalive_interval=%d\nreplace_allowed_ips=true\n", p.Keepalive)
	for _, a := range p.AllowedIPs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", a)
	}
	return b.String()
}

// GetLines is p's section of a get answer, as wireguard-go writes it.
func (p *Peer) GetLines() string {
	var b strings.Builder
	psk := p.PresharedKey
	if psk == "" {
		psk = strings.Repeat("0", 64)
	}
	fmt.Fprintf(&b, "public_key=%s\npreshared_key=%s\nprotocol_version=1\n", p.PublicKey, psk)
	if p.Endpoint != "" {
		fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
	}
	s := p.Stats
	fmt.Fprintf(&b, "last_handshake_time_sec=%d\nlast_handshake_time_nsec=%d\ntx_bytes=%d\nrx_bytes=%d\npersistent_keepalive_interval=%d\n",
		s.HandshakeSec, s.HandshakeNsec, s.TxBytes, s.RxBytes, p.Keepalive)
	for _, a := range p.AllowedIPs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", a)
	}
	return b.String()
}

// ReadStats reads the peers' figures out of a get answer (wireguard-go's
// IpcGetOperation output), by public key.
func ReadStats(get string) (map[string]Stats, error) {
	out := map[string]Stats{}
	var key string
	var st Stats
	flush := func() {
		if key != "" {
			out[key] = st
		}
	}
	for _, line := range strings.Split(get, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		var err error
		switch k {
		case "public_key":
			flush()
			key, st = v, Stats{}
		case "last_handshake_time_sec":
			st.HandshakeSec, err = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			st.HandshakeNsec, err = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			st.RxBytes, err = strconv.ParseUint(v, 10, 64)
		case "tx_bytes":
			st.TxBytes, err = strconv.ParseUint(v, 10, 64)
		}
		if err != nil {
			return nil, fmt.Errorf("get answer: %s: %w", k, err)
		}
	}
	flush()
	return out, nil
}
