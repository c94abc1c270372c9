package bridgenf

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestEnsureFamiliesAndMissingModule(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string // under root/net/bridge; nil: no net/bridge at all
		v4, v6  bool
		want    int
		wantErr error
		after   map[string]string
	}{
		{name: "module not loaded", v4: true, wantErr: ErrMissing},
		{name: "IPv4 sets only iptables", v4: true,
			files: map[string]string{"bridge-nf-call-iptables": "0\n", "bridge-nf-call-ip6tables": "0\n"}, want: 1,
			after: map[string]string{"bridge-nf-call-iptables": "1\n", "bridge-nf-call-ip6tables": "0\n"}},
		{name: "dual-stack sets both", v4: true, v6: true,
			files: map[string]string{"bridge-nf-call-iptables": "0\n", "bridge-nf-call-ip6tables": "0\n"}, want: 2,
			after: map[string]string{"bridge-nf-call-iptables": "1\n", "bridge-nf-call-ip6tables": "1\n"}},
		{name: "already on: nothing written", v4: true, v6: true,
			files: map[string]string{"bridge-nf-call-iptables": "1\n", "bridge-nf-call-ip6tables": "1\n"}},
		{name: "no family: nothing to do", files: map[string]string{"bridge-nf-call-iptables": "0\n"},
			after: map[string]string{"bridge-nf-call-iptables": "0\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "net/bridge")
			if tc.files != nil {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				for f, v := range tc.files {
					if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			n, err := Ensure(root, tc.v4, tc.v6)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if n != tc.want {
				t.Errorf("changed %d, want %d", n, tc.want)
			}
			for f, v := range tc.after {
				b, _ := os.ReadFile(filepath.Join(dir, f))
				if string(b) != v {
					t.Errorf("%s = %q, want %q", f, b, v)
				}
			}
		})
	}
}
