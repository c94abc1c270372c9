package dataplane

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/wgmesh/wgmesh/internal/bridgenf"
	"github.com/wgmesh/wgmesh/internal/testns"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

// TestBridgeNetfilterMakesSameBridgeServiceWork: a pod reaches a
// "ClusterIP" (a DNAT rule in nat PREROUTING, as kube-proxy writes it)
// whose only backend is another pod on the same bridge. With
// net.bridge.bridge-nf-call-iptables=0 in the node's namespace the
// backend's reply is switched on cni0, never un-NATed, and the connection
// fails; the data plane's ensureBridgeNetfilter sets it to 1, after which
// the connection works, and a second call writes nothing.
func TestBridgeNetfilterMakesSameBridgeServiceWork(t *testing.T) {
	testutil.RequireRoot(t)
	node := testns.New(t)
	client, backend := testns.New(t), testns.New(t)
	mustRun(t, node, "ip", "link", "set", "lo", "up")
	testns.Do(t, node, func() error { return writeSysctl("net/ipv4/ip_forward", "1") })
	for i, pod := range []ns.NetNS{client, backend} {
		testns.Do(t, node, func() error { _, err := addPod(pod, fmt.Sprintf("pod%d", i)); return err })
		addr := fmt.Sprintf("10.42.1.%d", i+2)
		mustRun(t, pod, "ip", "link", "set", "lo", "up")
		mustRun(t, pod, "ip", "addr", "add", addr+"/24", "dev", "eth0")
		mustRun(t, pod, "ip", "link", "set", "eth0", "up")
		mustRun(t, pod, "ip", "route", "add", "default", "via", "10.42.1.1")
	}
	const clusterIP, backendAddr = "10.43.0.50:80", "10.42.1.3:8080"
	mustRun(t, node, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", "10.43.0.50/32", "-p", "tcp", "--dport", "80",
		"-j", "DNAT", "--to-destination", backendAddr)

	var ln net.Listener
	testns.Do(t, backend, func() error {
		var err error
		ln, err = net.Listen("tcp", backendAddr)
		return err
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "backend\n")
			c.Close()
		}
	}()
	dial := func() error {
		var c net.Conn
		err := client.Do(func(ns.NetNS) error {
			var err error
			c, err = net.DialTimeout("tcp", clusterIP, 2*time.Second)
			return err
		})
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) != "backend" {
			return fmt.Errorf("answer %q", b)
		}
		return nil
	}

	clusters := []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}
	testns.Do(t, node, func() error { return writeSysctl(bridgenf.Sysctl(false), "0") })
	if err := dial(); err == nil {
		t.Fatalf("client reached %s (backend on its own bridge) with bridge-nf-call-iptables=0: the test would not see the fix", clusterIP)
	} else {
		t.Logf("bridge-nf-call-iptables=0: client -> %s -> %s: %v", clusterIP, backendAddr, err)
	}
	// ensure runs the agent's code in the node's namespace.
	ensure := func() int {
		var n int
		testns.Do(t, node, func() error {
			var err error
			n, err = ensureBridgeNetfilter("/proc/sys", clusters)
			return err
		})
		return n
	}
	if n := ensure(); n != 1 {
		t.Errorf("ensureBridgeNetfilter changed %d sysctls, want 1", n)
	}
	if err := dial(); err != nil {
		t.Errorf("bridge-nf-call-iptables=1: client -> %s -> %s: %v", clusterIP, backendAddr, err)
	}
	if n := ensure(); n != 0 {
		t.Errorf("second ensureBridgeNetfilter changed %d sysctls, want 0", n)
	}
	// Per namespace: the machine's own setting was never touched.
}
