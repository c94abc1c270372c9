package uapi

import (
	"bufio"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

const (
	keyA = "1111111111111111111111111111111111111111111111111111111111111111"
	keyB = "2222222222222222222222222222222222222222222222222222222222222222"
)

func TestReadSet(t *testing.T) {
	ka := 25
	ep := "192.0.2.1:51820"
	for _, tc := range []struct {
		name string
		in   string
		want Set
		err  string // substring; "" for none
	}{
		{name: "device lines", in: "private_key=" + keyA + "\nlisten_port=51820\nfwmark=0\n\n",
			want: Set{Device: []string{"private_key=" + keyA, "listen_port=51820", "fwmark=0"}}},
		{name: "replace peers", in: "replace_peers=true\n\n", want: Set{Device: []string{"replace_peers=true"}, ReplacePeers: true}},
		{name: "a peer added", in: "public_key=" + keyA + "\nendpoint=192.0.2.1:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.42.1.7/24\n\n",
			want: Set{Peers: []PeerOp{{PublicKey: keyA, Endpoint: &ep, Keepalive: &ka, ReplaceAllowedIPs: true,
				AllowedIPs: []AllowedIPChange{{Prefix: netip.MustParsePrefix("10.42.1.0/24")}},
				Lines:      []string{"public_key=" + keyA, "endpoint=192.0.2.1:51820", "persistent_keepalive_interval=25", "replace_allowed_ips=true", "allowed_ip=10.42.1.7/24"}}}}},
		{name: "two peers, remove and update only", in: "public_key=" + keyA + "\nremove=true\npublic_key=" + keyB + "\nupdate_only=true\nallowed_ip=-10.42.2.0/24\nprotocol_version=1\n\n",
			want: Set{Peers: []PeerOp{
				{PublicKey: keyA, Remove: true, Lines: []string{"public_key=" + keyA, "remove=true"}},
				{PublicKey: keyB, UpdateOnly: true, AllowedIPs: []AllowedIPChange{{Prefix: netip.MustParsePrefix("10.42.2.0/24"), Remove: true}},
					Lines: []string{"public_key=" + keyB, "update_only=true", "allowed_ip=-10.42.2.0/24", "protocol_version=1"}}}}},
		{name: "upper-case key is normalised", in: "public_key=" + strings.ToUpper(strings.Repeat("ab", 32)) + "\n\n",
			want: Set{Peers: []PeerOp{{PublicKey: strings.Repeat("ab", 32), Lines: []string{"public_key=" + strings.Repeat("ab", 32)}}}}},
		{name: "not key=value", in: "hello\n\n", err: "failed to parse line"},
		{name: "short key", in: "public_key=abcd\n\n", err: "64 hex digits"},
		{name: "bad endpoint", in: "public_key=" + keyA + "\nendpoint=nowhere\n\n", err: "endpoint"},
		{name: "keepalive too large", in: "public_key=" + keyA + "\npersistent_keepalive_interval=70000\n\n", err: "persistent_keepalive_interval"},
		{name: "bad allowed ip", in: "public_key=" + keyA + "\nallowed_ip=10.42.0.0/33\n\n", err: "allowed_ip"},
		{name: "unknown peer key", in: "public_key=" + keyA + "\nfoo=1\n\n", err: "unknown peer key"},
		{name: "unknown device key", in: "foo=1\n\n", err: "unknown device key"},
		{name: "remove=false", in: "public_key=" + keyA + "\nremove=false\n\n", err: "want true"},
		{name: "no blank line", in: "listen_port=1\n", err: "EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadSet(bufio.NewReader(strings.NewReader(tc.in)))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestErrorKinds(t *testing.T) {
	_, err := ReadSet(bufio.NewReader(strings.NewReader("hello\n\n")))
	var e *Error
	if !errors.As(err, &e) || e.Invalid {
		t.Errorf("a line without = is a protocol error, got %#v", err)
	}
	_, err = ReadSet(bufio.NewReader(strings.NewReader("listen_port=x\n\n")))
	if !errors.As(err, &e) || !e.Invalid {
		t.Errorf("a bad value is invalid, got %#v", err)
	}
}

func TestPeerApplyAndLines(t *testing.T) {
	ka, psk, ep := 0, keyB, "[2001:db8::1]:51820"
	var p Peer
	p.Apply(PeerOp{PublicKey: keyA, Endpoint: &ep, PresharedKey: &psk, Keepalive: &ka,
		AllowedIPs: []AllowedIPChange{{Prefix: netip.MustParsePrefix("10.42.1.0/24")}, {Prefix: netip.MustParsePrefix("fd42:1::/64")}}})
	p.Apply(PeerOp{PublicKey: keyA, AllowedIPs: []AllowedIPChange{{Prefix: netip.MustParsePrefix("10.42.1.0/24")}}}) // no duplicate
	p.Apply(PeerOp{PublicKey: keyA, AllowedIPs: []AllowedIPChange{{Prefix: netip.MustParsePrefix("fd42:1::/64"), Remove: true}}})
	if want := []netip.Prefix{netip.MustParsePrefix("10.42.1.0/24")}; !reflect.DeepEqual(p.AllowedIPs, want) {
		t.Fatalf("AllowedIPs %v, want %v", p.AllowedIPs, want)
	}
	set := p.SetLines()
	wantSet := "public_key=" + keyA + "\npreshared_key=" + keyB + "\nendpoint=[2001:db8::1]:51820\npersistent_keepalive_interval=0\nreplace_allowed_ips=true\nallowed_ip=10.42.1.0/24\n"
	if set != wantSet {
		t.Errorf("SetLines:\n%s\nwant\n%s", set, wantSet)
	}
	// SetLines is itself a valid set body that gives the same peer back.
	s, err := ReadSet(bufio.NewReader(strings.NewReader(set + "\n")))
	if err != nil {
		t.Fatal(err)
	}
	var again Peer
	again.Apply(s.Peers[0])
	if !reflect.DeepEqual(again, p) {
		t.Errorf("round trip: %+v, want %+v", again, p)
	}
	p.Stats = Stats{HandshakeSec: 1700000000, HandshakeNsec: 5, RxBytes: 10, TxBytes: 20}
	p.PresharedKey = ""
	get := p.GetLines()
	wantGet := "public_key=" + keyA + "\npreshared_key=" + strings.Repeat("0", 64) + "\nprotocol_version=1\nendpoint=[2001:db8::1]:51820\n" +
		"last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=20\nrx_bytes=10\npersistent_keepalive_interval=0\nallowed_ip=10.42.1.0/24\n"
	if get != wantGet {
		t.Errorf("GetLines:\n%s\nwant\n%s", get, wantGet)
	}
	stats, err := ReadStats("private_key=" + keyB + "\nlisten_port=1\n" + get)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(stats, map[string]Stats{keyA: p.Stats}) {
		t.Errorf("ReadStats %+v", stats)
	}
}

func TestReadStatsRefusesBadNumbers(t *testing.T) {
	if _, err := ReadStats("public_key=" + keyA + "\nrx_bytes=x\n"); err == nil {
		t.Error("no error for rx_bytes=x")
	}
}

// FuzzReadSet: whatever the input, ReadSet returns an error or a set whose
// peers' SetLines read back to the same peers.
func FuzzReadSet(f *testing.F) {
	f.Add("public_key=" + keyA + "\nendpoint=192.0.2.1:51820\nallowed_ip=10.0.0.0/8\nallowed_ip=-10.1.0.0/16\n\n")
	f.Add("private_key=" + keyB + "\nreplace_peers=true\npublic_key=" + keyA + "\nremove=true\n\n")
	f.Add("public_key=" + keyA + "\npreshared_key=" + keyB + "\npersistent_keepalive_interval=25\nupdate_only=true\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ReadSet(bufio.NewReader(strings.NewReader(in)))
		if err != nil {
			return
		}
		for _, op := range s.Peers {
			var p Peer
			p.Apply(op)
			s2, err := ReadSet(bufio.NewReader(strings.NewReader(p.SetLines() + "\n")))
			if err != nil {
				t.Fatalf("SetLines of %+v does not read back: %v", p, err)
			}
			var q Peer
			q.Apply(s2.Peers[0])
			if !reflect.DeepEqual(p, q) {
				t.Fatalf("round trip %+v -> %+v", p, q)
			}
		}
	})
}

// TestApplyFollowsLineOrder: wireguard-go applies a section's allowed_ip
// lines one by one and replace_allowed_ips where it stands, so the kept
// configuration must too.
func TestApplyFollowsLineOrder(t *testing.T) {
	a, b, old := "10.42.1.0/24", "10.42.2.0/24", "10.42.9.0/24"
	for _, tc := range []struct {
		lines []string
		want  []string
	}{
		{[]string{"allowed_ip=" + a, "allowed_ip=-" + a}, []string{old}},
		{[]string{"allowed_ip=-" + old, "allowed_ip=" + old}, []string{old}},
		{[]string{"allowed_ip=" + a, "replace_allowed_ips=true", "allowed_ip=" + b}, []string{b}},
		{[]string{"allowed_ip=-" + old, "allowed_ip=" + a, "allowed_ip=-" + b}, []string{a}},
		{[]string{"replace_allowed_ips=true"}, nil},
	} {
		body := "public_key=" + keyA + "\n" + strings.Join(tc.lines, "\n") + "\n\n"
		s, err := ReadSet(bufio.NewReader(strings.NewReader(body)))
		if err != nil {
			t.Fatal(err)
		}
		p := Peer{PublicKey: keyA, AllowedIPs: []netip.Prefix{netip.MustParsePrefix(old)}}
		p.Apply(s.Peers[0])
		var got []string
		for _, x := range p.AllowedIPs {
			got = append(got, x.String())
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: AllowedIPs %v, want %v", tc.lines, got, tc.want)
		}
	}
}
