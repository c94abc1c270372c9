package hostprep

import (
	"fmt"
	"strings"

	"github.com/wgmesh/wgmesh/internal/hostfs"
)

// rpmDBDirs are where rpm keeps its database (%_dbpath): /var/lib/rpm, or
// /usr/lib/sysimage/rpm on newer systems (where /var/lib/rpm links to it).
var rpmDBDirs = []string{"/var/lib/rpm", "/usr/lib/sysimage/rpm"}

// rpmBackends are rpm's database formats by the file that holds the
// packages, newest first.
var rpmBackends = []struct{ file, format string }{
	{"rpmdb.sqlite", "sqlite"},
	{"Packages.db", "ndb"},
	{"Packages", "Berkeley DB"},
}

// openRPM finds the rpm database but does not read it: no Go reader of it
// that fits here is served (github.com/knqyf263/go-rpmdb only at a 2021
// version, which reads Berkeley DB alone and can loop forever on a page it
// does not expect; sqlite would need modernc.org/sqlite). Its answer is
// errUnverifiable, which the check reports as a warning.
func openRPM(root hostfs.Root) (packageDB, error) {
	var tried []string
	for _, dir := range rpmDBDirs {
		for _, b := range rpmBackends {
			p := dir + "/" + b.file
			if root.Exists(p) {
				return nil, errUnverifiable{fmt.Sprintf("wgmesh-hostprep does not read rpm's %s database (%s) without running rpm", b.format, p)}
			}
			tried = append(tried, p)
		}
	}
	return nil, fmt.Errorf("no rpm database: none of %s exists", strings.Join(tried, ", "))
}
