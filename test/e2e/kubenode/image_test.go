package kubenode

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
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
