package hostprep

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/wgmesh/wgmesh/internal/hostfs"
)

// pacmanLocalDir is pacman's database of installed packages: one
// directory <name>-<version>-<rel> per package, holding its desc file.
const pacmanLocalDir = "/var/lib/pacman/local"

// alpmLocalDBVersion is the ALPM_DB_VERSION pacman (libalpm) accepts; with
// any other, or none in a non-empty database, it refuses the database.
const alpmLocalDBVersion = 9

// pacmanDB is the local database as `pacman -Q` sees it.
type pacmanDB struct {
	root    hostfs.Root
	entries []string          // directory names, sorted
	names   map[string]string // package name -> directory
}

// installed applies `pacman -Q name`: a package of that name, else one
// whose %PROVIDES% names it (alpm_find_satisfier).
func (d pacmanDB) installed(name string) (string, bool) {
	if dir, ok := d.names[name]; ok {
		return "installed as " + pacmanLocalDir + "/" + dir, true
	}
	for _, dir := range d.entries {
		desc, err := d.root.ReadFile(pacmanLocalDir + "/" + dir + "/desc")
		if err != nil {
			continue // pacman skips an entry whose desc it cannot read
		}
		if slices.Contains(pacmanProvides(desc), name) {
			return fmt.Sprintf("provided by %s/%s", pacmanLocalDir, dir), true
		}
	}
	return fmt.Sprintf("none of the %d packages in %s is %s or provides it", len(d.entries), pacmanLocalDir, name), false
}

func openPacman(root hostfs.Root) (packageDB, error) {
	entries, err := root.ReadDir(pacmanLocalDir)
	if err != nil {
		return nil, err
	}
	b, err := root.ReadFile(pacmanLocalDir + "/ALPM_DB_VERSION")
	if err != nil && len(entries) > 0 {
		return nil, fmt.Errorf("%w: pacman refuses a database without it", err)
	}
	if err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || v != alpmLocalDBVersion {
			return nil, fmt.Errorf("%s/ALPM_DB_VERSION is %q; pacman accepts only %d", pacmanLocalDir, strings.TrimSpace(string(b)), alpmLocalDBVersion)
		}
	}
	d := pacmanDB{root: root, names: map[string]string{}}
	for _, e := range entries {
		if !e.IsDir() {
			continue // as libalpm: a symlink or file is no package
		}
		name, _, ok := alpmSplitName(e.Name())
		if !ok {
			continue
		}
		d.entries = append(d.entries, e.Name())
		if _, dup := d.names[name]; !dup {
			d.names[name] = e.Name()
		}
	}
	slices.Sort(d.entries)
	return d, nil
}

// alpmSplitName splits a local database entry "<name>-<version>-<rel>" as
// libalpm does: at the last two hyphens, the name not empty.
func alpmSplitName(entry string) (name, version string, ok bool) {
	rel := strings.LastIndexByte(entry, '-')
	if rel < 0 {
		return "", "", false
	}
	ver := strings.LastIndexByte(entry[:rel], '-')
	if ver <= 0 {
		return "", "", false
	}
	return entry[:ver], entry[ver+1:], true
}

// pacmanProvides returns the names a desc file's %PROVIDES% section lists
// (each "name", "name=version", "name>=version" or "name: description"),
// as libalpm parses them.
func pacmanProvides(desc []byte) []string {
	var out []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(desc))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case line == "":
			in = false
		case strings.HasPrefix(line, "%") && strings.HasSuffix(line, "%") && len(line) > 1:
			in = line == "%PROVIDES%"
		case in:
			name, _, _ := strings.Cut(line, ": ")
			name, _, _ = strings.Cut(name, "=")
			name, _, _ = strings.Cut(name, "<")
			name, _, _ = strings.Cut(name, ">")
			out = append(out, name)
		}
	}
	return out
}
