package hostprep

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"

	"github.com/wgmesh/wgmesh/internal/hostfs"
)

// dpkgAdminDir is dpkg's database: the status file, and the updates
// journal dpkg applies on top of it when it reads, even read-only.
const dpkgAdminDir = "/var/lib/dpkg"

// dpkgMaxUpdateName is dpkg's IMPORTANTMAXLEN: an updates file name is at
// most this many digits.
const dpkgMaxUpdateName = 10

// dpkgDB holds the lines `dpkg -l` prints for the host's status database,
// one per package that is not not-installed.
type dpkgDB struct{ lines []string }

// installed applies Longhorn's `dpkg -l | grep -w name`.
func (d dpkgDB) installed(name string) (string, bool) {
	for _, l := range d.lines {
		if grepWord(l, name) {
			return "matches " + l, true
		}
	}
	return fmt.Sprintf("no line of the %d that dpkg -l lists has the word %s (%s/status)", len(d.lines), name, dpkgAdminDir), false
}

// openDpkg reads the status database as dpkg does: the status file, then
// each updates/<digits> file in name order, whose stanzas replace the
// packages' entries. A database dpkg would refuse is an error.
func openDpkg(root hostfs.Root) (packageDB, error) {
	b, err := root.ReadFile(dpkgAdminDir + "/status")
	if err != nil {
		return nil, err
	}
	db := map[string]dpkgEntry{}
	if err := addDpkgStanzas(db, b); err != nil {
		return nil, fmt.Errorf("%s/status: %w", dpkgAdminDir, err)
	}
	updates := dpkgAdminDir + "/updates"
	entries, err := root.ReadDir(updates)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	names, err := dpkgUpdateNames(entries)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", updates, err)
	}
	for _, n := range names {
		b, err := root.ReadFile(updates + "/" + n)
		if err != nil {
			return nil, err
		}
		if err := addDpkgStanzas(db, b); err != nil {
			return nil, fmt.Errorf("%s/%s: %w", updates, n, err)
		}
	}
	var d dpkgDB
	for _, key := range slices.Sorted(maps.Keys(db)) {
		if l, listed := db[key].listLine(); listed {
			d.lines = append(d.lines, l)
		}
	}
	return d, nil
}

// dpkgUpdateNames picks the journal files dpkg reads from updates/: names
// of digits only, all of one length of at most dpkgMaxUpdateName (dpkg
// stops otherwise), in name order.
func dpkgUpdateNames(entries []fs.DirEntry) ([]string, error) {
	var names []string
	for _, e := range entries {
		n := e.Name()
		if strings.Trim(n, "0123456789") != "" {
			continue
		}
		if len(n) > dpkgMaxUpdateName {
			return nil, fmt.Errorf("file name %q is too long for dpkg", n)
		}
		if len(names) > 0 && len(n) != len(names[0]) {
			return nil, fmt.Errorf("file names of different lengths (%q, %q): dpkg refuses them", names[0], n)
		}
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

// dpkgEntry is one package of the status database.
type dpkgEntry struct {
	pkg, arch, version, status, description string
}

// addDpkgStanzas parses stanzas into db, keyed by package and
// architecture as dpkg keys them; a later stanza replaces an earlier.
func addDpkgStanzas(db map[string]dpkgEntry, b []byte) error {
	stanzas, err := controlStanzas(b)
	if err != nil {
		return err
	}
	for _, f := range stanzas {
		e := dpkgEntry{pkg: f["package"], arch: f["architecture"], version: f["version"], status: f["status"], description: f["description"]}
		if e.pkg == "" {
			return fmt.Errorf("a stanza has no Package field")
		}
		if _, _, err := e.states(); err != nil {
			return fmt.Errorf("package %s: %w", e.pkg, err)
		}
		db[e.pkg+":"+e.arch] = e
	}
	return nil
}

// controlStanzas parses Debian control data (deb822) as dpkg's parser
// does: stanzas separated by empty lines, "Name: value" fields whose names
// are compared without case (returned lower-cased), continuation lines
// starting with a space or a tab (appended after a newline). What dpkg
// refuses is an error: a line without a colon after the name, an empty
// name or one starting with a hyphen, a field twice in a stanza, a
// continuation line that is blank or starts a stanza.
func controlStanzas(b []byte) ([]map[string]string, error) {
	var out []map[string]string
	var cur map[string]string
	last := ""
	for n, line := range strings.Split(string(b), "\n") {
		switch {
		case line == "":
			if cur != nil {
				out = append(out, cur)
				cur = nil
			}
		case line[0] == ' ' || line[0] == '\t':
			if cur == nil {
				return nil, fmt.Errorf("line %d: empty field name", n+1)
			}
			if strings.TrimLeft(line, " \t") == "" {
				return nil, fmt.Errorf("line %d: blank line in the value of field %s", n+1, last)
			}
			cur[last] += "\n" + line[1:]
		default:
			name, value, ok := strings.Cut(line, ":")
			name = strings.TrimRight(name, " \t")
			switch {
			case !ok || strings.ContainsAny(name, " \t"):
				return nil, fmt.Errorf("line %d: field name %q must be followed by a colon", n+1, name)
			case name == "" || name[0] == '-':
				return nil, fmt.Errorf("line %d: invalid field name %q", n+1, name)
			}
			if cur == nil {
				cur = map[string]string{}
			}
			last = strings.ToLower(name)
			if _, dup := cur[last]; dup {
				return nil, fmt.Errorf("line %d: field %s twice in a stanza", n+1, name)
			}
			cur[last] = strings.Trim(value, " \t")
		}
	}
	if cur != nil {
		out = append(out, cur)
	}
	return out, nil
}

// The letters dpkg -l shows for the words of the Status field.
var (
	dpkgWant  = map[string]byte{"unknown": 'u', "install": 'i', "hold": 'h', "deinstall": 'r', "purge": 'p'}
	dpkgEflag = map[string]byte{"ok": ' ', "reinstreq": 'R'}
	dpkgState = map[string]byte{"not-installed": 'n', "config-files": 'c', "half-installed": 'H', "unpacked": 'U',
		"half-configured": 'F', "triggers-awaited": 'W', "triggers-pending": 't', "installed": 'i'}
)

// states returns the three letters of the Status field ("install ok
// installed" is "ii "); a Status dpkg does not accept is an error, as dpkg
// then refuses the whole database. No Status field is not-installed.
func (e dpkgEntry) states() (string, bool, error) {
	if e.status == "" {
		return "un ", false, nil
	}
	words := strings.Fields(e.status)
	if len(words) != 3 {
		return "", false, fmt.Errorf("Status %q is not three words", e.status)
	}
	want, ok1 := dpkgWant[words[0]]
	eflag, ok2 := dpkgEflag[words[1]]
	state, ok3 := dpkgState[words[2]]
	if !ok1 || !ok2 || !ok3 {
		return "", false, fmt.Errorf("Status %q has a word dpkg does not know", e.status)
	}
	return string([]byte{want, state, eflag}), state != 'n', nil
}

// listLine is the line `dpkg -l` prints for the entry (its columns joined
// by single spaces: grep -w cannot tell the difference) and whether it
// prints one at all.
func (e dpkgEntry) listLine() (string, bool) {
	letters, listed, err := e.states()
	if err != nil || !listed {
		return "", false
	}
	summary, _, _ := strings.Cut(e.description, "\n")
	if summary == "" {
		summary = "(no description available)"
	}
	return strings.Join([]string{letters, e.pkg, e.version, e.arch, summary}, " "), true
}

// grepWord reports whether `grep -w word` matches text: some line has word
// with no word character (letter, digit, underscore) right before or after
// it. Bytes of multibyte characters count as word characters, as letters
// do in a UTF-8 locale, so this never matches where grep would not.
func grepWord(text, word string) bool {
	if word == "" {
		return false
	}
	for _, line := range strings.Split(text, "\n") {
		for i := 0; i+len(word) <= len(line); {
			j := strings.Index(line[i:], word)
			if j < 0 {
				break
			}
			start, end := i+j, i+j+len(word)
			if (start == 0 || !isWordByte(line[start-1])) && (end == len(line) || !isWordByte(line[end])) {
				return true
			}
			i = start + 1
		}
	}
	return false
}

func isWordByte(b byte) bool {
	return b == '_' || b >= 0x80 || ('0' <= b && b <= '9') || ('a' <= b && b <= 'z') || ('A' <= b && b <= 'Z')
}
