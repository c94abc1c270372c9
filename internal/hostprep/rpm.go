package hostprep

import (
	"bytes"
	"database/sql"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"syscall"

	_ "modernc.org/sqlite" // database/sql driver "sqlite", pure Go

	"github.com/wgmesh/wgmesh/internal/hostfs"
)

// rpmDBDirs are where rpm keeps its database (%_dbpath): /var/lib/rpm, or
// /usr/lib/sysimage/rpm on newer systems (where /var/lib/rpm links to it).
var rpmDBDirs = []string{"/var/lib/rpm", "/usr/lib/sysimage/rpm"}

// rpmBackends are rpm's database formats by the file that holds the
// packages, newest first, and their readers: sqlite (rpm 4.16 and later:
// Fedora 33 on, RHEL and its rebuilds from 9), ndb (SUSE, rpm_ndb.go) and
// Berkeley DB (CentOS 7, RHEL 8 and its rebuilds, rpm_bdb.go).
var rpmBackends = []struct {
	file, format string
	open         func(root hostfs.Root, p string) (packageDB, error)
}{
	{"rpmdb.sqlite", "sqlite", openRPMSQLite},
	{"Packages.db", "ndb", openRPMNDB},
	{"Packages", "Berkeley DB", openRPMBDB},
}

// openRPM reads the first rpm database it finds, as rpm -q would.
func openRPM(root hostfs.Root) (packageDB, error) {
	var tried []string
	for _, dir := range rpmDBDirs {
		for _, b := range rpmBackends {
			p := dir + "/" + b.file
			if root.Exists(p) {
				return b.open(root, p)
			}
			tried = append(tried, p)
		}
	}
	return nil, fmt.Errorf("no rpm database: none of %s exists", strings.Join(tried, ", "))
}

// openRPMFile opens the database file at host path p read-only, resolved
// inside the host root, and refuses anything but a regular file
// (O_NONBLOCK: a FIFO in its place must not block the open). It returns
// the file, its size and where p resolved to.
func openRPMFile(root hostfs.Root, p string) (f *os.File, size int64, res hostfs.Resolution, err error) {
	if res, err = root.Resolve(p); err != nil {
		return nil, 0, res, err
	}
	if f, err = os.OpenFile(root.Join(res.Path), os.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
		return nil, 0, res, fmt.Errorf("%s: %w", p, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, 0, res, fmt.Errorf("%s: %w", p, err)
	}
	return f, fi.Size(), res, nil
}

// rpmDB is the installed packages of an rpm database.
type rpmDB struct {
	path string // host path of the database file
	pkgs []rpmPackage
}

// installed applies `rpm -q label` (see rpmQueryMatches).
func (d rpmDB) installed(label string) (string, bool) {
	for _, p := range d.pkgs {
		if how, ok := rpmQueryMatches(p, label); ok {
			nvr := p.name + "-" + p.version + "-" + p.release
			if how == "name" {
				return fmt.Sprintf("installed as %s (%s)", nvr, d.path), true
			}
			return fmt.Sprintf("installed as %s (%s): rpm -q matches its %s", nvr, d.path, how), true
		}
	}
	return fmt.Sprintf("none of the %d packages in %s is named %s", len(d.pkgs), d.path, label), false
}

// rpmQueryMatches reports whether `rpm -q label` lists the installed
// package p, and by what: rpm looks label up as a NAME, and if no package
// has that name, as name-version split at the last hyphen, then as
// name-version-release split at the hyphen before (rpmdb.c,
// dbiFindByLabelArch; `rpm -q device-mapper` lists a package "device" of
// version "mapper"). It never counts what a package only provides (`rpm -q
// --whatprovides` does that). For a label of letters, digits and "-_+."
// (every package Longhorn asks for) this is rpm's answer, except that rpm,
// finding nothing, tries a label with a '.' once more as name.arch, which
// this does not. rpm reads other characters as patterns (glob, regular
// expression, epoch "E:"), which this does not either: for such a label
// only an equal NAME counts.
func rpmQueryMatches(p rpmPackage, label string) (how string, ok bool) {
	if p.name == label {
		return "name", true
	}
	if strings.Trim(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_+.") != "" {
		return "", false
	}
	v := rpmLabelCut(label)
	if v < 0 {
		return "", false
	}
	if p.name == label[:v] && p.version == label[v+1:] {
		return "name-version", true
	}
	n := rpmLabelCut(label[:v])
	if n < 0 {
		return "", false
	}
	if p.name == label[:n] && p.version == label[n+1:v] && p.release == label[v+1:] {
		return "name-version-release", true
	}
	return "", false
}

// rpmLabelCut is where rpm splits a label: the last hyphen with something
// after it and something before it; -1 for none.
func rpmLabelCut(s string) int {
	for i := len(s) - 2; i > 0; i-- {
		if s[i] == '-' {
			return i
		}
	}
	return -1
}

// sqliteMagic starts every SQLite database file.
const sqliteMagic = "SQLite format 3\x00"

// openRPMSQLite reads rpmdb.sqlite (at host path p) the way rpm stores it:
// table Packages(hnum INTEGER PRIMARY KEY, blob BLOB), one rpm header per
// installed package. rpm finds a name through its Name table, an index
// that it builds from these same headers (`rpm --rebuilddb` builds it
// again from them); this reads the headers themselves. A header that does
// not parse makes the whole database unreadable: rpm would skip it as
// damaged, and so could not find the package it was.
//
// The file is opened read-only and immutable (SQLite's "mode=ro" and
// "immutable=1"): SQLite takes no lock, and creates no -wal, -shm or
// journal file next to it, so nothing in the host's rpm directory
// changes. Immutable also means it does not read rpmdb.sqlite-wal, where
// rpm's last changes wait until they are copied into rpmdb.sqlite: with a
// non-empty -wal (rpm or dnf at work, or stopped in the middle) the file
// may be out of date, and the database counts as unreadable.
func openRPMSQLite(root hostfs.Root, p string) (packageDB, error) {
	f, _, res, err := openRPMFile(root, p)
	if err != nil {
		return nil, err
	}
	err = checkSQLiteFile(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if _, fi, err := root.Stat(res.Path + "-wal"); err == nil && fi.Size() > 0 {
		return nil, errFix{
			err: fmt.Errorf("%s-wal holds %d bytes of changes that may not be in %s yet (rpm or dnf is changing the database, or stopped while changing it), and wgmesh-hostprep reads the database without its write-ahead log", p, fi.Size(), p),
			fix: "let rpm or dnf finish, then run wgmesh-hostprep again; if neither runs, `rpm --rebuilddb` writes the log's changes into the database",
		}
	}

	uri := url.URL{Scheme: "file", Path: root.Join(res.Path), RawQuery: "mode=ro&immutable=1"}
	db, err := sql.Open("sqlite", uri.String())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	rows, err := db.Query("SELECT hnum, blob FROM Packages ORDER BY hnum")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	defer rows.Close()
	d := rpmDB{path: p}
	for rows.Next() {
		var hnum int64
		var blob sql.RawBytes
		if err := rows.Scan(&hnum, &blob); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		pkg, err := parseRPMHeader(blob)
		if err != nil {
			return nil, fmt.Errorf("%s: package #%d: damaged header: %w", p, hnum, err)
		}
		d.pkgs = append(d.pkgs, pkg)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return d, nil
}

// checkSQLiteFile says clearly what an empty file or one of another
// format is, where SQLite would take an empty file for an empty database.
func checkSQLiteFile(f *os.File) error {
	head := make([]byte, len(sqliteMagic))
	n, err := io.ReadFull(f, head)
	switch {
	case n == 0:
		return fmt.Errorf("the file is empty")
	case err != nil || !bytes.Equal(head, []byte(sqliteMagic)):
		return fmt.Errorf("not an SQLite database (it does not start with %q)", strings.TrimSuffix(sqliteMagic, "\x00"))
	}
	return nil
}
