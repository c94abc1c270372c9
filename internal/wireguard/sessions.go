package wireguard

import (
	"fmt"
	"log/slog"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/internal/mesh"
)

// Two things WireGuard leaves to whoever programs its peers, both issue 19.
//
// Stuck sessions: a pair whose two ends initiated at the same instant can
// be left without a working session until WireGuard retries 5 to 20 s
// later (mesh.SessionWatch says how and when). watchSessions reads the
// device and starts such a pair over from this end: it removes the peer,
// adds it again as it was (which clears WireGuard's hold-off) and opens a
// session at once.
//
// Restarts: a new device process (or a new link) replacing one that had
// peers starts without sessions while its peers keep theirs. They go on
// sending with sessions it no longer knows, which it drops without a word,
// and they start a new one only after 15 s without an answer; the
// DaemonSet rollout stalled 12 to 27 s on that. So the first Apply after
// such a start opens a session with every peer it adds, at once. That
// cannot cross: the peers hold a session and have nothing to initiate.

// How often watchSessions reads the device: every lookBusy while the watch
// is busy (a crossed pair is started over within mesh.CrossedAfter plus
// this), else every lookIdle. A read costs about 14 ms of CPU at 1000
// peers with the userspace device; an idle mesh of that size spends 0.7 %
// of a core on it, and a pair that crosses while the watch is idle (an
// idle pair talking again) waits at most lookIdle more.
const (
	lookBusy = 250 * time.Millisecond
	lookIdle = 2 * time.Second
)

// watchSessions runs until d.stop is closed, with a client of its own
// (opened by Ensure in the device's network namespace). Apply pokes it when
// it adds peers, so that it looks closely at once.
func (d *Device) watchSessions(client *wgctrl.Client) {
	defer d.watching.Done()
	defer client.Close()
	log := d.cfg.Logger.With("device", d.cfg.Name)
	t := time.NewTimer(lookIdle)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-d.poke:
		case <-t.C:
		}
		d.mu.Lock()
		dev, err := client.Device(d.cfg.Name)
		if err == nil {
			stuck := d.watch.StartOver(time.Now(), dev.Peers)
			err = startOver(client, dev, stuck, log)
			for _, st := range stuck {
				if f := d.cfg.OnStartOver; f != nil {
					f(st.Why)
				}
			}
		}
		next := lookIdle
		if d.watch.Busy() {
			next = lookBusy
		}
		d.mu.Unlock()
		t.Reset(next)
		if err != nil {
			log.Debug("session watch", "error", err) // Check and Apply report a lost device
		}
	}
}

// startOver removes each of stuck from dev and adds it again as it was
// (endpoint, AllowedIPs, keepalive, preshared key), then opens a session.
func startOver(client *wgctrl.Client, dev *wgtypes.Device, stuck []mesh.Stuck, log *slog.Logger) error {
	if len(stuck) == 0 {
		return nil
	}
	byKey := make(map[wgtypes.Key]wgtypes.Peer, len(dev.Peers))
	for _, p := range dev.Peers {
		byKey[p.PublicKey] = p
	}
	var remove, add wgtypes.Config
	for _, st := range stuck {
		k, p := st.PublicKey, byKey[st.PublicKey]
		remove.Peers = append(remove.Peers, wgtypes.PeerConfig{PublicKey: k, Remove: true})
		psk, ka := p.PresharedKey, p.PersistentKeepaliveInterval
		pc := wgtypes.PeerConfig{PublicKey: k, Endpoint: p.Endpoint, ReplaceAllowedIPs: true, AllowedIPs: p.AllowedIPs}
		if psk != (wgtypes.Key{}) {
			pc.PresharedKey = &psk
		}
		if ka != 0 {
			pc.PersistentKeepaliveInterval = &ka
		}
		add.Peers = append(add.Peers, pc)
		log.Info("session stuck; starting it over", "publicKey", k.String(), "why", st.Why)
	}
	if err := client.ConfigureDevice(dev.Name, remove); err != nil {
		return fmt.Errorf("start %d stuck session(s) over on %s: %w", len(stuck), dev.Name, err)
	}
	if err := client.ConfigureDevice(dev.Name, add); err != nil {
		return fmt.Errorf("add %d stuck peer(s) again on %s: %w", len(stuck), dev.Name, err)
	}
	_, quiet := addedPeers(add)
	return open(client, dev.Name, quiet)
}

// open starts a handshake with each of peers now, without waiting for a
// packet to them: turning a peer's persistent keepalive on makes WireGuard
// (kernel and wireguard-go alike) send a keepalive at once, which needs a
// session, and turning it off again leaves the peer as configured. Pass
// only peers without a keepalive (addedPeers' quiet): one with a keepalive
// sent it when it was added. WireGuard retries the handshake until it
// succeeds.
func open(client *wgctrl.Client, device string, peers []wgtypes.Key) error {
	if len(peers) == 0 {
		return nil
	}
	on, off := time.Second, time.Duration(0)
	for _, ka := range []*time.Duration{&on, &off} {
		var cfg wgtypes.Config
		for _, k := range peers {
			// UpdateOnly: a peer removed meanwhile stays removed.
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: k, UpdateOnly: true, PersistentKeepaliveInterval: ka})
		}
		if err := client.ConfigureDevice(device, cfg); err != nil {
			return fmt.Errorf("open sessions with %d peer(s) on %s: %w", len(peers), device, err)
		}
	}
	return nil
}

// addedPeers are the peers cfg adds (neither removed nor only updated),
// and quiet those of them without a keepalive, for open.
func addedPeers(cfg wgtypes.Config) (added, quiet []wgtypes.Key) {
	for _, p := range cfg.Peers {
		if p.Remove || p.UpdateOnly {
			continue
		}
		added = append(added, p.PublicKey)
		if p.PersistentKeepaliveInterval == nil || *p.PersistentKeepaliveInterval == 0 {
			quiet = append(quiet, p.PublicKey)
		}
	}
	return added, quiet
}
