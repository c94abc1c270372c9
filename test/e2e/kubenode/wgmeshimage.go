package kubenode

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// WgmeshImageRef is the image deploy/'s DaemonSet runs (every container of
// it); the lab imports the wgmesh image under exactly this name.
const WgmeshImageRef = "ghcr.io/wgmesh/wgmesh:latest"

// WgmeshImageConfig is the Dockerfile's final stage: no ENTRYPOINT and no
// WORKDIR of its own, CMD ["wgmesh-agent", "--help"], and the PATH that
// debian:bookworm-slim sets (ENV is inherited from the base image).
var WgmeshImageConfig = ContainerConfig{
	Cmd: []string{"wgmesh-agent", "--help"},
	Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
}

// wgmeshImageBinaries are the Dockerfile's `COPY --from=build /out/
// /usr/local/bin/` (what its build stage compiles) and `COPY
// deploy/wgmesh-entrypoint /usr/local/bin/`: name -> where the lab has it.
func wgmeshImageBinaries(l *lab.Lab) map[string]string {
	return map[string]string{
		"wgmesh":            filepath.Join(l.Bin, "wgmesh"),
		"wgmesh-ipam":       filepath.Join(l.Bin, "wgmesh-ipam"),
		"wgmesh-agent":      filepath.Join(l.Bin, "wgmesh-agent"),
		"wgmesh-hostprep":   filepath.Join(l.Bin, "wgmesh-hostprep"),
		"portmap":           filepath.Join(l.RefBin, "portmap"),
		"bandwidth":         filepath.Join(l.RefBin, "bandwidth"),
		"loopback":          filepath.Join(l.RefBin, "loopback"),
		"wgmesh-entrypoint": filepath.Join(l.Repo, "deploy", "wgmesh-entrypoint"),
	}
}

// BuildWgmeshImage builds the wgmesh image without Docker from the
// Dockerfile's ingredients and writes it as a docker-archive at
// dir/wgmesh-image.tar, named by refs (default WgmeshImageRef). Layer 1 is
// the final stage's Debian root file system
// (test/e2e/tools/build-wgmesh-rootfs.sh: debian:bookworm-slim's packages
// plus iptables, iproute2 and wireguard-tools, cached by package versions);
// layer 2 is /usr/local/bin with `make build`'s and `make ref-plugins`'
// binaries and deploy/wgmesh-entrypoint. docs/lab.md lists how this differs
// from `docker build`.
func BuildWgmeshImage(ctx context.Context, l *lab.Lab, dir string, refs ...string) (string, error) {
	if len(refs) == 0 {
		refs = []string{WgmeshImageRef}
	}
	script := filepath.Join(l.Repo, "test", "e2e", "tools", "build-wgmesh-rootfs.sh")
	cmd := exec.CommandContext(ctx, "bash", script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("wgmesh image: %s: %w\n%s", script, err, stderr.Bytes())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	rootfs, err := os.ReadFile(lines[len(lines)-1])
	if err != nil {
		return "", fmt.Errorf("wgmesh image: root file system: %w", err)
	}
	bins, err := binariesLayer("/usr/local/bin", wgmeshImageBinaries(l))
	if err != nil {
		return "", fmt.Errorf("wgmesh image: %w", err)
	}
	archive := filepath.Join(dir, "wgmesh-image.tar")
	f, err := os.Create(archive)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := WriteImageArchive(f, refs, WgmeshImageConfig, rootfs, bins); err != nil {
		return "", fmt.Errorf("wgmesh image: %w", err)
	}
	return archive, f.Close()
}

// binariesLayer is a layer holding each file of files (name -> source
// path) as dir/name, mode 0755. dir's parents are left to the lower layer.
func binariesLayer(dir string, files map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	rel := strings.TrimPrefix(dir, "/")
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: epoch}); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		data, err := os.ReadFile(files[name])
		if err != nil {
			return nil, fmt.Errorf("%s (make build ref-plugins): %w", name, err)
		}
		if err := writeFile(tw, path.Join(rel, name), 0o755, data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
