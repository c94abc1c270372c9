package hostprep

import (
	"database/sql"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/wgmesh/wgmesh/internal/hostprep/fakehost"
)

// withOS turns the fake Debian host into another distribution: its
// os-release, and no dpkg or dpkg database.
func withOS(tr *fakehost.Tree, osRelease string) {
	tr.Remove("etc/os-release").File("etc/os-release", osRelease, 0o644)
	tr.Remove("usr/bin/dpkg").Remove("var/lib/dpkg")
}

const (
	archOS   = "ID=arch\nPRETTY_NAME=\"Arch Linux\"\n"
	gentooOS = "ID=gentoo\nPRETTY_NAME=\"Gentoo Linux\"\n"
	rockyOS  = "ID=rocky\nID_LIKE=\"rhel centos fedora\"\nPRETTY_NAME=\"Rocky Linux 9.4 (Blue Onyx)\"\n"
	fedoraOS = "ID=fedora\nPRETTY_NAME=\"Fedora Linux 41 (Server Edition)\"\n"
)

// rpmSQLite writes an rpm database at p in the tree as rpm 4.16 and later
// create it (rpmdb.sqlite: the Packages table, one header blob per
// package, and the Name index, in WAL mode), with SQLite itself, or adds
// the blobs to the one there.
func rpmSQLite(tr *fakehost.Tree, p string, blobs ...[]byte) {
	t := tr.TB()
	t.Helper()
	full := filepath.Join(tr.Dir, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", (&url.URL{Scheme: "file", Path: full}).String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, stmt := range []string{
		"PRAGMA journal_mode = WAL",
		"CREATE TABLE IF NOT EXISTS 'Packages' (hnum INTEGER PRIMARY KEY AUTOINCREMENT,blob BLOB NOT NULL)",
		"CREATE TABLE IF NOT EXISTS 'Name' (key 'TEXT' NOT NULL, hnum INTEGER NOT NULL, idx INTEGER NOT NULL, FOREIGN KEY (hnum) REFERENCES 'Packages'(hnum))",
		"CREATE INDEX IF NOT EXISTS 'Name_key_idx' ON 'Name'(key ASC)",
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	for _, b := range blobs {
		r, err := db.Exec("INSERT INTO Packages (blob) VALUES (?)", b)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := parseRPMHeader(b); err == nil {
			hnum, _ := r.LastInsertId()
			if _, err := db.Exec("INSERT INTO Name VALUES (?, ?, 0)", p.name, hnum); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// rocky makes a Rocky Linux 9 host whose rpm database (sqlite) has the
// named packages, each "name" or "name>what it also provides".
func rocky(tr *fakehost.Tree, pkgs ...string) {
	withOS(tr, rockyOS)
	tr.Exe("usr/bin/rpm")
	var blobs [][]byte
	for _, p := range pkgs {
		name, provides, _ := strings.Cut(p, ">")
		blobs = append(blobs, rpmTestPackage(name, "1.0", "1.el9", strings.Fields(provides)...))
	}
	rpmSQLite(tr, "var/lib/rpm/rpmdb.sqlite", blobs...)
}

// centos7 makes a CentOS 7 host whose rpm database is the Berkeley DB
// file testdata/rpmbdb/<file> (see rpmBDBFixtures).
func centos7(tr *fakehost.Tree, file string) {
	withOS(tr, "ID=centos\nPRETTY_NAME=\"CentOS Linux 7 (Core)\"\n")
	b, err := os.ReadFile("testdata/rpmbdb/" + file)
	if err != nil {
		tr.TB().Fatal(err)
	}
	tr.Exe("usr/bin/rpm").File("var/lib/rpm/Packages", string(b), 0o644)
}

var allRocky = []string{"nfs-utils", "iscsi-initiator-utils", "cryptsetup", "device-mapper"}

// opensuse makes an openSUSE Leap 15 host whose rpm database is the ndb
// database db, where SUSE keeps it (/usr/lib/sysimage/rpm, linked from
// /var/lib/rpm).
func opensuse(tr *fakehost.Tree, db []byte) {
	withOS(tr, "ID=opensuse-leap\nPRETTY_NAME=\"openSUSE Leap 15.6\"\n")
	tr.Exe("usr/bin/rpm").File("usr/lib/sysimage/rpm/Packages.db", string(db), 0o644).Link("var/lib/rpm", "../../usr/lib/sysimage/rpm")
}

// arch makes an Arch Linux host whose pacman database has the named
// packages (<name>-<version>-<rel> directories with their desc files).
func arch(tr *fakehost.Tree, pkgs ...string) {
	withOS(tr, archOS)
	tr.Exe("usr/bin/pacman")
	tr.File("var/lib/pacman/local/ALPM_DB_VERSION", "9\n", 0o644)
	for _, p := range pkgs {
		name, provides, _ := strings.Cut(p, ">")
		desc := "%NAME%\n" + name + "\n\n%VERSION%\n1.0-1\n\n%DESC%\nsome package\n\n"
		if provides != "" {
			desc += "%PROVIDES%\nlibfoo.so=1-64\n" + provides + "=1.0\n\n"
		}
		tr.File("var/lib/pacman/local/"+name+"-1.0-1/desc", desc, 0o644)
	}
}

// gentoo makes a Gentoo host whose Portage database has the named
// packages (category/name-version directories).
func gentoo(tr *fakehost.Tree, pkgs ...string) {
	withOS(tr, gentooOS)
	tr.Exe("usr/bin/qlist")
	tr.Mkdir("var/db/pkg")
	for _, p := range pkgs {
		tr.File("var/db/pkg/"+p+"/CONTENTS", "obj /usr/bin/x 0 0\n", 0o644)
	}
}

var allGentoo = []string{"net-fs/nfs-utils-2.6.4-r12", "sys-block/open-iscsi-2.1.10", "sys-fs/cryptsetup-2.7.5-r1", "sys-fs/lvm2-2.03.22-r5"}

// Longhorn's RequiredPackages condition asks the package manager, not the
// file system. Each case changes one thing on a healthy host; the label
// (Ready) must be false wherever Longhorn's condition would be False for a
// reason the host can fix, and the check says why.
func TestLonghornPackagesDecideReadiness(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(tr *fakehost.Tree)
		want   Status // of longhorn.packages; "" means no such check
		ready  bool
		text   []string // in the summary, evidence or fix
	}{
		{name: "Debian, all in dpkg's database", change: func(*fakehost.Tree) {},
			want: StatusOK, ready: true, text: []string{"matches ii  nfs-common 1:2.6.2-4+deb12u1 amd64"}},
		{name: "Debian, mount.nfs on PATH but nfs-common not in the database", change: func(tr *fakehost.Tree) {
			tr.File("var/lib/dpkg/status", fakehost.DpkgStatus("libc6", "open-iscsi", "cryptsetup", "dmsetup"), 0o644)
		}, want: StatusMissing, text: []string{
			"Longhorn's RequiredPackages condition is False: the dpkg database has no nfs-common",
			"mount.nfs is on Longhorn's PATH (/usr/sbin/mount.nfs), but not from a package the dpkg database has",
			"apt-get install -y nfs-common",
		}},
		{name: "Debian, two packages missing", change: func(tr *fakehost.Tree) {
			tr.File("var/lib/dpkg/status", fakehost.DpkgStatus("libc6", "nfs-common", "cryptsetup"), 0o644)
		}, want: StatusMissing, text: []string{"has no open-iscsi, dmsetup", "apt-get install -y open-iscsi dmsetup"}},
		{name: "Debian, nfs-common removed with its config files kept (dpkg -l lists rc)", change: func(tr *fakehost.Tree) {
			tr.File("var/lib/dpkg/status", strings.Replace(tr.Read("var/lib/dpkg/status"),
				"Package: nfs-common\nStatus: install ok installed", "Package: nfs-common\nStatus: deinstall ok config-files", 1), 0o644)
		}, want: StatusOK, ready: true, text: []string{"matches rc  nfs-common"}},
		{name: "Debian, nfs-common purged", change: func(tr *fakehost.Tree) {
			tr.File("var/lib/dpkg/status", strings.Replace(tr.Read("var/lib/dpkg/status"),
				"Package: nfs-common\nStatus: install ok installed", "Package: nfs-common\nStatus: purge ok not-installed", 1), 0o644)
		}, want: StatusMissing, text: []string{"has no nfs-common"}},
		{name: "Debian, nfs-common purged by a journal entry in updates/", change: func(tr *fakehost.Tree) {
			tr.File("var/lib/dpkg/updates/0007", "Package: nfs-common\nStatus: purge ok not-installed\nArchitecture: amd64\n", 0o644)
		}, want: StatusMissing, text: []string{"has no nfs-common"}},
		{name: "Debian, cryptsetup-bin without cryptsetup (grep -w matches it)", change: func(tr *fakehost.Tree) {
			tr.File("var/lib/dpkg/status", fakehost.DpkgStatus("libc6", "nfs-common", "open-iscsi", "cryptsetup-bin", "dmsetup"), 0o644)
		}, want: StatusOK, ready: true, text: []string{"matches ii  cryptsetup-bin"}},
		{name: "Debian, a status file dpkg refuses", change: func(tr *fakehost.Tree) {
			tr.File("var/lib/dpkg/status", "Package: nfs-common\nStatus: install ok installed\nthis line has no colon\n", 0o644)
		}, want: StatusMissing, text: []string{"cannot read the dpkg database (", "must be followed by a colon"}},
		{name: "Debian, no status file", change: func(tr *fakehost.Tree) { tr.Remove("var/lib/dpkg/status") },
			want: StatusMissing, text: []string{"cannot read the dpkg database (read /var/lib/dpkg/status"}},
		{name: "Debian, dpkg not on Longhorn's PATH", change: func(tr *fakehost.Tree) { tr.Remove("usr/bin/dpkg") },
			want: StatusMissing, text: []string{"Longhorn runs dpkg on the host to verify its packages, and dpkg is not on its PATH"}},
		{name: "Ubuntu image, neither dpkg nor its database", change: func(tr *fakehost.Tree) {
			withOS(tr, "ID=ubuntu\nPRETTY_NAME=\"Ubuntu 24.04 LTS\"\n")
		}, want: StatusWarning, ready: true, text: []string{"neither dpkg nor /var/lib/dpkg"}},
		{name: "Flatcar, taken for an rpm system (\"ol\" in Kinvolk)", change: func(tr *fakehost.Tree) {
			withOS(tr, "ID=flatcar\nPRETTY_NAME=\"Flatcar Container Linux by Kinvolk 3815.2.0 (Oklo)\"\n")
		}, want: StatusWarning, ready: true, text: []string{"for a system it verifies with rpm", "nothing on the host changes it"}},
		{name: "Rocky, all in rpm's sqlite database", change: func(tr *fakehost.Tree) { rocky(tr, allRocky...) },
			want: StatusOK, ready: true, text: []string{"rpm -q iscsi-initiator-utils: installed as iscsi-initiator-utils-1.0-1.el9 (/var/lib/rpm/rpmdb.sqlite)"}},
		{name: "Rocky, iscsi-initiator-utils only provided by another package (rpm -q does not count it)", change: func(tr *fakehost.Tree) {
			rocky(tr, "nfs-utils", "open-iscsi-git>iscsi-initiator-utils", "cryptsetup", "device-mapper")
		}, want: StatusMissing, text: []string{
			"Longhorn's RequiredPackages condition is False: the rpm database has no iscsi-initiator-utils",
			"rpm -q iscsi-initiator-utils: none of the 4 packages in /var/lib/rpm/rpmdb.sqlite is named iscsi-initiator-utils",
			"iscsiadm is on Longhorn's PATH (/usr/sbin/iscsiadm), but not from a package the rpm database has",
			"dnf install -y iscsi-initiator-utils",
		}},
		{name: "Rocky, cryptsetup and device-mapper missing", change: func(tr *fakehost.Tree) { rocky(tr, "nfs-utils", "iscsi-initiator-utils", "cryptsetup-libs") },
			want: StatusMissing, text: []string{"has no cryptsetup, device-mapper", "dnf install -y cryptsetup device-mapper"}},
		{name: "Rocky, a package device of version mapper (rpm -q device-mapper lists it)", change: func(tr *fakehost.Tree) {
			rocky(tr, "nfs-utils", "iscsi-initiator-utils", "cryptsetup")
			rpmSQLite(tr, "var/lib/rpm/rpmdb.sqlite", rpmTestPackage("device", "mapper", "1"))
		}, want: StatusOK, ready: true, text: []string{"installed as device-mapper-1 (/var/lib/rpm/rpmdb.sqlite): rpm -q matches its name-version"}},
		{name: "Fedora, database under /usr/lib/sysimage/rpm", change: func(tr *fakehost.Tree) {
			withOS(tr, fedoraOS)
			tr.Exe("usr/bin/rpm").Link("var/lib/rpm", "../../usr/lib/sysimage/rpm")
			var blobs [][]byte
			for _, p := range allRocky {
				blobs = append(blobs, rpmTestPackage(p, "2.0", "3.fc41"))
			}
			rpmSQLite(tr, "usr/lib/sysimage/rpm/rpmdb.sqlite", blobs...)
		}, want: StatusOK, ready: true, text: []string{"installed as nfs-utils-2.0-3.fc41 (/var/lib/rpm/rpmdb.sqlite)"}},
		{name: "Rocky, an empty write-ahead log and its index beside the database, as rpm leaves them", change: func(tr *fakehost.Tree) {
			rocky(tr, allRocky...)
			tr.File("var/lib/rpm/rpmdb.sqlite-wal", "", 0o644).File("var/lib/rpm/rpmdb.sqlite-shm", strings.Repeat("\x00", 32768), 0o644)
		}, want: StatusOK, ready: true},
		{name: "Rocky, changes in the write-ahead log", change: func(tr *fakehost.Tree) {
			rocky(tr, allRocky...)
			tr.File("var/lib/rpm/rpmdb.sqlite-wal", "\x37\x7f\x06\x82 some frames", 0o644)
		}, want: StatusMissing, text: []string{
			"cannot read the rpm database (/var/lib/rpm/rpmdb.sqlite-wal holds 16 bytes of changes that may not be in /var/lib/rpm/rpmdb.sqlite yet",
			"let rpm or dnf finish, then run wgmesh-hostprep again",
		}},
		{name: "Rocky, a damaged header", change: func(tr *fakehost.Tree) {
			rocky(tr)
			nfs := rpmTestPackage("nfs-utils", "1.0", "1.el9")
			rpmSQLite(tr, "var/lib/rpm/rpmdb.sqlite", rpmTestPackage("iscsi-initiator-utils", "1.0", "1.el9"), nfs[:len(nfs)-3])
		}, want: StatusMissing, text: []string{
			"cannot read the rpm database (/var/lib/rpm/rpmdb.sqlite: package #2: damaged header: header is",
			"repair the rpm database",
		}},
		{name: "Rocky, an empty rpmdb.sqlite", change: func(tr *fakehost.Tree) {
			rocky(tr)
			tr.File("var/lib/rpm/rpmdb.sqlite", "", 0o644)
		}, want: StatusMissing, text: []string{"cannot read the rpm database (/var/lib/rpm/rpmdb.sqlite: the file is empty)"}},
		{name: "Rocky, rpmdb.sqlite of another format", change: func(tr *fakehost.Tree) {
			rocky(tr)
			tr.File("var/lib/rpm/rpmdb.sqlite", "\x00\x06\x15\x61 Berkeley DB hash", 0o644)
		}, want: StatusMissing, text: []string{"/var/lib/rpm/rpmdb.sqlite: not an SQLite database"}},
		{name: "Rocky, rpmdb.sqlite damaged after its first bytes", change: func(tr *fakehost.Tree) {
			rocky(tr)
			tr.File("var/lib/rpm/rpmdb.sqlite", sqliteMagic+strings.Repeat("garbage!", 200), 0o644)
		}, want: StatusMissing, text: []string{"cannot read the rpm database (/var/lib/rpm/rpmdb.sqlite: "}},
		{name: "Rocky, rpmdb.sqlite without a Packages table", change: func(tr *fakehost.Tree) {
			rocky(tr)
			tr.Remove("var/lib/rpm/rpmdb.sqlite")
			db, err := sql.Open("sqlite", filepath.Join(tr.Dir, "var/lib/rpm/rpmdb.sqlite"))
			if err == nil {
				_, err = db.Exec("CREATE TABLE Other (x)")
				db.Close()
			}
			if err != nil {
				tr.TB().Fatal(err)
			}
		}, want: StatusMissing, text: []string{"/var/lib/rpm/rpmdb.sqlite: ", "no such table: Packages"}},
		{name: "openSUSE, all in rpm's ndb database under /usr/lib/sysimage", change: func(tr *fakehost.Tree) { opensuse(tr, ndbFixture(tr.TB(), "all")) },
			want: StatusOK, ready: true, text: []string{
				"rpm -q nfs-client: installed as nfs-client-2.1.1-150500.22.3.1 (/var/lib/rpm/Packages.db)",
				"rpm -q device-mapper: installed as device-mapper-2.03.22_1.02.196-150600.3.3.1 (/var/lib/rpm/Packages.db)",
			}},
		{name: "openSUSE, open-iscsi only provided by another package, a package device of version mapper", change: func(tr *fakehost.Tree) {
			opensuse(tr, ndbFixture(tr.TB(), "changed"))
		}, want: StatusMissing, text: []string{
			"Longhorn's RequiredPackages condition is False: the rpm database has no open-iscsi",
			"rpm -q open-iscsi: none of the 4 packages in /var/lib/rpm/Packages.db is named open-iscsi",
			"rpm -q device-mapper: installed as device-mapper-1 (/var/lib/rpm/Packages.db): rpm -q matches its name-version",
			"zypper --non-interactive install open-iscsi",
		}},
		{name: "openSUSE, a package written by the test writer, nfs-client missing", change: func(tr *fakehost.Tree) {
			opensuse(tr, ndbTestFile(1, rpmTestPackage("open-iscsi", "2.1.9", "1"), rpmTestPackage("cryptsetup", "2.7.0", "1"), rpmTestPackage("device-mapper", "1.02", "1")))
		}, want: StatusMissing, text: []string{"the rpm database has no nfs-client", "mount.nfs is on Longhorn's PATH"}},
		{name: "openSUSE, a damaged blob in Packages.db", change: func(tr *fakehost.Tree) {
			b := ndbFixture(tr.TB(), "all")
			b[ndbBlobAt(b, 2)+100] ^= 1
			opensuse(tr, b)
		}, want: StatusMissing, text: []string{
			"cannot read the rpm database (/var/lib/rpm/Packages.db: package #3 (slot 4, bytes 6864 to 8256): the blob's adler32 is",
			"repair the rpm database",
		}},
		{name: "openSUSE, Packages.db cut short", change: func(tr *fakehost.Tree) {
			b := ndbFixture(tr.TB(), "all")
			opensuse(tr, b[:len(b)-ndbPageSize])
		}, want: StatusMissing, text: []string{"/var/lib/rpm/Packages.db: slot 3 (package #2) points past the end of the file (blocks 343 to 429 of 350: truncated)"}},
		{name: "openSUSE, an empty Packages.db", change: func(tr *fakehost.Tree) { opensuse(tr, nil) },
			want: StatusMissing, text: []string{"cannot read the rpm database (/var/lib/rpm/Packages.db: the file is empty)"}},
		{name: "openSUSE, Packages.db locked by rpm", change: func(tr *fakehost.Tree) {
			opensuse(tr, ndbFixture(tr.TB(), "all"))
			f, err := os.Open(filepath.Join(tr.Dir, "usr/lib/sysimage/rpm/Packages.db"))
			if err == nil {
				tr.TB().Cleanup(func() { f.Close() })
				err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
			}
			if err != nil {
				tr.TB().Fatal(err)
			}
		}, want: StatusMissing, text: []string{"/var/lib/rpm/Packages.db stayed locked for writing for 1s", "let rpm or zypper finish"}},
		{name: "CentOS 7, all in rpm's Berkeley DB database", change: func(tr *fakehost.Tree) {
			centos7(tr, "centos7.le")
		}, want: StatusOK, ready: true, text: []string{
			"rpm -q iscsi-initiator-utils: installed as iscsi-initiator-utils-6.2.0.874-22.el7_9 (/var/lib/rpm/Packages)",
			"rpm -q nfs-utils: installed as nfs-utils-2.5.4-1 (/var/lib/rpm/Packages)",
		}},
		{name: "CentOS 7 on s390x, a big-endian Berkeley DB database", change: func(tr *fakehost.Tree) {
			centos7(tr, "centos7.be")
		}, want: StatusOK, ready: true, text: []string{"rpm -q device-mapper: installed as device-mapper-1.02.170-6.el7 (/var/lib/rpm/Packages)"}},
		{name: "CentOS 7, iscsi-initiator-utils only provided by another package (rpm -q does not count it)", change: func(tr *fakehost.Tree) {
			centos7(tr, "centos7-provided.le")
		}, want: StatusMissing, text: []string{
			"Longhorn's RequiredPackages condition is False: the rpm database has no iscsi-initiator-utils",
			"rpm -q iscsi-initiator-utils: none of the 4 packages in /var/lib/rpm/Packages is named iscsi-initiator-utils",
			"install -y iscsi-initiator-utils",
		}},
		{name: "CentOS 7, Packages cut short", change: func(tr *fakehost.Tree) {
			centos7(tr, "centos7.le")
			tr.File("var/lib/rpm/Packages", tr.Read("var/lib/rpm/Packages")[:3000], 0o644)
		}, want: StatusMissing, text: []string{
			"cannot read the rpm database (/var/lib/rpm/Packages: the file has 3000 bytes, fewer than the 9 pages of 512 bytes its metadata counts (4608 bytes): it is cut short)",
			"repair the rpm database",
		}},
		{name: "CentOS 7, Packages of 16 bytes", change: func(tr *fakehost.Tree) {
			centos7(tr, "centos7.le")
			tr.File("var/lib/rpm/Packages", "\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x61\x15\x06\x00", 0o644)
		}, want: StatusMissing, text: []string{"/var/lib/rpm/Packages: the file has 16 bytes, fewer than a Berkeley DB metadata page (512)"}},
		{name: "CentOS 7, an overflow page pointing back into its chain", change: func(tr *fakehost.Tree) {
			centos7(tr, "centos7.le")
			b := []byte(tr.Read("var/lib/rpm/Packages"))
			b[5*512+16] = 3 // page 5, the last of nfs-utils' pages 3, 4, 5: next page 3
			tr.File("var/lib/rpm/Packages", string(b), 0o644)
		}, want: StatusMissing, text: []string{"/var/lib/rpm/Packages: package #1 (page 2, item 1): overflow page 3 is used twice"}},
		{name: "CentOS 7, a damaged header", change: func(tr *fakehost.Tree) {
			centos7(tr, "centos7.le")
			tr.File("var/lib/rpm/Packages", strings.Replace(tr.Read("var/lib/rpm/Packages"), "1.02.170\x00", "1.02.17\x00\x00", 1), 0o644)
		}, want: StatusMissing, text: []string{"/var/lib/rpm/Packages: package #4: damaged header: "}},
		{name: "Rocky, rpm database but no rpm", change: func(tr *fakehost.Tree) {
			withOS(tr, rockyOS)
			tr.File("var/lib/rpm/rpmdb.sqlite", "", 0o644)
		}, want: StatusMissing, text: []string{"rpm is not on its PATH", "dnf install -y rpm"}},
		{name: "Arch, all installed", change: func(tr *fakehost.Tree) {
			arch(tr, "nfs-utils", "open-iscsi", "cryptsetup", "device-mapper", "lvm2")
		}, want: StatusOK, ready: true, text: []string{"installed as /var/lib/pacman/local/device-mapper-1.0-1"}},
		{name: "Arch, open-iscsi provided by another package", change: func(tr *fakehost.Tree) {
			arch(tr, "nfs-utils", "open-iscsi-git>open-iscsi", "cryptsetup", "device-mapper")
		}, want: StatusOK, ready: true, text: []string{"provided by /var/lib/pacman/local/open-iscsi-git-1.0-1"}},
		{name: "Arch, device-mapper missing", change: func(tr *fakehost.Tree) {
			arch(tr, "nfs-utils", "open-iscsi", "cryptsetup")
		}, want: StatusMissing, text: []string{"the pacman database has no device-mapper", "pacman -S --needed --noconfirm device-mapper", "dmsetup is on Longhorn's PATH"}},
		{name: "Arch, database without ALPM_DB_VERSION", change: func(tr *fakehost.Tree) {
			arch(tr, "nfs-utils", "open-iscsi", "cryptsetup", "device-mapper")
			tr.Remove("var/lib/pacman/local/ALPM_DB_VERSION")
		}, want: StatusMissing, text: []string{"cannot read the pacman database (", "pacman refuses a database without it"}},
		{name: "Gentoo, all installed", change: func(tr *fakehost.Tree) { gentoo(tr, allGentoo...) },
			want: StatusOK, ready: true, text: []string{"installed as /var/db/pkg/sys-fs/lvm2-2.03.22-r5"}},
		{name: "Gentoo, lvm2 missing (lvm2-python is another package)", change: func(tr *fakehost.Tree) {
			gentoo(tr, append(allGentoo[:3:3], "sys-fs/lvm2-python-1.0")...)
		}, want: StatusMissing, text: []string{"has no sys-fs/lvm2", "emerge --noreplace sys-fs/lvm2"}},
		{name: "Gentoo without portage-utils (no qlist)", change: func(tr *fakehost.Tree) {
			gentoo(tr, allGentoo...)
			tr.Remove("usr/bin/qlist")
		}, want: StatusMissing, text: []string{"qlist is not on its PATH", "emerge --noreplace app-portage/portage-utils"}},
		{name: "Talos: Longhorn runs the programs, which the program checks do", change: func(tr *fakehost.Tree) {
			withOS(tr, "ID=talos\nPRETTY_NAME=\"Talos (v1.8.0)\"\n")
		}, ready: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := fakehost.Debian(t)
			tt.change(tr)
			rep := runChecks(t, Options{Root: tr.Root(), Log: quiet()})
			if rep.Ready() != tt.ready {
				t.Errorf("Ready() = %v, want %v; blocking: %+v", rep.Ready(), tt.ready, rep.Blocking())
			}
			checks := byID(t, rep)
			if tt.want == "" {
				if c, ok := checks["longhorn.packages"]; ok {
					t.Errorf("unexpected check %+v", c)
				}
				return
			}
			c := wantStatus(t, checks, "longhorn.packages", tt.want)
			all := c.Summary + "\n" + strings.Join(c.Evidence, "\n") + "\n" + c.Fix
			for _, want := range tt.text {
				if !strings.Contains(all, want) {
					t.Errorf("want %q in:\n%s", want, all)
				}
			}
			// The program checks alone would say ready here: they see the
			// programs, not the package database.
			for _, id := range []string{"program.mount.nfs", "program.iscsiadm", "program.cryptsetup", "program.dmsetup"} {
				wantStatus(t, checks, id, StatusOK)
			}
		})
	}
}

func TestGrepWord(t *testing.T) {
	for _, tt := range []struct {
		text, word string
		want       bool
	}{
		{"ii  nfs-common 1:2.6.2-4 amd64 NFS support files", "nfs-common", true},
		{"ii  cryptsetup-bin 2:2.6.1-4 amd64 disk encryption support", "cryptsetup", true}, // '-' is no word character
		{"ii  libcryptsetup12:amd64 2:2.6.1-4 amd64 disk encryption support", "cryptsetup", false},
		{"ii  cryptsetup:amd64 2:2.6.1-4", "cryptsetup", true},
		{"ii  cryptsetup_x 1", "cryptsetup", false},
		{"ii  xcryptsetup 1 cryptsetup", "cryptsetup", true}, // the second occurrence
		{"cryptsetup", "cryptsetup", true},
		{"ii  écryptsetup 1", "cryptsetup", false}, // a letter in a UTF-8 locale
		{"ii  foo 1\ncryptsetup", "cryptsetup", true},
		{"ii  nfs-commo", "nfs-common", false},
		{"anything", "", false},
	} {
		if got := grepWord(tt.text, tt.word); got != tt.want {
			t.Errorf("grepWord(%q, %q) = %v, want %v", tt.text, tt.word, got, tt.want)
		}
	}
}

// What dpkg -l lists, and what makes dpkg refuse the database.
func TestDpkgStatusParsing(t *testing.T) {
	db := map[string]dpkgEntry{}
	status := "Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\nDescription: first line\n second line\n\n\n" +
		"package: b\nstatus: deinstall reinstreq half-installed\nversion : 2\n\n" +
		"Package: c\nStatus: purge ok not-installed\n\n" +
		"Package: d\nArchitecture: all\n"
	if err := addDpkgStanzas(db, []byte(status)); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"a:amd64": "ii  a 1 amd64 first line",
		"b:":      "rHR b 2  (no description available)",
		"c:":      "",
		"d:all":   "",
	}
	for key, line := range want {
		got, listed := db[key].listLine()
		if got != line || listed != (line != "") {
			t.Errorf("%s: listLine() = %q, %v; want %q", key, got, listed, line)
		}
	}
	for _, bad := range []string{
		"Package: a\nno colon here\n",
		" continuation first\n",
		"Package: a\nPackage: b\n",
		"Package: a\nDescription: x\n \t\n",
		"Package: a\n-Field: x\n",
		": empty name\n",
		"Package: a\nStatus: install ok\n",
		"Package: a\nStatus: install ok frobnicated\n",
		"Status: install ok installed\n",
	} {
		if err := addDpkgStanzas(map[string]dpkgEntry{}, []byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestDpkgUpdateNames(t *testing.T) {
	tr := fakehost.New(t)
	for _, n := range []string{"0002", "0001", "tmp.i", "0010"} {
		tr.File("u/"+n, "", 0o644)
	}
	entries, err := tr.Root().ReadDir("/u")
	if err != nil {
		t.Fatal(err)
	}
	names, err := dpkgUpdateNames(entries)
	if err != nil || strings.Join(names, ",") != "0001,0002,0010" {
		t.Errorf("names %q, %v", names, err)
	}
	tr.File("u/12345", "", 0o644)
	entries, _ = tr.Root().ReadDir("/u")
	if _, err := dpkgUpdateNames(entries); err == nil {
		t.Error("names of different lengths accepted")
	}
}

func TestAlpmSplitName(t *testing.T) {
	for entry, want := range map[string]string{
		"device-mapper-2.03.26-1": "device-mapper 2.03.26-1",
		"nfs-utils-2.8.1-1":       "nfs-utils 2.8.1-1",
		"a-1-1":                   "a 1-1",
		"1-1":                     "",
		"-1-1":                    "",
		"nohyphen":                "",
	} {
		name, ver, ok := alpmSplitName(entry)
		got := ""
		if ok {
			got = name + " " + ver
		}
		if got != want {
			t.Errorf("alpmSplitName(%q) = %q, want %q", entry, got, want)
		}
	}
}

func TestPacmanProvides(t *testing.T) {
	desc := "%NAME%\nlvm2\n\n%PROVIDES%\ndevice-mapper=2.03\nlibdevmapper.so=1.02-64\nfoo>=1\nbar: why\nplain\n\n%DEPENDS%\nnotprovided\n"
	got := strings.Join(pacmanProvides([]byte(desc)), ",")
	if got != "device-mapper,libdevmapper.so,foo,bar,plain" {
		t.Errorf("provides %q", got)
	}
}

func TestPortageEntryIs(t *testing.T) {
	for _, tt := range []struct {
		entry, pn string
		want      bool
	}{
		{"lvm2-2.03.22-r5", "lvm2", true},
		{"lvm2-python-1.0", "lvm2", false},
		{"lvm2-", "lvm2", false},
		{"lvm22-1", "lvm2", false},
		{"-MERGING-lvm2-2.03", "lvm2", false},
		{"open-iscsi-2.1.10", "open-iscsi", true},
	} {
		if got := portageEntryIs(tt.entry, tt.pn); got != tt.want {
			t.Errorf("portageEntryIs(%q, %q) = %v", tt.entry, tt.pn, got)
		}
	}
}
