package kubenode

import (
	"archive/tar"
	"bytes"
	"fmt"
	"path"
)

// LayerFile is one entry of an image layer: a regular file (Data non-nil),
// a symbolic link (Link) or, with neither, a directory.
type LayerFile struct {
	// Path is absolute, inside the image.
	Path string
	Mode int64
	Data []byte
	Link string
}

// FilesLayer is a layer (an uncompressed tar, for WriteImageArchive)
// holding files in order, each after its parent directories (made 0755
// where files does not list them), as a real layer has them.
func FilesLayer(files []LayerFile) ([]byte, error) {
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
