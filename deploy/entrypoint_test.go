package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// wgmesh-entrypoint picks the iptables backend the host uses. Fake *-save
// commands stand in for the host's rules; dry run keeps the alternatives.
func TestEntrypointPicksTheHostsIptablesBackend(t *testing.T) {
	const hint = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"
	const rules = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n-A INPUT -j DROP\nCOMMIT\n"
	for _, tc := range []struct {
		name        string
		nft, legacy string // what iptables-{nft,legacy}-save print
		mode        string
		want        string
	}{
		{"kubelet hint in nft", hint, rules + rules, "", "backend nft"},
		{"kubelet hint in legacy", rules, hint, "", "backend legacy"},
		{"more legacy rules", "", rules, "", "backend legacy"},
		{"nothing anywhere", "", "", "", "backend nft"},
		{"forced", hint, "", "legacy", "backend legacy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := t.TempDir()
			for name, out := range map[string]string{
				"iptables-nft-save": tc.nft, "ip6tables-nft-save": "",
				"iptables-legacy-save": tc.legacy, "ip6tables-legacy-save": "",
			} {
				script := "#!/bin/sh\ncat <<'X'\n" + out + "X\n"
				if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command("sh", filepath.Join(deployDir(t), "wgmesh-entrypoint"), "echo", "ran")
			cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "WGMESH_IPTABLES_DRY_RUN=1", "WGMESH_IPTABLES_MODE="+tc.mode)
			if tc.mode == "" {
				cmd.Env = append(cmd.Env, "WGMESH_IPTABLES_MODE=auto")
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.want) || !strings.HasSuffix(string(out), "ran\n") {
				t.Errorf("output %q, want %q and then the command", out, tc.want)
			}
		})
	}
	cmd := exec.Command("sh", filepath.Join(deployDir(t), "wgmesh-entrypoint"), "true")
	cmd.Env = append(os.Environ(), "WGMESH_IPTABLES_MODE=iptables")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "want auto, nft or legacy") {
		t.Errorf("bad mode: err=%v out=%q", err, out)
	}
}
