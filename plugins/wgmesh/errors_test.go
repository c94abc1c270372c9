package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/wgmesh/wgmesh/internal/cnicode"
	"github.com/wgmesh/wgmesh/internal/cniconf"
)

func TestConfErrorCodes(t *testing.T) {
	_, decodeErr := cniconf.Parse([]byte(`{"name":"n","mtu":"x"}`))
	_, invalidErr := cniconf.Parse([]byte(`{"name":"n","mtu":5}`))
	if c := confError(decodeErr).Code; c != types.ErrDecodingFailure {
		t.Errorf("decode error -> code %d, want %d", c, types.ErrDecodingFailure)
	}
	if c := confError(invalidErr).Code; c != types.ErrInvalidNetworkConfig {
		t.Errorf("invalid value -> code %d, want %d", c, types.ErrInvalidNetworkConfig)
	}
}

func TestDelegateErrorKeepsTheIPAMCode(t *testing.T) {
	exhausted := &types.Error{Code: 100, Msg: "address range exhausted", Details: "10.42.1.0/24"}
	got := delegateError("wgmesh-ipam", "ADD", fmt.Errorf("wrapped: %w", exhausted))
	if got.Code != 100 || got.Msg != "ipam wgmesh-ipam ADD: address range exhausted" || got.Details != "10.42.1.0/24" {
		t.Errorf("delegateError = %+v", got)
	}
	got = delegateError("wgmesh-ipam", "DEL", errors.New(`failed to find plugin "wgmesh-ipam" in path`))
	if got.Code != cnicode.IPAM {
		t.Errorf("plain error -> code %d, want %d", got.Code, cnicode.IPAM)
	}
}

func TestCleanupStackRunsNewestFirstOnce(t *testing.T) {
	var order []int
	var s cleanupStack
	for i := range 3 {
		s.push(func() { order = append(order, i) })
	}
	s.run()
	s.run()
	if fmt.Sprint(order) != "[2 1 0]" {
		t.Errorf("undo order %v, want [2 1 0] once", order)
	}
}

func TestValidAttachmentsTellsAbsentFromEmpty(t *testing.T) {
	for _, c := range []struct {
		in      string
		wantNil bool
		wantLen int
	}{
		{`{"name":"n"}`, true, 0},
		{`{"name":"n","cni.dev/valid-attachments":[]}`, false, 0},
		{`{"name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`, false, 1},
	} {
		got, err := validAttachments([]byte(c.in))
		if err != nil || (got == nil) != c.wantNil || len(got) != c.wantLen {
			t.Errorf("validAttachments(%s) = %v, %v", c.in, got, err)
		}
	}
}
