package main

// These tests run the wgmesh-ipam binary as a CNI runtime does: CNI_*
// environment variables, the network configuration on stdin, the result or
// a CNI error as JSON on stdout. IPAM needs no network namespace, so they
// run without root.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// pluginPath is the binary under test: $WGMESH_BIN/wgmesh-ipam when the
// caller built it (make unit), else a fresh build of this package.
var pluginPath string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if dir := os.Getenv("WGMESH_BIN"); dir != "" {
			if _, err := os.Stat(filepath.Join(dir, "wgmesh-ipam")); err == nil {
				pluginPath = filepath.Join(dir, "wgmesh-ipam")
			}
		}
		if pluginPath == "" {
			tmp, err := os.MkdirTemp("", "wgmesh-ipam-test-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(tmp)
			pluginPath = filepath.Join(tmp, "wgmesh-ipam")
			build := exec.Command("go", "build", "-o", pluginPath, ".")
			build.Stdout, build.Stderr = os.Stderr, os.Stderr
			if err := build.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "build wgmesh-ipam:", err)
				return 1
			}
		}
		return m.Run()
	}())
}

// env is one test's world: its own subnet.env and data directory.
type env struct {
	t          *testing.T
	dir        string
	subnetFile string
	dataDir    string
	network    string
}

func newEnv(t *testing.T, subnetEnv string) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, subnetFile: filepath.Join(dir, "subnet.env"), dataDir: filepath.Join(dir, "data"), network: "wgmesh-test"}
	if subnetEnv != "" {
		if err := os.WriteFile(e.subnetFile, []byte(subnetEnv), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// conf is the configuration the wgmesh plugin delegates with; extra is
// spliced into the ipam object, top into the top level.
func (e *env) conf(cniVersion, extra, top string) []byte {
	ipam := fmt.Sprintf(`{"type":"wgmesh-ipam","subnetFile":%q,"dataDir":%q%s}`, e.subnetFile, e.dataDir, extra)
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":%q,"type":"wgmesh","bridge":"cni0"%s,"ipam":%s}`, cniVersion, e.network, top, ipam))
}

func cniArgs(cmd, id, ifname string) *invoke.Args {
	return &invoke.Args{Command: cmd, ContainerID: id, NetNS: "/var/run/netns/" + id, IfName: ifname, Path: filepath.Dir(pluginPath)}
}

func (e *env) add(conf []byte, id string) (*current.Result, error) {
	r, err := invoke.ExecPluginWithResult(context.Background(), pluginPath, conf, cniArgs("ADD", id, "eth0"), nil)
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(r)
}

func (e *env) mustAdd(conf []byte, id string) *current.Result {
	e.t.Helper()
	r, err := e.add(conf, id)
	if err != nil {
		e.t.Fatalf("ADD %s: %v", id, err)
	}
	return r
}

func (e *env) run(cmd string, conf []byte, id string) error {
	return invoke.ExecPluginWithoutResult(context.Background(), pluginPath, conf, cniArgs(cmd, id, "eth0"), nil)
}

// allocations lists the data directory as the operator would: address ->
// owner file content.
func (e *env) allocations() map[string]string {
	e.t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(filepath.Join(e.dataDir, e.network))
	if errors.Is(err, os.ErrNotExist) {
		return out
	} else if err != nil {
		e.t.Fatal(err)
	}
	for _, en := range entries {
		if _, err := netip.ParseAddr(en.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(e.dataDir, e.network, en.Name()))
		if err != nil {
			e.t.Fatal(err)
		}
		out[en.Name()] = string(b)
	}
	return out
}

func wantCode(t *testing.T, err error, code uint, msgPart string) {
	t.Helper()
	var ce *types.Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v (%T), want CNI error code %d", err, err, code)
	}
	if ce.Code != code || !strings.Contains(ce.Msg, msgPart) {
		t.Fatalf("got CNI error %d %q, want code %d with %q", ce.Code, ce.Msg, code, msgPart)
	}
}

const dualStack = "WGMESH_NETWORK=10.42.0.0/16\nWGMESH_SUBNET=10.42.1.0/24\nWGMESH_SUBNET6=fd00:42:1::/64\nWGMESH_MTU=1420\n"

func TestAddGivesAddressInSubnetNotGateway(t *testing.T) {
	e := newEnv(t, dualStack)
	r := e.mustAdd(e.conf("1.1.0", "", ""), "ctr1")
	if len(r.IPs) != 2 {
		t.Fatalf("got %d addresses, want one per family: %v", len(r.IPs), r)
	}
	for i, want := range []struct{ subnet, gw string }{{"10.42.1.0/24", "10.42.1.1"}, {"fd00:42:1::/64", "fd00:42:1::1"}} {
		ipc := r.IPs[i]
		if ipc.Address.String() == "" || ipc.Gateway.String() != want.gw {
			t.Errorf("IP %d: %v gateway %v, want gateway %s", i, ipc.Address, ipc.Gateway, want.gw)
		}
		_, subnet, _ := net.ParseCIDR(want.subnet)
		if !subnet.Contains(ipc.Address.IP) || ipc.Address.Mask.String() != subnet.Mask.String() || ipc.Address.IP.Equal(ipc.Gateway) {
			t.Errorf("IP %d: %v not a pod address of %s", i, ipc.Address.String(), want.subnet)
		}
	}
	var routes []string
	for _, rt := range r.Routes {
		routes = append(routes, rt.Dst.String())
	}
	if strings.Join(routes, ",") != "0.0.0.0/0,::/0" {
		t.Errorf("routes %v, want a default route per family", routes)
	}
	if got := e.allocations(); len(got) != 2 || got[r.IPs[0].Address.IP.String()] != "ctr1\r\neth0" {
		t.Errorf("data dir: %q", got)
	}
}

func TestExplicitRangesAndRoutes(t *testing.T) {
	e := newEnv(t, "") // no subnet.env: explicit ranges do not need one
	conf := e.conf("1.1.0", `,"ranges":[[{"subnet":"192.168.7.0/24","rangeStart":"192.168.7.50","rangeEnd":"192.168.7.51","gateway":"192.168.7.254"}]],"routes":[{"dst":"10.0.0.0/8"}]`, "")
	r := e.mustAdd(conf, "a")
	if r.IPs[0].Address.String() != "192.168.7.50/24" || r.IPs[0].Gateway.String() != "192.168.7.254" {
		t.Errorf("got %v gw %v", r.IPs[0].Address.String(), r.IPs[0].Gateway)
	}
	if len(r.Routes) != 1 || r.Routes[0].Dst.String() != "10.0.0.0/8" {
		t.Errorf("routes %v", r.Routes)
	}
	if err := e.run("STATUS", conf, ""); err != nil {
		t.Errorf("STATUS with explicit ranges and no subnet.env: %v", err)
	}
}

func TestAddSameAttachmentTwiceReturnsSameAddress(t *testing.T) {
	e := newEnv(t, dualStack)
	conf := e.conf("1.1.0", "", "")
	first := e.mustAdd(conf, "ctr1")
	second := e.mustAdd(conf, "ctr1")
	if first.IPs[0].Address.String() != second.IPs[0].Address.String() || first.IPs[1].Address.String() != second.IPs[1].Address.String() {
		t.Fatalf("retried ADD got %v, first ADD got %v", second.IPs, first.IPs)
	}
	if n := len(e.allocations()); n != 2 {
		t.Fatalf("%d allocations after a retried ADD, want 2", n)
	}
	other := e.mustAdd(conf, "ctr2")
	if other.IPs[0].Address.String() == first.IPs[0].Address.String() {
		t.Fatalf("two containers got %v", other.IPs[0].Address.String())
	}
}

func TestDelIsIdempotentAndNeedsNoSubnetEnv(t *testing.T) {
	e := newEnv(t, dualStack)
	conf := e.conf("1.1.0", "", "")
	if err := e.run("DEL", conf, "never-added"); err != nil {
		t.Fatalf("DEL with no data dir: %v", err)
	}
	if _, err := os.Stat(e.dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("DEL created the data dir")
	}
	e.mustAdd(conf, "ctr1")
	e.mustAdd(conf, "ctr2")
	if err := os.Remove(e.subnetFile); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := e.run("DEL", conf, "ctr1"); err != nil {
			t.Fatalf("DEL #%d without subnet.env: %v", i+1, err)
		}
	}
	got := e.allocations()
	if len(got) != 2 {
		t.Fatalf("after DEL ctr1: %q, want only ctr2's two addresses", got)
	}
	for a, owner := range got {
		if owner != "ctr2\r\neth0" {
			t.Errorf("%s owned by %q", a, owner)
		}
	}
	if err := e.run("DEL", conf, "unknown"); err != nil {
		t.Fatalf("DEL of an unknown container: %v", err)
	}
}

func TestCheck(t *testing.T) {
	e := newEnv(t, dualStack)
	conf := e.conf("1.1.0", "", "")
	r := e.mustAdd(conf, "ctr1")
	prev, _ := json.Marshal(r)
	withPrev := e.conf("1.1.0", "", `,"prevResult":`+string(prev))
	if err := e.run("CHECK", withPrev, "ctr1"); err != nil {
		t.Fatalf("CHECK of a healthy allocation: %v", err)
	}
	wrong := strings.Replace(string(prev), r.IPs[0].Address.IP.String(), "10.42.1.99", 1)
	err := e.run("CHECK", e.conf("1.1.0", "", `,"prevResult":`+wrong), "ctr1")
	wantCode(t, err, 103, "prevResult says")
	err = e.run("CHECK", withPrev, "ctr-other")
	wantCode(t, err, 103, "no address allocated for container ctr-other")
	if err := e.run("DEL", conf, "ctr1"); err != nil {
		t.Fatal(err)
	}
	err = e.run("CHECK", withPrev, "ctr1")
	wantCode(t, err, 103, "no address allocated for container ctr1 interface eth0")
}

func TestGCFreesUnlistedAttachments(t *testing.T) {
	e := newEnv(t, dualStack)
	conf := e.conf("1.1.0", "", "")
	for _, id := range []string{"a", "b", "c"} {
		e.mustAdd(conf, id)
	}
	err := e.run("GC", conf, "")
	wantCode(t, err, 7, "GC needs cni.dev/valid-attachments")
	if n := len(e.allocations()); n != 6 {
		t.Fatalf("GC without a list changed state: %d allocations", n)
	}
	gc := e.conf("1.1.0", "", `,"cni.dev/valid-attachments":[{"containerID":"b","ifname":"eth0"},{"containerID":"a","ifname":"eth1"}]`)
	if err := e.run("GC", gc, ""); err != nil {
		t.Fatalf("GC: %v", err)
	}
	got := e.allocations()
	if len(got) != 2 {
		t.Fatalf("after GC: %q, want b's two addresses only", got)
	}
	for a, owner := range got {
		if owner != "b\r\neth0" {
			t.Errorf("%s owned by %q survived GC", a, owner)
		}
	}
	empty := e.conf("1.1.0", "", `,"cni.dev/valid-attachments":[]`)
	if err := e.run("GC", empty, ""); err != nil {
		t.Fatal(err)
	}
	if got := e.allocations(); len(got) != 0 {
		t.Fatalf("GC with no valid attachment left %q", got)
	}
	os.RemoveAll(e.dataDir)
	if err := e.run("GC", empty, ""); err != nil {
		t.Fatalf("GC with no data dir: %v", err)
	}
}

func TestStatusFollowsSubnetEnv(t *testing.T) {
	e := newEnv(t, "")
	conf := e.conf("1.1.0", "", "")
	err := e.run("STATUS", conf, "")
	wantCode(t, err, 50, "wgmesh agent not ready: it has not written "+e.subnetFile+" yet")
	os.WriteFile(e.subnetFile, []byte("WGMESH_SUBNET=10.42.1.5/24\n"), 0o644)
	err = e.run("STATUS", conf, "")
	wantCode(t, err, 50, "has host bits set")
	os.WriteFile(e.subnetFile, []byte(dualStack), 0o644)
	if err := e.run("STATUS", conf, ""); err != nil {
		t.Fatalf("STATUS with subnet.env: %v", err)
	}
}

func TestAddBeforeAgentIsReady(t *testing.T) {
	e := newEnv(t, "")
	conf := e.conf("1.1.0", "", "")
	_, err := e.add(conf, "ctr1")
	wantCode(t, err, 11, "wgmesh agent not ready: it has not written "+e.subnetFile+" yet")
	os.WriteFile(e.subnetFile, []byte("WGMESH_SUBNET=banana\n"), 0o644)
	_, err = e.add(conf, "ctr1")
	wantCode(t, err, 101, "WGMESH_SUBNET")
	if _, err := os.Stat(e.dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed ADD created %s", e.dataDir)
	}
}

func TestExhaustedRangeFailsWithCode100AndLeavesNothing(t *testing.T) {
	e := newEnv(t, "WGMESH_SUBNET=10.42.9.0/30\n") // .1 gateway, .2 the only pod address, .3 broadcast
	conf := e.conf("1.1.0", "", "")
	r := e.mustAdd(conf, "first")
	if got := r.IPs[0].Address.String(); got != "10.42.9.2/30" {
		t.Fatalf("first ADD got %s, want 10.42.9.2/30", got)
	}
	_, err := e.add(conf, "second")
	wantCode(t, err, 100, "no free address in 10.42.9.0/30 (10.42.9.1-10.42.9.2)")
	if got := e.allocations(); len(got) != 1 || got["10.42.9.2"] != "first\r\neth0" {
		t.Fatalf("after the failed ADD: %q", got)
	}
	// Dual stack, IPv6 exhausted after IPv4 succeeded: the IPv4 address is released.
	e2 := newEnv(t, "WGMESH_SUBNET=10.42.9.0/24\nWGMESH_SUBNET6=fd00::/126\n")
	conf2 := e2.conf("1.1.0", "", "")
	e2.mustAdd(conf2, "first")
	e2.mustAdd(conf2, "second")
	_, err = e2.add(conf2, "third")
	wantCode(t, err, 100, "fd00::/126")
	for a, owner := range e2.allocations() {
		if strings.HasPrefix(owner, "third") {
			t.Errorf("failed ADD left %s for %q", a, owner)
		}
	}
}

// TestBadConfigErrorsOnStdout runs the binary with exec, as a runtime does,
// and reads the CNI error JSON from stdout.
func TestBadConfigErrorsOnStdout(t *testing.T) {
	e := newEnv(t, dualStack)
	for _, tc := range []struct {
		name string
		conf string
		code uint
		msg  string
	}{
		{"malformed json", `{"cniVersion":"1.1.0","name":"x","ipam":{`, 6, "unexpected end of JSON input"},
		{"bad cidr", string(e.conf("1.1.0", `,"ranges":[[{"subnet":"10.42.1.0/40"}]]`, "")), 7, `ipam.ranges[0][0]: subnet "10.42.1.0/40" is not a CIDR`},
		{"rangeStart outside", string(e.conf("1.1.0", `,"ranges":[[{"subnet":"10.42.1.0/24","rangeStart":"10.9.9.9"}]]`, "")), 7, "rangeStart 10.9.9.9 is outside subnet 10.42.1.0/24"},
		{"unknown ipam field", string(e.conf("1.1.0", `,"rnages":[]`, "")), 7, `ipam: unknown field "rnages"`},
		{"wrong ipam type", strings.Replace(string(e.conf("1.1.0", "", "")), `"type":"wgmesh-ipam"`, `"type":"wgmesh-ipam2"`, 1), 7, `ipam.type is "wgmesh-ipam2"`},
		{"unsupported version", string(e.conf("9.9.9", "", "")), 1, "incompatible CNI versions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(pluginPath)
			cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID=c1", "CNI_NETNS=/var/run/netns/c1", "CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin")
			cmd.Stdin = strings.NewReader(tc.conf)
			var stdout bytes.Buffer
			cmd.Stdout = &stdout
			err := cmd.Run()
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1", err)
			}
			var ce struct {
				CNIVersion string `json:"cniVersion"`
				Code       uint   `json:"code"`
				Msg        string `json:"msg"`
				Details    string `json:"details"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &ce); err != nil {
				t.Fatalf("stdout is not a CNI error: %q: %v", stdout.String(), err)
			}
			if ce.Code != tc.code || !strings.Contains(ce.Msg+ce.Details, tc.msg) {
				t.Fatalf("got %s, want code %d with %q", stdout.String(), tc.code, tc.msg)
			}
		})
	}
	if got := e.allocations(); len(got) != 0 {
		t.Errorf("bad configs left %q", got)
	}
}

func TestOlderCNIVersions(t *testing.T) {
	e := newEnv(t, "WGMESH_SUBNET=10.42.1.0/24\n")
	for i, v := range []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"} {
		id := fmt.Sprintf("v%d", i)
		conf := e.conf(v, "", "")
		r, err := invoke.ExecPluginWithResult(context.Background(), pluginPath, conf, cniArgs("ADD", id, "eth0"), nil)
		if err != nil {
			t.Fatalf("cniVersion %s: %v", v, err)
		}
		if r.Version() != v {
			t.Errorf("cniVersion %s: result version %s", v, r.Version())
		}
		cur, err := current.NewResultFromResult(r)
		if err != nil || len(cur.IPs) != 1 || cur.IPs[0].Gateway.String() != "10.42.1.1" {
			t.Errorf("cniVersion %s: %v %v", v, cur, err)
		}
		if err := e.run("DEL", conf, id); err != nil {
			t.Errorf("cniVersion %s DEL: %v", v, err)
		}
	}
}
