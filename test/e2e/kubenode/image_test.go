package kubenode

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
)

func readTar(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			files[h.Name] = data
		}
	}
}

func TestDockerArchiveIsSelfConsistent(t *testing.T) {
	prog := []byte("\x7fELF not really")
	var buf bytes.Buffer
	if err := WriteDockerArchive(&buf, "wgmesh.test/x:lab", "/bin/x", prog); err != nil {
		t.Fatal(err)
	}
	files := readTar(t, buf.Bytes())

	var manifest []archiveManifest
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(manifest) != 1 || len(manifest[0].RepoTags) != 1 || manifest[0].RepoTags[0] != "wgmesh.test/x:lab" || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest = %+v", manifest)
	}
	config, ok := files[manifest[0].Config]
	if !ok {
		t.Fatalf("config %s missing", manifest[0].Config)
	}
	if sum := sha256.Sum256(config); hex.EncodeToString(sum[:])+".json" != manifest[0].Config {
		t.Errorf("config file name %s is not its digest", manifest[0].Config)
	}
	var ic imageConfig
	if err := json.Unmarshal(config, &ic); err != nil {
		t.Fatal(err)
	}
	layer, ok := files[manifest[0].Layers[0]]
	if !ok {
		t.Fatalf("layer %s missing", manifest[0].Layers[0])
	}
	sum := sha256.Sum256(layer)
	if len(ic.RootFS.DiffIDs) != 1 || ic.RootFS.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("diff_ids %v do not name the layer (sha256:%x)", ic.RootFS.DiffIDs, sum)
	}
	if len(ic.Config.Entrypoint) != 1 || ic.Config.Entrypoint[0] != "/bin/x" {
		t.Errorf("entrypoint = %v", ic.Config.Entrypoint)
	}

	// The layer holds the program, executable, under its path.
	tr := tar.NewReader(bytes.NewReader(layer))
	var found bool
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "bin/x" {
			found = true
			got, _ := io.ReadAll(tr)
			if !bytes.Equal(got, prog) || h.Mode != 0o755 {
				t.Errorf("bin/x: mode %o, content %q", h.Mode, got)
			}
		}
	}
	if !found {
		t.Error("layer has no bin/x")
	}
}

func TestDockerArchiveIsReproducible(t *testing.T) {
	var a, b bytes.Buffer
	for _, w := range []*bytes.Buffer{&a, &b} {
		if err := WriteDockerArchive(w, "wgmesh.test/x:lab", "/x", []byte("prog")); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two archives of the same program differ")
	}
}

func TestDockerArchiveRejectsRelativeBinary(t *testing.T) {
	if err := WriteDockerArchive(io.Discard, "wgmesh.test/x:lab", "x", nil); err == nil {
		t.Error("relative binary path accepted")
	}
}

// A layer of many files: each parent directory once and before its
// entries, symlinks as symlinks, directories with their own mode.
func TestFilesLayer(t *testing.T) {
	layer, err := FilesLayer([]LayerFile{
		{Path: "/bin/busybox", Mode: 0o755, Data: []byte("bb")},
		{Path: "/bin/sh", Link: "/bin/busybox"},
		{Path: "/usr/lib/x/libc.so.6", Mode: 0o755, Data: []byte("libc")},
		{Path: "/usr/lib/x/libm.so.6", Mode: 0o755, Data: []byte("libm")},
		{Path: "/tmp", Mode: 0o1777},
		{Path: "/etc/empty", Mode: 0o644, Data: []byte{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range tarHeaders(t, layer) {
		got = append(got, fmt.Sprintf("%c %s %o %s", h.Typeflag, h.Name, h.Mode, h.Linkname))
	}
	want := []string{
		"5 bin/ 755 ", "0 bin/busybox 755 ", "2 bin/sh 777 /bin/busybox",
		"5 usr/ 755 ", "5 usr/lib/ 755 ", "5 usr/lib/x/ 755 ", "0 usr/lib/x/libc.so.6 755 ", "0 usr/lib/x/libm.so.6 755 ",
		"5 tmp/ 1777 ", "5 etc/ 755 ", "0 etc/empty 644 ",
	}
	if !slices.Equal(got, want) {
		t.Errorf("layer entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestFilesLayerRejectsUncleanPaths(t *testing.T) {
	for _, p := range []string{"x", "/a/../b", "/", "/a/"} {
		if _, err := FilesLayer([]LayerFile{{Path: p, Mode: 0o644, Data: []byte("x")}}); err == nil {
			t.Errorf("path %q accepted", p)
		}
	}
}

// tarHeaders lists the entries of a tar, in order.
func tarHeaders(t *testing.T, b []byte) []*tar.Header {
	t.Helper()
	var hs []*tar.Header
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hs
		}
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
}
