package conformance

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/wgmesh/wgmesh/test/e2e/kubenode"
)

// The images the e2e suite of k8s.io/kubernetes v1.37.2 asks for in the
// tests make conformance runs (test/utils/image/manifest.go in the module;
// `e2e.test --list-images` prints them all, and TestConformanceImageNames
// checks these against it). Nothing can be pulled here, so each is made
// locally and imported into every node's containerd under this exact name;
// docs/conformance.md lists what stands in for what.
const (
	AgnhostRef  = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	BusyboxRef  = "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"
	NginxRef    = "registry.k8s.io/e2e-test-images/nginx:1.27.0-2"
	GlibcDNSRef = "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1"
	PauseRef    = "registry.k8s.io/pause:3.10.2"
)

// imagePath is the PATH of the assembled images (busybox's applets live in
// all four directories).
const imagePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Programs from this machine's Debian packages that the suite runs inside
// agnhost containers: a shell and coreutils (busybox), curl
// (`curl .../dial?...`), nc with -u (`echo hostName | nc -w 1 -u IP 8081`:
// busybox's nc has no -u, netcat-openbsd's has) and the DNS tools the DNS
// tests call (dig, nslookup, getent). Upstream's agnhost is Alpine with the same tools.
var (
	busyboxProgram = hostProgram{Src: "/usr/bin/busybox", Dst: "/bin/busybox", Package: "busybox"}
	agnhostTools   = []hostProgram{
		busyboxProgram,
		{Src: "/usr/bin/curl", Dst: "/usr/bin/curl", Package: "curl"},
		{Src: "/bin/nc.openbsd", Dst: "/usr/bin/nc", Package: "netcat-openbsd"},
		{Src: "/usr/bin/dig", Dst: "/usr/bin/dig", Package: "dnsutils"},
		{Src: "/usr/bin/nslookup", Dst: "/usr/bin/nslookup", Package: "dnsutils"},
		// The DNS tests' /etc/hosts probe runs `getent hosts NAME`.
		{Src: "/usr/bin/getent", Dst: "/usr/bin/getent", Package: "libc-bin"},
		{Src: "/bin/bash", Dst: "/bin/bash", Package: "bash"},
		{Src: "/usr/bin/ss", Dst: "/usr/bin/ss", Package: "iproute2"},
	}
)

// etcFiles are the few files a base image has that programs look for, with
// the user and group upstream's agnhost Dockerfile adds.
var etcFiles = []kubenode.LayerFile{
	{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n" +
		"user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n")},
	{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnogroup:x:65534:\nuser-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n")},
	{Path: "/etc/nsswitch.conf", Mode: 0o644, Data: []byte("hosts: files dns\n")},
	{Path: "/tmp", Mode: 0o1777},
	{Path: "/root", Mode: 0o700},
}

// BuildImages makes the suite's images into dir and returns their
// docker-archive files (to import on every node). k8sBin holds agnhost
// (test/e2e/tools/build-k8s.sh agnhost); repo is this module's root.
func BuildImages(ctx context.Context, k8sBin, repo, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	agnhostBin := filepath.Join(k8sBin, "agnhost")
	agnhost, err := os.ReadFile(agnhostBin)
	if err != nil {
		return nil, fmt.Errorf("conformance: agnhost not built (test/e2e/tools/build-k8s.sh agnhost): %w", err)
	}
	agnhostFS, err := rootfs(ctx, agnhostTools)
	if err != nil {
		return nil, err
	}
	extra, err := agnhostFiles(k8sBin, agnhost)
	if err != nil {
		return nil, err
	}
	agnhostFS = append(extra, agnhostFS...)
	busyboxFS, err := rootfs(ctx, []hostProgram{busyboxProgram})
	if err != nil {
		return nil, err
	}
	agnhostLayer, err := kubenode.FilesLayer(agnhostFS)
	if err != nil {
		return nil, err
	}
	busyboxLayer, err := kubenode.FilesLayer(busyboxFS)
	if err != nil {
		return nil, err
	}
	images := []struct {
		ref    string
		config kubenode.ContainerConfig
		layer  []byte
	}{
		{AgnhostRef, kubenode.ContainerConfig{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}, Env: []string{imagePath}}, agnhostLayer},
		// Stand-in: the tests that run nginx only need a container serving
		// HTTP on port 80; the same layer as agnhost, so the nodes store it
		// once.
		{NginxRef, kubenode.ContainerConfig{Entrypoint: []string{"/agnhost", "netexec", "--http-port=80"}, Env: []string{imagePath}}, agnhostLayer},
		// Stand-in: upstream is Debian with dnsutils, the DNS tests' "glibc"
		// prober (`sh -c` with dig and getent); agnhost's files are exactly
		// such programs.
		{GlibcDNSRef, kubenode.ContainerConfig{Env: []string{imagePath}}, agnhostLayer},
		{BusyboxRef, kubenode.ContainerConfig{Cmd: []string{"sh"}, Env: []string{imagePath}}, busyboxLayer},
	}
	var tars []string
	for i, img := range images {
		out := filepath.Join(dir, fmt.Sprintf("suite-%d.tar", i))
		if err := writeArchive(out, img.ref, img.config, img.layer); err != nil {
			return nil, err
		}
		tars = append(tars, out)
	}
	pause, err := kubenode.BuildImage(ctx, repo, dir, kubenode.Image{Ref: PauseRef, Package: "./test/e2e/images/pause", Binary: "/pause"})
	if err != nil {
		return nil, err
	}
	return append(tars, pause), nil
}

// rootfs is the files of an image made of host programs: each with its
// libraries, busybox's applets (except where a real program is carried)
// and etcFiles.
func rootfs(ctx context.Context, progs []hostProgram) ([]kubenode.LayerFile, error) {
	var files []kubenode.LayerFile
	real := map[string]bool{}
	for _, p := range progs {
		f, err := p.files(ctx)
		if err != nil {
			return nil, err
		}
		files = append(files, f...)
		real[filepath.Base(p.Dst)] = true
	}
	applets, err := busyboxApplets(ctx, busyboxProgram.Src, real)
	if err != nil {
		return nil, err
	}
	files = append(files, applets...)
	files = append(files, etcFiles...)
	return dedupe(files), nil
}

func writeArchive(path, ref string, config kubenode.ContainerConfig, layer []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := kubenode.WriteImageArchive(f, []string{ref}, config, layer); err != nil {
		return fmt.Errorf("conformance: image %s: %w", ref, err)
	}
	return f.Close()
}

// agnhostFiles are what upstream's agnhost Dockerfile adds besides its
// packages: the program (also as /agnhost-2), the porter's TLS certificate
// and key (its HTTPS ports, which the Proxy tests call) from the module's
// source, and /uploads.
func agnhostFiles(k8sBin string, agnhost []byte) ([]kubenode.LayerFile, error) {
	src, err := agnhostSource(k8sBin)
	if err != nil {
		return nil, err
	}
	files := []kubenode.LayerFile{
		{Path: "/agnhost", Mode: 0o755, Data: agnhost},
		{Path: "/agnhost-2", Link: "agnhost"},
		{Path: "/uploads", Mode: 0o755},
	}
	for _, name := range []string{"localhost.crt", "localhost.key"} {
		data, err := os.ReadFile(filepath.Join(src, "porter", name))
		if err != nil {
			return nil, fmt.Errorf("conformance: agnhost's %s: %w", name, err)
		}
		files = append(files, kubenode.LayerFile{Path: "/" + name, Mode: 0o644, Data: data})
	}
	return files, nil
}

// agnhostSource is test/images/agnhost in the module cache, at the version
// the cached agnhost was built from (build-k8s.sh links agnhost to
// agnhost-<version>).
func agnhostSource(k8sBin string) (string, error) {
	version := versionOf(filepath.Join(k8sBin, "agnhost"))
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("conformance: go env GOMODCACHE: %w", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "k8s.io", "kubernetes@"+version, "test", "images", "agnhost")
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("conformance: agnhost's source (build-k8s.sh agnhost downloads it): %w", err)
	}
	return dir, nil
}
