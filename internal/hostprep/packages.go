package hostprep

import (
	"errors"
	"fmt"
	"strings"

	"github.com/wgmesh/wgmesh/internal/hostfs"
)

// packageDB answers, from a package manager's database read under the host
// root, what Longhorn's query would answer for one package.
type packageDB interface {
	// installed reports whether Longhorn's query counts name as installed,
	// and what in the database says so (or that nothing does).
	installed(name string) (evidence string, ok bool)
}

// packageDatabase is where a package manager keeps its database, and how
// to read it the way that manager's query does.
type packageDatabase struct {
	name string   // for a person
	dirs []string // the first that exists makes the host that kind of system
	open func(hostfs.Root) (packageDB, error)
}

var packageDatabases = map[string]packageDatabase{
	"dpkg":   {name: "dpkg", dirs: []string{dpkgAdminDir}, open: openDpkg},
	"rpm":    {name: "rpm", dirs: rpmDBDirs, open: openRPM},
	"pacman": {name: "pacman", dirs: []string{pacmanLocalDir}, open: openPacman},
	"qlist":  {name: "Portage", dirs: []string{portageVDB}, open: openPortage},
}

// errFix is a database that cannot be read now, with what to do about it
// when that is not to repair it.
type errFix struct {
	err error
	fix string
}

func (e errFix) Error() string { return e.err.Error() }
func (e errFix) Unwrap() error { return e.err }

// longhornQuery is the command Longhorn runs for one package, as a person
// would type it.
func longhornQuery(tool, pkg string) string {
	switch tool {
	case "dpkg":
		return "dpkg -l | grep -w " + pkg
	case "rpm":
		return "rpm -q " + pkg
	case "pacman":
		return "pacman -Q " + pkg
	}
	return "qlist -I " + pkg
}

// checkLonghornPackages mirrors Longhorn's RequiredPackages condition where
// Longhorn asks the OS's package manager: it reads that manager's database
// as the query would answer, and never runs the manager. On an OS image
// Longhorn does not know there is no such check (longhorn.os-image says
// so); on Talos, Longhorn runs the programs, which the program checks do.
func (r *run) checkLonghornPackages() []Check {
	rule, ok := longhornPackageRuleFor(r.distro.PrettyName)
	if !ok || rule.tool == "talos" {
		return nil
	}
	return []Check{r.checkPackageDatabase(rule)}
}

func (r *run) checkPackageDatabase(rule longhornPackageRule) Check {
	c := Check{ID: "longhorn.packages", Topic: "RequiredPackages", Required: true}
	db := packageDatabases[rule.tool]
	dbDir := ""
	for _, d := range db.dirs {
		if r.root.Exists(d) {
			dbDir = d
			break
		}
	}
	longhornPATH := hostfs.SplitPath(r.opts.LonghornPATH)
	tool, err := r.root.LookPath(rule.tool, longhornPATH)
	switch {
	case err != nil && dbDir == "":
		// Longhorn took the image for a kind of system this host is not
		// (its "ol" matches any name with those letters): the query fails
		// whatever is installed, and nothing on the host changes that.
		c.Status = StatusWarning
		c.Summary = fmt.Sprintf("Longhorn takes the OS image %q for a system it verifies with %s, but the host has neither %s nor %s: its RequiredPackages condition is False whatever is installed; the program checks verify what it needs",
			r.distro.PrettyName, rule.tool, rule.tool, strings.Join(db.dirs, " nor "))
		c.Fix = "nothing on the host changes it: the condition depends on Longhorn's list of OS images"
		return c
	case err != nil:
		c.Status = StatusMissing
		c.Summary = fmt.Sprintf("Longhorn runs %s on the host to verify its packages, and %s is not on its PATH: its RequiredPackages condition is False", rule.tool, rule.tool)
		c.Evidence = []string{fmt.Sprintf("%s not found in Longhorn's PATH %s under the host root; the host has %s", rule.tool, r.opts.LonghornPATH, dbDir)}
		c.Fix = r.packagesFix(rule, []string{toolPackage(rule.tool)})
		return c
	}
	c.Evidence = []string{"Longhorn runs " + tool.Evidence()}

	pdb, err := db.open(r.root)
	if err != nil {
		// Unknown is not ready: the label must not say true next to a
		// condition that may be False.
		c.Status = StatusMissing
		c.Summary = fmt.Sprintf("cannot read the %s database (%v), so cannot tell whether Longhorn's `%s` finds its required packages (its RequiredPackages condition)", db.name, err, longhornQuery(rule.tool, "PKG"))
		c.Fix = "repair the " + db.name + " database (" + strings.Join(db.dirs, " or ") + ")"
		var withFix errFix
		if errors.As(err, &withFix) {
			c.Fix = withFix.fix
		}
		return c
	}

	var missing []string
	for i, p := range rule.packages {
		ev, ok := pdb.installed(p)
		c.Evidence = append(c.Evidence, fmt.Sprintf("%s: %s", longhornQuery(rule.tool, p), ev))
		if ok {
			continue
		}
		missing = append(missing, p)
		if prog, err := r.root.LookPath(longhornPackagePrograms[i], longhornPATH); err == nil {
			c.Evidence = append(c.Evidence, fmt.Sprintf("%s is on Longhorn's PATH (%s), but not from a package the %s database has: installed outside the package manager, which Longhorn does not count",
				longhornPackagePrograms[i], prog.Evidence(), db.name))
		}
	}
	if len(missing) > 0 {
		c.Status = StatusMissing
		c.Summary = fmt.Sprintf("Longhorn's RequiredPackages condition is False: the %s database has no %s", db.name, strings.Join(missing, ", "))
		c.Fix = r.packagesFix(rule, missing)
		return c
	}
	c.Status = StatusOK
	c.Summary = fmt.Sprintf("the %s database has every package Longhorn requires: %s", db.name, strings.Join(rule.packages, ", "))
	return c
}

// toolPackage is the package that installs a package manager's query
// program.
func toolPackage(tool string) string {
	if tool == "qlist" {
		return "app-portage/portage-utils"
	}
	return tool
}

// packagesFix installs packages by the names Longhorn asks for, with this
// host's installer.
func (r *run) packagesFix(rule longhornPackageRule, names []string) string {
	list := strings.Join(names, " ")
	switch {
	case rule.tool == "qlist":
		return "emerge --noreplace " + list
	case r.distro.Family == FamilyUnknown || r.distro.Family == FamilyNixOS:
		return fmt.Sprintf("install %s with the host's package manager (Longhorn asks %s)", list, rule.tool)
	}
	return r.distro.installFix(pkg{debian: list, rhel: list, suse: list, arch: list})
}
