package kubenode

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func validConfig() Config {
	return Config{
		Name:      "n1",
		NodeIP:    netip.MustParseAddr("172.31.0.11"),
		APIServer: "https://172.31.0.2:6443",
		Token:     "t",
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"valid", func(*Config) {}, ""},
		{"no name", func(c *Config) { c.Name = "" }, "empty name"},
		{"no ip", func(c *Config) { c.NodeIP = netip.Addr{} }, "no node IP"},
		{"loopback ip", func(c *Config) { c.NodeIP = netip.MustParseAddr("127.0.0.1") }, "loopback"},
		{"no api", func(c *Config) { c.APIServer = "" }, "API server"},
		{"no token", func(c *Config) { c.Token = "" }, "token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestContainerdConfigCarriesTheNodeFixes(t *testing.T) {
	c := validConfig()
	c.CNIBinDir = "/x/bin"
	got := ContainerdConfig(c)
	for _, want := range []string{
		"version = 3",
		`root = "/var/lib/containerd"`,
		`state = "/run/containerd"`,
		`address = "/run/containerd/containerd.sock"`,
		"restrict_oom_score_adj = true",
		`bin_dirs = ["/x/bin"]`,
		`conf_dir = "/etc/cni/net.d"`,
		`sandbox = "wgmesh.test/pause:lab"`,
		`"io.containerd.nri.v1.nri"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("containerd config lacks %q:\n%s", want, got)
		}
	}
}

func TestKubeletConfigPerNodeCgroupRoot(t *testing.T) {
	got := KubeletConfig(validConfig())
	for _, want := range []string{
		"cgroupDriver: cgroupfs",
		"failCgroupV1: false",
		"failSwapOn: false",
		`cgroupRoot: "/wgmesh-lab/n1"`,
		`containerRuntimeEndpoint: "unix:///run/containerd/containerd.sock"`,
		`nodefs.available: "0%"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("kubelet config lacks %q:\n%s", want, got)
		}
	}
	args := strings.Join(KubeletArgs(validConfig(), "/c", "/k"), " ")
	for _, want := range []string{"--node-ip=172.31.0.11", "--hostname-override=n1", "--root-dir=/var/lib/kubelet"} {
		if !strings.Contains(args, want) {
			t.Errorf("kubelet args %q lack %q", args, want)
		}
	}
}

func TestKubeletArgsDualStackNodeIP(t *testing.T) {
	c := validConfig()
	c.NodeIP6 = netip.MustParseAddr("fd31::11")
	args := KubeletArgs(c, "/c", "/k")
	if !slices.Contains(args, "--node-ip=172.31.0.11,fd31::11") {
		t.Errorf("dual-stack kubelet args %q lack --node-ip=172.31.0.11,fd31::11", args)
	}
}
