package kubenode

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"time"
)

// Image is a one-binary container image built from a main package of this
// module, so the lab needs no registry.
type Image struct {
	// Ref is the image name pods use, with a registry part so that
	// containerd does not rewrite it to docker.io/library/...
	Ref string
	// Package is the Go main package, relative to the module root.
	Package string
	// Binary is the absolute path of the program inside the image; it is
	// also the entrypoint.
	Binary string
}

// The lab's images. The pause image is pinned as containerd's sandbox image;
// the workload image is what test pods run (with imagePullPolicy: Never).
var (
	PauseImage = Image{Ref: "wgmesh.test/pause:lab", Package: "./test/e2e/images/pause", Binary: "/pause"}
	// WorkloadImage answers HTTP on 8080 (GET / -> "pod=NAME ip=IP") and
	// echoes UDP on 8081.
	WorkloadImage = Image{Ref: "wgmesh.test/workload:lab", Package: "./test/e2e/images/workload", Binary: "/workload"}
)

// WorkloadHTTPPort and WorkloadUDPPort are where WorkloadImage listens.
const (
	WorkloadHTTPPort = 8080
	WorkloadUDPPort  = 8081
)

// BuildImage compiles img's package as a static binary and packs it as a
// docker-archive tar (what `ctr images import` reads) at dir/<name>.tar.
// moduleRoot is the directory holding this module's go.mod.
func BuildImage(ctx context.Context, moduleRoot, dir string, img Image) (string, error) {
	bin := filepath.Join(dir, path.Base(img.Binary))
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, img.Package)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build image %s from %s: %w\n%s", img.Ref, img.Package, err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		return "", fmt.Errorf("build image %s: %w", img.Ref, err)
	}
	out := bin + ".tar"
	f, err := os.Create(out)
	if err != nil {
		return "", fmt.Errorf("build image %s: %w", img.Ref, err)
	}
	defer f.Close()
	if err := WriteDockerArchive(f, img.Ref, img.Binary, prog); err != nil {
		return "", fmt.Errorf("build image %s: %w", img.Ref, err)
	}
	return out, f.Close()
}

// epoch is the modification time of every file in the images, so that the
// same binary always gives the same image digest.
var epoch = time.Unix(0, 0)

// WriteDockerArchive writes the docker-archive form of a one-layer image
// named ref whose only file is the executable prog at binPath (also the
// entrypoint): manifest.json with RepoTags, the image config naming the
// layer's diff_id, and the layer tar.
func WriteDockerArchive(w io.Writer, ref, binPath string, prog []byte) error {
	if !path.IsAbs(binPath) {
		return fmt.Errorf("binary path %q is not absolute", binPath)
	}
	layer, err := layerTar(binPath, prog)
	if err != nil {
		return err
	}
	return WriteImageArchive(w, []string{ref}, ContainerConfig{Entrypoint: []string{binPath}, Env: []string{"PATH=/"}}, layer)
}

// WriteImageArchive writes the docker-archive form of an image named by
// every one of refs, whose layers (uncompressed tars, lowest first) are
// layers: manifest.json with RepoTags, the image config naming each
// layer's diff_id, and the layer tars.
func WriteImageArchive(w io.Writer, refs []string, cfg ContainerConfig, layers ...[]byte) error {
	var diffIDs, layerNames []string
	for _, l := range layers {
		sum := sha256.Sum256(l)
		diffIDs = append(diffIDs, "sha256:"+hex.EncodeToString(sum[:]))
		layerNames = append(layerNames, hex.EncodeToString(sum[:])+"/layer.tar")
	}
	config, err := json.Marshal(imageConfig{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      epoch.UTC(),
		Config:       cfg,
		RootFS:       rootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	manifest, err := json.Marshal([]archiveManifest{{Config: configName, RepoTags: refs, Layers: layerNames}})
	if err != nil {
		return err
	}
	type file struct {
		name string
		data []byte
	}
	files := []file{{configName, config}}
	for i, l := range layers {
		files = append(files, file{layerNames[i], l})
	}
	files = append(files, file{"manifest.json", manifest})
	tw := tar.NewWriter(w)
	for _, f := range files {
		if dir := path.Dir(f.name); dir != "." {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: epoch}); err != nil {
				return err
			}
		}
		if err := writeFile(tw, f.name, 0o644, f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// layerTar is the image's single layer: the program, mode 0755.
func layerTar(binPath string, prog []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	rel := binPath[1:]
	// Parent directories first, as a real layer has them.
	var dirs []string
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		dirs = append([]string{d}, dirs...)
	}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	if err := writeFile(tw, rel, 0o755, prog); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// The docker-archive JSON documents, with only the fields containerd reads.
type archiveManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

type imageConfig struct {
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	Created      time.Time       `json:"created"`
	Config       ContainerConfig `json:"config"`
	RootFS       rootFS          `json:"rootfs"`
}

// ContainerConfig is the part of an image config that says how its
// containers run (the Dockerfile's ENTRYPOINT, CMD, ENV, WORKDIR).
type ContainerConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}
