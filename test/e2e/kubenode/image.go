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
// entrypoint).
func WriteDockerArchive(w io.Writer, ref, binPath string, prog []byte) error {
	return WriteImageArchive(w, ArchiveImage{
		Ref:        ref,
		Entrypoint: []string{binPath},
		Env:        []string{"PATH=/"},
		Files:      []LayerFile{{Path: binPath, Mode: 0o755, Data: prog}},
	})
}

// ArchiveImage is a one-layer image: its name, its config and its files.
type ArchiveImage struct {
	// Ref is the name the image is imported under (manifest RepoTags).
	Ref             string
	Entrypoint, Cmd []string
	Env             []string
	Files           []LayerFile
}

// LayerFile is one entry of an image's layer: a regular file (Data), a
// symbolic link (Link) or, with neither, a directory.
type LayerFile struct {
	// Path is absolute, inside the image.
	Path string
	Mode int64
	Data []byte
	Link string
}

// WriteImageArchive writes img as a docker-archive tar (what `ctr images
// import` reads): manifest.json with RepoTags, the image config naming the
// layer's diff_id, and the layer tar.
func WriteImageArchive(w io.Writer, img ArchiveImage) error {
	layer, err := layerTar(img.Files)
	if err != nil {
		return err
	}
	diffID := sha256.Sum256(layer)
	config, err := json.Marshal(imageConfig{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      epoch.UTC(),
		Config:       containerConfig{Entrypoint: img.Entrypoint, Cmd: img.Cmd, Env: img.Env},
		RootFS:       rootFS{Type: "layers", DiffIDs: []string{"sha256:" + hex.EncodeToString(diffID[:])}},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	layerName := hex.EncodeToString(diffID[:]) + "/layer.tar"
	manifest, err := json.Marshal([]archiveManifest{{Config: configName, RepoTags: []string{img.Ref}, Layers: []string{layerName}}})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	for _, f := range []struct {
		name string
		data []byte
	}{{configName, config}, {layerName, layer}, {"manifest.json", manifest}} {
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

// layerTar is the image's single layer: every file, each after its parent
// directories (made 0755 where files does not list them), as a real layer
// has them.
func layerTar(files []LayerFile) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, fmt.Errorf("layer path %q is not a clean absolute file path", f.Path)
		}
		rel := f.Path[1:]
		var parents []string
		for d := path.Dir(rel); d != "." && !dirs[d]; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch}); err != nil {
				return nil, err
			}
		}
		var err error
		switch {
		case f.Link != "":
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: rel, Linkname: f.Link, Mode: 0o777, ModTime: epoch})
		case f.Data != nil:
			err = writeFile(tw, rel, f.Mode, f.Data)
		default:
			if !dirs[rel] {
				dirs[rel] = true
				err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: f.Mode, ModTime: epoch})
			}
		}
		if err != nil {
			return nil, err
		}
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
	Config       containerConfig `json:"config"`
	RootFS       rootFS          `json:"rootfs"`
}

type containerConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}
