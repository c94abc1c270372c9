package cniconf

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"wgmesh","type":"wgmesh"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Bridge != "cni0" || c.SubnetFile != "/run/wgmesh/subnet.env" || c.WireguardInterface != "wgmesh0" ||
		c.MTU != 0 || !c.Hairpin() || c.IPAM.Type != "wgmesh-ipam" {
		t.Errorf("defaults not applied: %+v", c.NetConf)
	}
	var m map[string]any
	if err := json.Unmarshal(c.IPAMStdin, &m); err != nil {
		t.Fatal(err)
	}
	if ipam, _ := m["ipam"].(map[string]any); ipam["type"] != "wgmesh-ipam" || m["name"] != "wgmesh" {
		t.Errorf("IPAM stdin lacks the default ipam section or the name: %s", c.IPAMStdin)
	}
}

func TestParseKeepsExplicitValues(t *testing.T) {
	in := `{"cniVersion":"1.1.0","name":"n","type":"wgmesh","bridge":"br9","subnetFile":"/tmp/x.env",
		"mtu":1380,"wireguardInterface":"wg7","hairpinMode":false,"ipam":{"type":"host-local","ranges":[]}}`
	c, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if c.Bridge != "br9" || c.SubnetFile != "/tmp/x.env" || c.MTU != 1380 || c.WireguardInterface != "wg7" ||
		c.Hairpin() || c.IPAM.Type != "host-local" {
		t.Errorf("explicit values lost: %+v", c.NetConf)
	}
	if string(c.IPAMStdin) != in {
		t.Errorf("IPAM stdin rewritten although ipam was given")
	}
}

func TestIPAMInheritsSubnetFile(t *testing.T) {
	for _, in := range []string{
		`{"name":"n","subnetFile":"/tmp/s.env"}`,
		`{"name":"n","subnetFile":"/tmp/s.env","ipam":{"type":"wgmesh-ipam","dataDir":"/tmp/d"}}`,
	} {
		c, err := Parse([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			IPAM map[string]string `json:"ipam"`
		}
		if err := json.Unmarshal(c.IPAMStdin, &m); err != nil {
			t.Fatal(err)
		}
		if m.IPAM["subnetFile"] != "/tmp/s.env" || m.IPAM["type"] != "wgmesh-ipam" {
			t.Errorf("%s: IPAM stdin %s does not carry the plugin's subnetFile", in, c.IPAMStdin)
		}
	}
	c, err := Parse([]byte(`{"name":"n","subnetFile":"/tmp/s.env","ipam":{"type":"wgmesh-ipam","subnetFile":"/tmp/other"}}`))
	if err != nil || !strings.Contains(string(c.IPAMStdin), `"subnetFile":"/tmp/other"`) {
		t.Errorf("explicit ipam.subnetFile overridden: %s %v", c.IPAMStdin, err)
	}
}

func TestEffectiveMTU(t *testing.T) {
	for _, tc := range []struct{ conf, env, want int }{
		{0, 0, DefaultMTU}, {0, 1380, 1380}, {1400, 1380, 1400},
	} {
		n := NetConf{MTU: tc.conf}
		if got := n.EffectiveMTU(tc.env); got != tc.want {
			t.Errorf("EffectiveMTU(conf=%d, env=%d) = %d, want %d", tc.conf, tc.env, got, tc.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		decode         bool
	}{
		{"not json", `{`, "cannot decode", true},
		{"wrong type", `{"name":"n","mtu":"big"}`, "cannot decode", true},
		{"no name", `{"type":"wgmesh"}`, `"name" is required`, false},
		{"other type", `{"name":"n","type":"bridge"}`, `this plugin is "wgmesh"`, false},
		{"long bridge", `{"name":"n","bridge":"a-very-long-bridge"}`, "longer than 15", false},
		{"slash bridge", `{"name":"n","bridge":"a/b"}`, "not allowed", false},
		{"empty wg", `{"name":"n","wireguardInterface":""}`, "wireguardInterface is empty", false},
		{"same names", `{"name":"n","bridge":"x","wireguardInterface":"x"}`, "both", false},
		{"relative subnet file", `{"name":"n","subnetFile":"subnet.env"}`, "absolute", false},
		{"mtu low", `{"name":"n","mtu":100}`, "out of range", false},
		{"mtu negative", `{"name":"n","mtu":-1}`, "out of range", false},
		{"ipam without type", `{"name":"n","ipam":{"dataDir":"/x"}}`, `no "type"`, false},
		{"ipam path", `{"name":"n","ipam":{"type":"../x"}}`, "not a path", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse(%s) = %v, want error containing %q", tc.in, err, tc.want)
			}
			if got := errors.Is(err, ErrDecode); got != tc.decode {
				t.Errorf("errors.Is(err, ErrDecode) = %v, want %v", got, tc.decode)
			}
		})
	}
}

func FuzzParseNetConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"wgmesh","type":"wgmesh"}`,
		`{"name":"n","bridge":"br0","mtu":1400,"hairpinMode":false,"ipam":{"type":"host-local"}}`,
		`{"name":"n","ipam":null}`, `{"name":"n","ipam":{}}`, `[]`, `null`, `{"name":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever is accepted must be usable as is.
		if ValidIfName("bridge", c.Bridge) != nil || ValidIfName("wg", c.WireguardInterface) != nil {
			t.Fatalf("accepted bad interface names: %+v", c.NetConf)
		}
		if c.IPAM.Type == "" || c.Name == "" {
			t.Fatalf("accepted conf without ipam type or name: %+v", c.NetConf)
		}
		if m := c.EffectiveMTU(0); m < minMTU || m > maxMTU {
			t.Fatalf("effective MTU %d out of range", m)
		}
		var again NetConf
		if err := json.Unmarshal(c.IPAMStdin, &again); err != nil || again.IPAM.Type != c.IPAM.Type {
			t.Fatalf("IPAM stdin %q does not carry ipam type %q: %v", c.IPAMStdin, c.IPAM.Type, err)
		}
	})
}
