package hostprep

import (
	"fmt"
	"strings"

	"github.com/wgmesh/wgmesh/internal/hostfs"
)

// portageVDB is Portage's database of installed packages: a directory
// <category>/<name>-<version> per package.
const portageVDB = "/var/db/pkg"

// portageDB is the installed-package database as qlist reads it.
type portageDB struct{ root hostfs.Root }

func openPortage(root hostfs.Root) (packageDB, error) {
	// qlist exits 0 when it cannot open the database at all; that is not
	// counted here as every package installed.
	if _, err := root.ReadDir(portageVDB); err != nil {
		return nil, err
	}
	return portageDB{root: root}, nil
}

// installed applies `qlist -I category/name`: qlist matches an installed
// package whose "category/name-version" begins with the argument. Only a
// whole name followed by a version counts here, so this never finds a
// package qlist would not.
func (d portageDB) installed(atom string) (string, bool) {
	cat, pn, _ := strings.Cut(atom, "/")
	dir := portageVDB + "/" + cat
	entries, err := d.root.ReadDir(dir)
	if err != nil {
		return fmt.Sprintf("no %s: %v", dir, err), false
	}
	for _, e := range entries {
		if e.IsDir() && portageEntryIs(e.Name(), pn) {
			return "installed as " + dir + "/" + e.Name(), true
		}
	}
	return fmt.Sprintf("no %s-<version> in %s", pn, dir), false
}

// portageEntryIs reports whether a database entry "<name>-<version>" is of
// the package pn: the rest after pn and a hyphen is a version (it starts
// with a digit).
func portageEntryIs(entry, pn string) bool {
	rest, ok := strings.CutPrefix(entry, pn+"-")
	return ok && rest != "" && '0' <= rest[0] && rest[0] <= '9'
}
