package mesh

import (
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestSessionWatch(t *testing.T) {
	var lo, mid, hi wgtypes.Key
	lo[0], mid[0], hi[0] = 1, 2, 3
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	peer := func(k wgtypes.Key, handshake time.Time, rx int64) wgtypes.Peer {
		return wgtypes.Peer{PublicKey: k, LastHandshakeTime: handshake, ReceiveBytes: rx}
	}
	sent := func(p wgtypes.Peer, tx int64) wgtypes.Peer { p.TransmitBytes = tx; return p }
	type look struct {
		now   time.Time
		peers []wgtypes.Peer
		want  []wgtypes.Key
	}
	const init = 148 // a handshake initiation
	for _, tc := range []struct {
		name  string
		added bool // the peer (hi) was Added before the first look
		looks []look
	}{{
		name: "crossed: received an initiation, no session for CrossedAfter",
		looks: []look{
			{at(0), []wgtypes.Peer{peer(hi, time.Time{}, init)}, nil},
			{at(CrossedAfter / 2), []wgtypes.Peer{peer(hi, time.Time{}, init)}, nil},
			{at(CrossedAfter), []wgtypes.Peer{peer(hi, time.Time{}, init)}, []wgtypes.Key{hi}},
			// Forgotten once returned: the peer is added anew.
			{at(CrossedAfter + time.Millisecond), []wgtypes.Peer{peer(hi, time.Time{}, 0)}, nil},
		},
	}, {
		name: "only the lower key starts over",
		looks: []look{
			{at(0), []wgtypes.Peer{peer(lo, time.Time{}, init)}, nil},
			{at(time.Minute), []wgtypes.Peer{peer(lo, time.Time{}, init)}, nil},
		},
	}, {
		name: "nothing received: the other end has not answered, WireGuard retries",
		looks: []look{
			{at(0), []wgtypes.Peer{peer(hi, time.Time{}, 0)}, nil},
			{at(time.Minute), []wgtypes.Peer{peer(hi, time.Time{}, 0)}, nil},
		},
	}, {
		name: "a session came in time",
		looks: []look{
			{at(0), []wgtypes.Peer{peer(hi, time.Time{}, init)}, nil},
			{at(CrossedAfter), []wgtypes.Peer{peer(hi, at(CrossedAfter/2), init+92)}, nil},
			{at(time.Minute), []wgtypes.Peer{peer(hi, at(CrossedAfter/2), init+92+320)}, nil},
		},
	}, {
		name: "a session that ended, then a crossing",
		looks: []look{
			{at(0), []wgtypes.Peer{peer(hi, at(-time.Minute), 5000)}, nil},
			{at(SessionLifetime), []wgtypes.Peer{peer(hi, at(-time.Minute), 5000)}, nil},
			{at(SessionLifetime + time.Second), []wgtypes.Peer{peer(hi, at(-time.Minute), 5000+init)}, nil},
			{at(SessionLifetime + 2*time.Second), []wgtypes.Peer{peer(hi, at(-time.Minute), 5000+init)}, []wgtypes.Key{hi}},
		},
	}, {
		name: "first seen with a session already ended: counts from there",
		looks: []look{
			{at(0), []wgtypes.Peer{peer(hi, at(-time.Hour), 5000)}, nil},
			{at(time.Minute), []wgtypes.Peer{peer(hi, at(-time.Hour), 5000)}, nil},
		},
	}, {
		name: "a peer removed and added again starts from nothing",
		looks: []look{
			{at(0), []wgtypes.Peer{peer(hi, time.Time{}, init)}, nil},
			{at(CrossedAfter / 2), nil, nil},
			{at(CrossedAfter), []wgtypes.Peer{peer(hi, time.Time{}, 0)}, nil},
			{at(2 * CrossedAfter), []wgtypes.Peer{peer(hi, time.Time{}, 0)}, nil},
		},
	}, {
		name: "one way: a new session, data sent, nothing received for OneWayAfter, whatever the keys",
		looks: []look{
			{at(0), []wgtypes.Peer{sent(peer(lo, time.Time{}, 0), init)}, nil},
			{at(100 * time.Millisecond), []wgtypes.Peer{sent(peer(lo, at(50*time.Millisecond), 92), init+32+128)}, nil},
			{at(OneWayAfter), []wgtypes.Peer{sent(peer(lo, at(50*time.Millisecond), 92), init+32+128*5)}, nil},
			{at(OneWayAfter + 100*time.Millisecond), []wgtypes.Peer{sent(peer(lo, at(50*time.Millisecond), 92), init+32+128*6)}, []wgtypes.Key{lo}},
			// Started over, and one way again: not before twice OneWayAfter.
			{at(OneWayAfter + 200*time.Millisecond), []wgtypes.Peer{sent(peer(lo, time.Time{}, 0), init)}, nil},
			{at(OneWayAfter + 300*time.Millisecond), []wgtypes.Peer{sent(peer(lo, at(OneWayAfter+250*time.Millisecond), 92), init+32)}, nil},
			{at(3 * OneWayAfter), []wgtypes.Peer{sent(peer(lo, at(OneWayAfter+250*time.Millisecond), 92), init+32+128*9)}, nil},
		},
	}, {
		name:  "a session both ways ends the back-off",
		added: true,
		looks: []look{
			{at(0), []wgtypes.Peer{sent(peer(hi, at(-time.Millisecond), 240), 400)}, nil},
			{at(time.Second), []wgtypes.Peer{sent(peer(hi, at(-time.Millisecond), 240), 3000)}, []wgtypes.Key{hi}},
			{at(1100 * time.Millisecond), []wgtypes.Peer{sent(peer(hi, at(time.Second), 92), 400)}, nil},
			{at(1200 * time.Millisecond), []wgtypes.Peer{sent(peer(hi, at(time.Second), 92+128), 800)}, nil},
			// Removed and added again, a new session one way: 1 s is enough.
			{at(1300 * time.Millisecond), []wgtypes.Peer{sent(peer(hi, at(1250*time.Millisecond), 92), 400)}, nil},
			{at(2300 * time.Millisecond), []wgtypes.Peer{sent(peer(hi, at(1250*time.Millisecond), 92), 3000)}, []wgtypes.Key{hi}},
		},
	}, {
		name: "a new session that is answered is not one way",
		looks: []look{
			{at(0), []wgtypes.Peer{sent(peer(hi, time.Time{}, 0), init)}, nil},
			{at(100 * time.Millisecond), []wgtypes.Peer{sent(peer(hi, at(50*time.Millisecond), 92), init+32+128)}, nil},
			{at(2 * OneWayAfter), []wgtypes.Peer{sent(peer(hi, at(50*time.Millisecond), 92+128), init+32+128*5)}, nil},
		},
	}, {
		name: "a new session that only sent its keepalive is idle, not one way",
		looks: []look{
			{at(0), []wgtypes.Peer{sent(peer(hi, time.Time{}, 0), init)}, nil},
			{at(100 * time.Millisecond), []wgtypes.Peer{sent(peer(hi, at(50*time.Millisecond), 92), init)}, nil},
			{at(2 * OneWayAfter), []wgtypes.Peer{sent(peer(hi, at(50*time.Millisecond), 92), init+32)}, nil},
		},
	}, {
		name: "a rekey is not a new session: a flow that only sends is left alone",
		looks: []look{
			{at(0), []wgtypes.Peer{sent(peer(hi, at(-time.Minute), 5000), 9000)}, nil},
			{at(time.Second), []wgtypes.Peer{sent(peer(hi, at(500*time.Millisecond), 5000), 9500)}, nil},
			{at(3 * time.Second), []wgtypes.Peer{sent(peer(hi, at(500*time.Millisecond), 5000), 20000)}, nil},
		},
	}, {
		name: "a session first seen running is not judged",
		looks: []look{
			{at(0), []wgtypes.Peer{sent(peer(hi, at(-time.Second), 92), 500)}, nil},
			{at(3 * time.Second), []wgtypes.Peer{sent(peer(hi, at(-time.Second), 92), 50000)}, nil},
		},
	}, {
		name: "removed and added again between two looks, then crossed",
		looks: []look{
			{at(0), []wgtypes.Peer{sent(peer(hi, at(-time.Second), 5000), 9000)}, nil},
			{at(time.Second), []wgtypes.Peer{sent(peer(hi, time.Time{}, init), init+92)}, nil},
			{at(time.Second + CrossedAfter), []wgtypes.Peer{sent(peer(hi, time.Time{}, init), init+92)}, []wgtypes.Key{hi}},
		},
	}, {
		name: "removed and added again between two looks, then one way",
		looks: []look{
			{at(0), []wgtypes.Peer{sent(peer(hi, at(-time.Second), 5000), 9000)}, nil},
			{at(time.Second), []wgtypes.Peer{sent(peer(hi, at(time.Second-time.Millisecond), 240), 400)}, nil},
			{at(2 * time.Second), []wgtypes.Peer{sent(peer(hi, at(time.Second-time.Millisecond), 240), 3000)}, []wgtypes.Key{hi}},
		},
	}, {
		name:  "added, and a session before the first look: judged as new",
		added: true,
		looks: []look{
			{at(0), []wgtypes.Peer{sent(peer(hi, at(-time.Millisecond), 240), 400)}, nil},
			{at(time.Second), []wgtypes.Peer{sent(peer(hi, at(-time.Millisecond), 240), 3000)}, []wgtypes.Key{hi}},
			// Started over; its next session is new too.
			{at(2 * time.Second), []wgtypes.Peer{sent(peer(hi, at(2*time.Second-time.Millisecond), 92), 400)}, nil},
			{at(3 * time.Second), []wgtypes.Peer{sent(peer(hi, at(2*time.Second-time.Millisecond), 92), 3000)}, []wgtypes.Key{hi}},
			// A third: not before 4 s after the second.
			{at(4 * time.Second), []wgtypes.Peer{sent(peer(hi, at(4*time.Second-time.Millisecond), 92), 400)}, nil},
			{at(6 * time.Second), []wgtypes.Peer{sent(peer(hi, at(4*time.Second-time.Millisecond), 92), 3000)}, nil},
			{at(7 * time.Second), []wgtypes.Peer{sent(peer(hi, at(4*time.Second-time.Millisecond), 92), 3500)}, []wgtypes.Key{hi}},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewSessionWatch(mid)
			if tc.added {
				w.Added(hi)
			}
			for i, l := range tc.looks {
				var got []wgtypes.Key
				for _, s := range w.StartOver(l.now, l.peers) {
					got = append(got, s.PublicKey)
				}
				if !slices.Equal(got, l.want) {
					t.Errorf("look %d at +%s: start over %v, want %v", i, l.now.Sub(t0), got, l.want)
				}
			}
		})
	}
}

type busyLook struct {
	now   time.Time
	peers []wgtypes.Peer
	busy  bool
}

func TestSessionWatchBusy(t *testing.T) {
	var mid, hi wgtypes.Key
	mid[0], hi[0] = 2, 3
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	peer := func(handshake time.Time, rx, tx int64) []wgtypes.Peer {
		return []wgtypes.Peer{{PublicKey: hi, LastHandshakeTime: handshake, ReceiveBytes: rx, TransmitBytes: tx}}
	}
	for _, tc := range []struct {
		name  string
		added bool
		looks []busyLook
	}{
		{name: "added: busy until its session is heard from", added: true, looks: []busyLook{
			{at(0), peer(time.Time{}, 0, 0), true},
			{at(time.Second), peer(at(900*time.Millisecond), 92, 148+32), true},
			{at(2 * time.Second), peer(at(900*time.Millisecond), 92+128, 148+32+128), false},
		}},
		{name: "added and idle: busy for Watchful", added: true, looks: []busyLook{
			{at(0), peer(time.Time{}, 0, 0), true},
			{at(Watchful), peer(time.Time{}, 0, 0), false},
		}},
		{name: "a running session is not watched closely", looks: []busyLook{
			{at(0), peer(at(-time.Minute), 5000, 5000), false},
			{at(time.Second), peer(at(-time.Minute), 5100, 5100), false},
			// It ended; then a crossing is timed.
			{at(SessionLifetime), peer(at(-time.Minute), 5100, 5100), false},
			{at(SessionLifetime + time.Second), peer(at(-time.Minute), 5100+148, 5100+240), true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewSessionWatch(mid)
			if tc.added {
				w.Added(hi)
			}
			for i, l := range tc.looks {
				w.StartOver(l.now, l.peers)
				if w.Busy() != l.busy {
					t.Errorf("look %d at +%s: busy %v, want %v", i, l.now.Sub(t0), w.Busy(), l.busy)
				}
			}
		})
	}
}
