package conformance

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/wgmesh/wgmesh/test/e2e/kubenode"
)

// hostProgram copies a program installed on this machine (a Debian
// package's binary) into an image at dst, with every shared library it
// loads at the path the machine's loader found it: a distroless-style
// assembly, since no registry is reachable to pull the upstream images.
type hostProgram struct {
	// Src is the program on this machine; Dst its path in the image.
	Src, Dst string
	// Package is the Debian package that provides Src (for the error
	// message when it is missing).
	Package string
}

// files returns the program and its libraries as layer files.
func (p hostProgram) files(ctx context.Context) ([]kubenode.LayerFile, error) {
	prog, err := os.ReadFile(p.Src)
	if err != nil {
		return nil, fmt.Errorf("conformance: %s (apt-get install %s): %w", p.Src, p.Package, err)
	}
	out, err := exec.CommandContext(ctx, "ldd", p.Src).Output()
	if err != nil {
		return nil, fmt.Errorf("conformance: ldd %s: %w", p.Src, err)
	}
	libs, err := parseLdd(string(out))
	if err != nil {
		return nil, fmt.Errorf("conformance: ldd %s: %w", p.Src, err)
	}
	files := []kubenode.LayerFile{{Path: p.Dst, Mode: 0o755, Data: prog}}
	for _, lib := range libs {
		// Follow the machine's symlinks (merged /usr, /lib64 -> ...): the
		// image gets the library's content at the path the loader asks for.
		data, err := os.ReadFile(lib)
		if err != nil {
			return nil, fmt.Errorf("conformance: library of %s: %w", p.Src, err)
		}
		files = append(files, kubenode.LayerFile{Path: lib, Mode: 0o755, Data: data})
	}
	return files, nil
}

// parseLdd returns the absolute paths of the libraries in ldd's output
// (lines "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and the
// loader's "/lib64/ld-linux-x86-64.so.2 (0x...)"); the vDSO has no file.
// A library ldd could not find is an error: the program would not start.
func parseLdd(out string) ([]string, error) {
	var libs []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.Contains(line, "statically linked") {
			continue
		}
		name, target, arrow := strings.Cut(line, "=>")
		if arrow {
			target = strings.TrimSpace(target)
			if strings.HasPrefix(target, "not found") {
				return nil, fmt.Errorf("library %s not found", strings.TrimSpace(name))
			}
		} else {
			target = line
		}
		file, _, _ := strings.Cut(target, " (")
		file = strings.TrimSpace(file)
		if !path.IsAbs(file) {
			continue // linux-vdso.so.1 (0x...)
		}
		libs = append(libs, filepath.Clean(file))
	}
	return libs, sc.Err()
}

// busyboxApplets lists busybox's applets as links to /bin/busybox, except
// those named in skip (programs the image carries for real).
func busyboxApplets(ctx context.Context, busybox string, skip map[string]bool) ([]kubenode.LayerFile, error) {
	out, err := exec.CommandContext(ctx, busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("conformance: %s --list-full: %w", busybox, err)
	}
	var links []kubenode.LayerFile
	for _, rel := range strings.Fields(string(out)) {
		p := "/" + rel
		if p == "/bin/busybox" || skip[path.Base(p)] {
			continue
		}
		links = append(links, kubenode.LayerFile{Path: p, Link: "/bin/busybox"})
	}
	return links, nil
}

// dedupe keeps the first entry of every path (libraries shared by several
// programs), so the layer never holds a path twice.
func dedupe(files []kubenode.LayerFile) []kubenode.LayerFile {
	seen := map[string]bool{}
	var out []kubenode.LayerFile
	for _, f := range files {
		if seen[f.Path] {
			continue
		}
		seen[f.Path] = true
		out = append(out, f)
	}
	return out
}
