package conformance

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/internal/testutil"
	"github.com/wgmesh/wgmesh/test/e2e/kubenode"
)

func TestParseLdd(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      []string
		wantErr   bool
	}{
		{
			name: "dynamic",
			out: "\tlinux-vdso.so.1 (0x00007ffd)\n" +
				"\tlibbsd.so.0 => /lib/x86_64-linux-gnu/libbsd.so.0 (0x00007fb9)\n" +
				"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fb9)\n" +
				"\t/lib64/ld-linux-x86-64.so.2 (0x00007fb9)\n",
			want: []string{"/lib/x86_64-linux-gnu/libbsd.so.0", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"},
		},
		{name: "static", out: "\tnot a dynamic executable\n\tstatically linked\n", want: nil},
		{name: "missing library", out: "\tlibfoo.so.1 => not found\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLdd(tc.out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// The agnhost image's tools run from the assembled files alone: unpacked
// into a directory and run under chroot, the shell, curl, an nc that has
// -u and dig start (each only prints its version or usage: nothing is sent).
func TestAgnhostToolsRunFromTheirRootfs(t *testing.T) {
	testutil.RequireRoot(t)
	for _, p := range agnhostTools {
		if _, err := os.Stat(p.Src); err != nil {
			testutil.SkipUnlessCI(t, p.Src+" missing (apt-get install "+p.Package+"; .ci/run installs it)")
		}
	}
	files, err := rootfs(t.Context(), agnhostTools)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	unpack(t, root, files)
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"/bin/sh", "-c", "echo shell ok"}, "shell ok"},
		{[]string{"curl", "--version"}, "curl 7"},
		{[]string{"sh", "-c", "nc -h 2>&1"}, "-u\t\tUDP mode"},
		{[]string{"dig", "-v"}, "DiG 9"},
		{[]string{"getent", "--version"}, "getent ("},
		{[]string{"bash", "-c", "echo bash $BASH_VERSION"}, "bash 5"},
		{[]string{"ss", "-V"}, "ss utility, iproute2"},
		{[]string{"sh", "-c", "cat /etc/nsswitch.conf; ls -d /tmp"}, "hosts: files dns"},
	} {
		cmd := exec.Command("chroot", append([]string{root}, tc.argv...)...)
		cmd.Env = []string{imagePath}
		out, err := cmd.CombinedOutput()
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%q in the rootfs: %v\n%s\nwant %q in it", tc.argv, err, out, tc.want)
		}
	}
}

// unpack writes layer files under root, as a runtime would.
func unpack(t *testing.T, root string, files []kubenode.LayerFile) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case f.Link != "":
			err = os.Symlink(f.Link, p)
		case f.Data != nil:
			err = os.WriteFile(p, f.Data, os.FileMode(f.Mode))
		default:
			err = os.MkdirAll(p, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
