package main

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func parse(t *testing.T, args ...string) (*config, error) {
	t.Helper()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := &config{}
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return c, c.resolve()
}

func TestConfigDefaultsWorkOnK3s(t *testing.T) {
	t.Setenv("NODE_NAME", "node-1")
	c, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if c.nodeName != "node-1" || c.iface != "wgmesh0" || c.listenPort != 51820 || c.namespace != "kube-system" ||
		c.privateKey != "/var/lib/wgmesh/private.key" || c.subnetFile != "/run/wgmesh/subnet.env" || !c.masquerade ||
		c.bridge != "cni0" || c.metricsAddr != DefaultMetricsAddr || c.reserveDelay != 30*time.Second || len(c.clusterCIDRs) != 1 || c.clusterCIDRs[0].String() != "10.42.0.0/16" {
		t.Errorf("defaults: %+v", c)
	}
}

func TestConfigEnvAndFlags(t *testing.T) {
	t.Setenv("WGMESH_MTU", "1400")
	t.Setenv("POD_NAMESPACE", "wgmesh")
	c, err := parse(t, "--node-name", "x", "--cluster-cidr", "10.42.0.0/16, fd42::/56")
	if err != nil {
		t.Fatal(err)
	}
	if c.mtu != 1400 || c.namespace != "wgmesh" || len(c.clusterCIDRs) != 2 {
		t.Errorf("got mtu=%d ns=%s cidrs=%v", c.mtu, c.namespace, c.clusterCIDRs)
	}
	t.Setenv("WGMESH_SUBNET_RESERVATION_DELAY", "0")
	if c, err = parse(t, "--node-name", "x"); err != nil || c.reserveDelay != 0 {
		t.Errorf("WGMESH_SUBNET_RESERVATION_DELAY=0: delay %v, err %v", c.reserveDelay, err)
	}
	if c, err = parse(t, "--node-name", "x", "--subnet-reservation-delay", "2m"); err != nil || c.reserveDelay != 2*time.Minute {
		t.Errorf("--subnet-reservation-delay 2m: delay %v, err %v", c.reserveDelay, err)
	}
}

func TestConfigRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		env  [2]string
		args []string
		want string
	}{
		{args: []string{"--cluster-cidr", "10.42.0.1/16"}, want: "did you mean 10.42.0.0/16"},
		{args: []string{"--cluster-cidr", "10.42.0.0/16,10.43.0.0/16"}, want: "at most one CIDR per address family"},
		{args: []string{"--wireguard", "magic"}, want: "--wireguard"},
		{args: []string{"--node-cidr-mask-size", "8"}, want: "does not fit cluster CIDR"},
		{args: []string{"--mtu", "100"}, want: "--mtu 100"},
		{args: []string{"--log-level", "loud"}, want: "--log-level"},
		{args: []string{"--subnet-reservation-delay", "-1s"}, want: "--subnet-reservation-delay -1s"},
		{env: [2]string{"WGMESH_SUBNET_RESERVATION_DELAY", "soon"}, want: "WGMESH_SUBNET_RESERVATION_DELAY"},
		{env: [2]string{"WGMESH_MTU", "abc"}, want: `WGMESH_MTU="abc"`},
		{env: [2]string{"WGMESH_MASQUERADE", "maybe"}, want: "WGMESH_MASQUERADE"},
	} {
		if tc.env[0] != "" {
			t.Setenv(tc.env[0], tc.env[1])
		}
		_, err := parse(t, append([]string{"--node-name", "x"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: err = %v, want %q", tc.env, tc.args, err, tc.want)
		}
		if tc.env[0] != "" {
			t.Setenv(tc.env[0], "")
		}
	}
}
