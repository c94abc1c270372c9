package mesh

import (
	"bytes"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// SessionWatch notices the two ways a pair whose ends initiated a handshake
// at the same instant is left without a working session (issue 19), so that
// one end starts the session over: removing the peer and adding it again
// clears WireGuard's hold-off, and a handshake right away gives the pair a
// session within a round trip. WireGuard itself (kernel and wireguard-go
// alike) would wait 5 to 20 s.
//
// Crossed: each end answered the other's initiation, which made it forget
// its own, and then dropped the answer to its own. Neither holds a
// session, and WireGuard retries only after Rekey-Timeout, 5 s (15 or 20 s
// were measured when the retry falls within 5 s of the answer it sent).
// This end sees: something received from the peer (its initiation;
// WireGuard counts every handshake message it accepts) and still no
// session, CrossedAfter later. Only the end with the lower public key
// reports it, so that the two never start over at once; the other answers,
// as WireGuard holds it off from initiating for 5 s after its own answer.
//
// One way: wireguard-go handles handshake messages on one goroutine per
// CPU; handling the peer's initiation and the answer to its own at the same
// moment, an end can complete a session whose receiving index it already
// gave away. It sends, the peer receives, but the peer's packets to it are
// dropped uncounted, until it starts over itself after 15 s without an
// answer (the gate's lost node pair). This end sees: a session, data sent
// since it began, nothing received since, OneWayAfter later. It reports
// that whatever the keys (the peer holds a session and does not initiate),
// the second time in a row only OneWayAfter later, the third twice that
// and so on, since a flow that only sends (a UDP stream nobody answers)
// looks the same for its first seconds.
//
// SessionWatch is pure: the caller reads the device, passes its peers to
// StartOver, and starts over with the peers it returns.
type SessionWatch struct {
	self   wgtypes.Key
	seen   map[wgtypes.Key]sessionSeen
	oneWay map[wgtypes.Key]oneWayRun // one-way start-overs in a row
	busy   bool                      // see Busy
}

// oneWayRun is the last one-way start-over of a peer and how many came in
// a row (with no session that carried data both ways between them).
type oneWayRun struct {
	last time.Time
	n    int
}

// sessionSeen is what SessionWatch remembers of one peer.
type sessionSeen struct {
	handshake time.Time // the last handshake time seen
	// fresh: that handshake began a session while watched, after none
	// (crossings happen only then, never at a rekey).
	fresh   bool
	at      time.Time // when that handshake was first seen
	rx, tx  int64     // bytes received and sent then
	rxLast  int64     // received by the last look with a session
	crossed time.Time // first seen received-but-no-session; zero if not
	last    [2]int64  // received and sent at the last look
}

// CrossedAfter is how long a pair may sit without a session after this end
// received a handshake from the other before SessionWatch calls it crossed.
// A handshake completes within a round trip and the time a node takes to
// handle it (up to about a second was seen on a loaded 2-core machine);
// calling a slow pair crossed costs one handshake more, never a packet the
// pair would otherwise have delivered.
const CrossedAfter = 500 * time.Millisecond

// OneWayAfter is how long a new session may carry data one way only before
// SessionWatch calls it one-way. Sent "data" is more than keepalives: an
// initiator sends one when its session begins, which nothing answers. A
// flow that only sends looks one-way until the peer's passive keepalive,
// 10 s after the data it received: with the back-off (1, 2, 4 s ...) it
// costs three handshakes more, never data (packets wait in WireGuard's
// queue while a handshake runs).
const (
	OneWayAfter = time.Second
	keepalives  = 2 * 32 // two keepalives: WireGuard's header and tag
)

// NewSessionWatch watches the peers of the device whose public key is self.
func NewSessionWatch(self wgtypes.Key) *SessionWatch {
	return &SessionWatch{self: self, seen: map[wgtypes.Key]sessionSeen{}, oneWay: map[wgtypes.Key]oneWayRun{}}
}

// Stuck is a peer to start over, and why: Crossed or OneWay.
type Stuck struct {
	PublicKey wgtypes.Key
	Why       string
}

// Why a pair is stuck.
const (
	Crossed = "handshakes crossed"
	OneWay  = "new session one way"
)

// Added tells w that peers were just added to the device: they have no
// session and their counters start from zero, so the first session w sees
// on them is new, even if it began before w looked, and a peer's earlier
// one-way start-overs no longer count.
func (w *SessionWatch) Added(peers ...wgtypes.Key) {
	for _, k := range peers {
		w.seen[k] = sessionSeen{}
		delete(w.oneWay, k)
	}
}

// Busy says whether the last StartOver saw a peer whose next looks decide
// something: a crossing being timed, a new session not yet heard from, a
// peer added or started over in the last Watchful without a session yet.
// Reading a device costs about 14 ms at 1000 peers (userspace), so the
// caller looks often only while w is busy.
func (w *SessionWatch) Busy() bool { return w.busy }

// Watchful is how long after a peer is added, or a session begins, Busy
// stays true for it (a one-way session is told after OneWayAfter; a flow
// that only sends is answered by the peer's keepalive after 10 s).
const Watchful = 10 * time.Second

// StartOver takes the device's peers as read at now and returns those
// whose pair is crossed or one-way (see SessionWatch). The caller must add
// each peer returned anew (w takes it as Added).
func (w *SessionWatch) StartOver(now time.Time, peers []wgtypes.Peer) []Stuck {
	var over []Stuck
	w.busy = false
	present := make(map[wgtypes.Key]bool, len(peers))
	for i := range peers {
		p := &peers[i]
		present[p.PublicKey] = true
		if why := w.look(now, p); why != "" {
			over = append(over, Stuck{p.PublicKey, why})
			w.seen[p.PublicKey] = sessionSeen{} // added anew by the caller
			w.busy = true
			continue
		}
		s := w.seen[p.PublicKey]
		young := now.Sub(s.at) < Watchful
		switch {
		case !s.crossed.IsZero(),
			p.LastHandshakeTime.IsZero() && young,      // added, no session yet
			s.fresh && p.ReceiveBytes == s.rx && young: // new, not heard from
			w.busy = true
		}
	}
	for k := range w.seen {
		if !present[k] {
			delete(w.seen, k)
		}
	}
	for k := range w.oneWay {
		if !present[k] {
			delete(w.oneWay, k)
		}
	}
	return over
}

// look updates what w knows of p and says why to start it over, if so.
func (w *SessionWatch) look(now time.Time, p *wgtypes.Peer) string {
	k, hs, rx, tx := p.PublicKey, p.LastHandshakeTime, p.ReceiveBytes, p.TransmitBytes
	live := func(h time.Time) bool { return !h.IsZero() && now.Sub(h) < SessionLifetime }
	s, known := w.seen[k]
	switch {
	case !known || rx < s.last[0] || tx < s.last[1] || hs.IsZero() && !s.handshake.IsZero():
		// New to us (a session it has is not new), or removed and added
		// again between two looks (counters from zero, no session before).
		s = sessionSeen{handshake: hs, fresh: known, at: now, rx: rx, tx: tx, rxLast: rx}
		if hs.IsZero() {
			s.rxLast = 0 // no session yet: what it received came since
		}
	case !hs.Equal(s.handshake):
		s = sessionSeen{handshake: hs, fresh: !live(s.handshake), at: now, rx: rx, tx: tx, rxLast: rx}
	}
	s.last = [2]int64{rx, tx}
	if s.at.IsZero() {
		s.at = now // Added: first looked at now
	}
	defer func() { w.seen[k] = s }()
	if live(hs) {
		s.rxLast, s.crossed = rx, time.Time{}
		run := w.oneWay[k]
		if rx > s.rx && tx > s.tx+keepalives {
			delete(w.oneWay, k) // both ways: the run is over
		}
		oneWay := s.fresh && rx == s.rx && tx > s.tx+keepalives &&
			now.Sub(s.at) >= OneWayAfter && now.Sub(run.last) >= OneWayAfter<<min(run.n, 5)
		if !oneWay {
			return ""
		}
		w.oneWay[k] = oneWayRun{last: now, n: run.n + 1}
		return OneWay
	}
	if bytes.Compare(w.self[:], k[:]) >= 0 {
		return "" // crossed pairs start over from the other end
	}
	switch {
	case rx > s.rxLast && s.crossed.IsZero():
		s.crossed = now
	case !s.crossed.IsZero() && now.Sub(s.crossed) >= CrossedAfter:
		return Crossed
	}
	return ""
}
