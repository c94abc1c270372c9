package install

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/wgmesh/wgmesh/internal/cniconf"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
)

const (
	k3sBinDir  = "/var/lib/rancher/k3s/data/cni"
	k3sConfDir = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
)

// fakeNode is a host root laid out like a k3s node (containerd config v3),
// plus a source dir holding plugin binaries.
type fakeNode struct {
	root, src string
}

func newFakeNode(t *testing.T) fakeNode {
	t.Helper()
	n := fakeNode{root: t.TempDir(), src: t.TempDir()}
	mkdir(t, n.host(k3sBinDir))
	mkdir(t, n.host(filepath.Dir(DefaultContainerdConfig)))
	if err := os.WriteFile(n.host(DefaultContainerdConfig), []byte(k3sV3), 0o600); err != nil {
		t.Fatal(err)
	}
	// k3s links its plugins to its multi-call binary; the link target is a
	// host path that does not resolve inside the container.
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap", "bandwidth"} {
		if err := os.Symlink("/var/lib/rancher/k3s/data/current/bin/cni", n.host(filepath.Join(k3sBinDir, p))); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range append(append([]string{}, OwnPlugins...), SupportPlugins...) {
		if err := os.WriteFile(filepath.Join(n.src, p), []byte("#!binary "+p+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func (n fakeNode) host(p string) string { return filepath.Join(n.root, p) }

func (n fakeNode) options(t *testing.T) Options {
	return Options{
		HostRoot:         n.root,
		ContainerdConfig: DefaultContainerdConfig,
		SourceDir:        n.src,
		StateDir:         "/var/lib/wgmesh",
		WriteConflist:    ConflistNow,
		SubnetFile:       subnetenv.DefaultPath,
		Bridge:           "cni0",
		Interface:        "wgmesh0",
		Logger:           slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
}

func (n fakeNode) writeSubnetEnv(t *testing.T) {
	t.Helper()
	err := subnetenv.Write(n.host(subnetenv.DefaultPath), subnetenv.Env{
		Network: netip.MustParsePrefix("10.42.0.0/16"),
		Subnet:  netip.MustParsePrefix("10.42.1.0/24"),
		MTU:     1420,
	})
	if err != nil {
		t.Fatal(err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestInstallOnK3sFindsDirsFromContainerdConfig(t *testing.T) {
	n := newFakeNode(t)
	if err := Run(context.Background(), n.options(t)); err != nil {
		t.Fatal(err)
	}
	for _, p := range OwnPlugins {
		got, err := os.ReadFile(n.host(filepath.Join(k3sBinDir, p)))
		if err != nil || string(got) != "#!binary "+p+"\n" {
			t.Errorf("%s: %q, %v", p, got, err)
		}
		if fi, _ := os.Stat(n.host(filepath.Join(k3sBinDir, p))); fi.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v, want 0755", p, fi.Mode().Perm())
		}
	}
	// k3s's own portmap, bandwidth and loopback are left alone.
	for _, p := range SupportPlugins {
		if fi, err := os.Lstat(n.host(filepath.Join(k3sBinDir, p))); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("k3s's %s was replaced", p)
		}
	}
	conf, err := os.ReadFile(n.host(filepath.Join(k3sConfDir, ConflistName)))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := RenderConflist(ConflistConfig{Bridge: "cni0", WireguardInterface: "wgmesh0", SubnetFile: subnetenv.DefaultPath})
	if !bytes.Equal(conf, want) {
		t.Errorf("conflist:\n%s\nwant:\n%s", conf, want)
	}
	// What containerd's CNI loader picks from the conf dir is ours.
	files, err := libcni.ConfFiles(n.host(k3sConfDir), []string{".conf", ".conflist", ".json"})
	if err != nil || len(files) != 1 || filepath.Base(files[0]) != ConflistName {
		t.Errorf("libcni sees %q (%v) in the conf dir", files, err)
	}
	if list, err := libcni.LoadConfList(n.host(k3sConfDir), "wgmesh"); err != nil || list.Plugins[0].Network.Type != "wgmesh" {
		t.Errorf("libcni.LoadConfList: %v", err)
	}
	if fi, _ := os.Stat(n.host("/var/lib/wgmesh")); fi == nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode: %v", fi)
	}
	for _, dir := range []string{k3sBinDir, k3sConfDir} {
		for _, name := range listDir(t, n.host(dir)) {
			if isStaleTemp(name, append([]string{ConflistName}, append(OwnPlugins, SupportPlugins...)...)) {
				t.Errorf("temp file %s left in %s", name, dir)
			}
		}
	}
}

func TestInstallSecondRunChangesNothing(t *testing.T) {
	n := newFakeNode(t)
	o := n.options(t)
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	paths := []string{filepath.Join(k3sConfDir, ConflistName)}
	for _, p := range OwnPlugins {
		paths = append(paths, filepath.Join(k3sBinDir, p))
	}
	before := map[string]uint64{}
	for _, p := range paths {
		before[p] = inode(t, n.host(p))
	}
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if inode(t, n.host(p)) != before[p] {
			t.Errorf("second run replaced %s", p)
		}
	}
	// A new build of a plugin is picked up.
	os.WriteFile(filepath.Join(n.src, "wgmesh"), []byte("#!binary wgmesh v2\n"), 0o755)
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(n.host(filepath.Join(k3sBinDir, "wgmesh"))); string(got) != "#!binary wgmesh v2\n" {
		t.Errorf("upgraded plugin not installed: %q", got)
	}
}

func TestInstallKubeletPathsFromFlags(t *testing.T) {
	n := fakeNode{root: t.TempDir(), src: newFakeNode(t).src}
	mkdir(t, n.host("/opt/cni/bin"))
	o := n.options(t)
	o.ContainerdConfig = "/etc/containerd/config.toml" // absent: never read
	o.CNIBinDir, o.CNIConfDir = "/opt/cni/bin", "/etc/cni/net.d"
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	// A bare /opt/cni/bin (k3s with --flannel-backend=none; kind has no
	// bandwidth) gets the support plugins.
	for _, p := range append(append([]string{}, OwnPlugins...), SupportPlugins...) {
		if _, err := os.Stat(n.host("/opt/cni/bin/" + p)); err != nil {
			t.Errorf("%s not installed: %v", p, err)
		}
	}
	if _, err := os.Stat(n.host("/etc/cni/net.d/" + ConflistName)); err != nil {
		t.Error(err)
	}
}

func TestInstallErrorsSayWhatToDo(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(n fakeNode, o *Options)
		want  string
	}{
		{"bin dir not mounted", func(n fakeNode, o *Options) { os.RemoveAll(n.host(k3sBinDir)) }, "mount the host's directory"},
		{"no containerd config", func(n fakeNode, o *Options) { os.Remove(n.host(DefaultContainerdConfig)) }, "pass --cni-bin-dir and --cni-conf-dir"},
		{"plugin missing from source", func(n fakeNode, o *Options) { os.Remove(filepath.Join(n.src, "wgmesh-ipam")) }, "read plugin wgmesh-ipam"},
		{"chained plugin nowhere", func(n fakeNode, o *Options) {
			os.Remove(n.host(filepath.Join(k3sBinDir, "bandwidth")))
			os.Remove(filepath.Join(n.src, "bandwidth"))
		}, "pods need the bandwidth plugin, which is in no CNI bin dir"},
		{"bad mode", func(n fakeNode, o *Options) { o.WriteConflist = "later" }, "want never, now or when-ready"},
		{"relative path", func(n fakeNode, o *Options) { o.CNIBinDir = "opt/cni/bin" }, "must be an absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newFakeNode(t)
			o := n.options(t)
			tc.setup(n, &o)
			err := Run(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if _, err := os.Stat(n.host(filepath.Join(k3sConfDir, ConflistName))); err == nil {
				t.Error("a failed install wrote the conflist")
			}
		})
	}
}

// The conflist appears only once the agent is ready: a valid subnet.env and
// a 200 from the ready URL. Until then the node stays NotReady, as it should.
func TestInstallWritesConflistOnlyWhenAgentReady(t *testing.T) {
	n := newFakeNode(t)
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && ready.Load() {
			io.WriteString(w, "ok")
			return
		}
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	o := n.options(t)
	o.WriteConflist = ConflistWhenReady
	o.ReadyURL = srv.URL + "/readyz"
	conflist := n.host(filepath.Join(k3sConfDir, ConflistName))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()

	waitFor(t, "binaries installed", func() bool {
		_, err := os.Stat(n.host(filepath.Join(k3sBinDir, "wgmesh-ipam")))
		return err == nil
	})
	n.writeSubnetEnv(t)
	time.Sleep(2 * readyPoll) // subnet.env alone is not enough: /readyz says 503
	if _, err := os.Stat(conflist); err == nil {
		t.Fatal("conflist written while /readyz answered 503")
	}
	ready.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(conflist); err != nil {
		t.Fatalf("conflist not written once ready: %v", err)
	}
}

func TestInstallWhenReadyGivesUpWithContext(t *testing.T) {
	n := newFakeNode(t)
	o := n.options(t)
	o.WriteConflist = ConflistWhenReady
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := Run(ctx, o)
	if err == nil || !strings.Contains(err.Error(), "agent not ready") {
		t.Fatalf("err = %v, want agent not ready", err)
	}
	if _, err := os.Stat(n.host(filepath.Join(k3sConfDir, ConflistName))); err == nil {
		t.Error("conflist written without a subnet file")
	}
}

// With --watch, a conflist or plugin that went missing (an upgrade, a person)
// comes back.
func TestInstallWatchRepairs(t *testing.T) {
	n := newFakeNode(t)
	n.writeSubnetEnv(t)
	o := n.options(t)
	o.WriteConflist = ConflistWhenReady
	o.Watch = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	conflist := n.host(filepath.Join(k3sConfDir, ConflistName))
	plugin := n.host(filepath.Join(k3sBinDir, "wgmesh"))
	exists := func(p string) func() bool {
		return func() bool { _, err := os.Stat(p); return err == nil }
	}
	waitFor(t, "first install", exists(conflist))
	os.Remove(conflist)
	os.Remove(plugin)
	waitFor(t, "conflist repaired", exists(conflist))
	waitFor(t, "plugin repaired", exists(plugin))
}

func TestUninstallRemovesOnlyOurFiles(t *testing.T) {
	n := newFakeNode(t)
	o := n.options(t)
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	other := n.host(filepath.Join(k3sConfDir, "05-other.conflist"))
	os.WriteFile(other, []byte("{}"), 0o644)
	o.Uninstall = true
	for range 2 { // idempotent
		if err := Run(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
	got := strings.Join(listDir(t, n.host(k3sBinDir)), " ")
	if want := "bandwidth bridge host-local loopback portmap"; got != want {
		t.Errorf("bin dir holds %q, want %q", got, want)
	}
	if got := strings.Join(listDir(t, n.host(k3sConfDir)), " "); got != "05-other.conflist" {
		t.Errorf("conf dir holds %q", got)
	}
}

func TestShadowingConfigs(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"00-multus.conf", "10-flannel.conflist", "10-wgmesh.conflist", "99-loopback.conf", "05-notes.txt", ".10-a.conflist.wgmesh-tmp-1"} {
		os.WriteFile(filepath.Join(dir, name), nil, 0o644)
	}
	got := strings.Join(shadowingConfigs(dir), " ")
	if want := "00-multus.conf 10-flannel.conflist"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// The conflist install writes by default is the repository's
// conflist/10-wgmesh.conflist, loads with libcni, and its wgmesh plugin
// config passes the plugin's own parser.
func TestRenderConflistMatchesRepoAndParses(t *testing.T) {
	got, err := RenderConflist(ConflistConfig{Bridge: "cni0", WireguardInterface: "wgmesh0", SubnetFile: subnetenv.DefaultPath})
	if err != nil {
		t.Fatal(err)
	}
	_, file, _, _ := runtime.Caller(0)
	repo, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "conflist", ConflistName))
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, got, repo) {
		t.Errorf("rendered conflist differs from conflist/%s:\n%s\nrepo:\n%s", ConflistName, got, repo)
	}
	custom, err := RenderConflist(ConflistConfig{Bridge: "br-pods", WireguardInterface: "wg7", SubnetFile: "/run/x/subnet.env"})
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{got, custom} {
		list, err := libcni.ConfListFromBytes(data)
		if err != nil {
			t.Fatalf("libcni: %v\n%s", err, data)
		}
		if list.CNIVersion != "1.1.0" || len(list.Plugins) != 3 || list.Plugins[1].Network.Type != "portmap" || list.Plugins[2].Network.Type != "bandwidth" {
			t.Fatalf("chain: %+v", list)
		}
		var plugin map[string]any
		json.Unmarshal(list.Plugins[0].Bytes, &plugin)
		plugin["cniVersion"], plugin["name"] = list.CNIVersion, list.Name
		raw, _ := json.Marshal(plugin)
		conf, err := cniconf.Parse(raw)
		if err != nil {
			t.Fatalf("cniconf.Parse: %v", err)
		}
		if data := string(data); strings.Contains(data, "br-pods") && (conf.Bridge != "br-pods" || conf.WireguardInterface != "wg7" || conf.SubnetFile != "/run/x/subnet.env") {
			t.Errorf("custom conf parsed to %+v", conf.NetConf)
		}
		if ipam, _ := plugin["ipam"].(map[string]any); strings.Contains(string(data), "br-pods") && ipam["subnetFile"] != "/run/x/subnet.env" {
			t.Errorf("a custom subnet file is not passed to wgmesh-ipam: %s", list.Plugins[0].Bytes)
		}
	}
	if _, err := RenderConflist(ConflistConfig{Bridge: "cni0"}); err == nil {
		t.Error("incomplete config rendered")
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	xs, _ := json.Marshal(x)
	ys, _ := json.Marshal(y)
	return bytes.Equal(xs, ys)
}

// waitFor polls cond; the deadline only bounds a hang, it measures nothing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Older k3s: containerd config version 2 names data/current/bin, and
// data/current is an absolute symlink to data/<id>. Seen from the container
// (host / at HostRoot) that link must be followed inside the host mount.
func TestInstallFollowsK3sCurrentSymlinkInsideHostRoot(t *testing.T) {
	n := newFakeNode(t)
	mkdir(t, n.host("/var/lib/rancher/k3s/data/0d2f1c/bin"))
	if err := os.Symlink("/var/lib/rancher/k3s/data/0d2f1c", n.host("/var/lib/rancher/k3s/data/current")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.host(DefaultContainerdConfig), []byte(k3sV2Current), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), n.options(t)); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(append([]string{}, OwnPlugins...), SupportPlugins...) {
		if _, err := os.Stat(n.host("/var/lib/rancher/k3s/data/0d2f1c/bin/" + p)); err != nil {
			t.Errorf("%s not in data/<id>/bin: %v", p, err)
		}
	}
}

// k3s with --flannel-backend=none leaves containerd at its defaults: wgmesh
// goes to /opt/cni/bin and /etc/cni/net.d, with the support plugins k3s
// keeps in its own data dir.
func TestInstallOnK3sWithFlannelNoneUsesContainerdDefaults(t *testing.T) {
	n := newFakeNode(t)
	mkdir(t, n.host(DefaultCNIBinDir))
	if err := os.WriteFile(n.host(DefaultContainerdConfig), []byte(k3sV3FlannelNone), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), n.options(t)); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(append([]string{}, OwnPlugins...), SupportPlugins...) {
		if _, err := os.Stat(n.host(filepath.Join(DefaultCNIBinDir, p))); err != nil {
			t.Errorf("%s not in %s: %v", p, DefaultCNIBinDir, err)
		}
	}
	if _, err := os.Stat(n.host(filepath.Join(DefaultCNIConfDir, ConflistName))); err != nil {
		t.Error(err)
	}
	if entries, _ := os.ReadDir(n.host(k3sConfDir)); len(entries) > 0 {
		t.Errorf("wrote into k3s's flannel conf dir: %v", entries)
	}
}
