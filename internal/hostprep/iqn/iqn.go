// Package iqn validates and generates iSCSI names (RFC 3720 section 3.2.6,
// RFC 3721, RFC 3722) and reads the InitiatorName file that open-iscsi's
// iscsid loads at start.
//
// It is pure: no file system, no clock, no global randomness (the caller
// passes the random source). It must never decide what to do with a host;
// it only says whether a name is well formed and why not.
package iqn

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxLen is the longest iSCSI name in bytes (RFC 3720 section 3.2.6.1,
// UTF-8 encoded, not counting a terminator).
const MaxLen = 223

// OpenISCSIPrefix is the prefix open-iscsi's iscsi-iname uses today.
const OpenISCSIPrefix = "iqn.2016-04.com.open-iscsi"

// ErrNoInitiatorName says the file holds no InitiatorName= line, which is
// what iscsid reports as "does not contain a properly formatted InitiatorName".
var ErrNoInitiatorName = errors.New("no InitiatorName= line")

// Problem is one reason a name is not a valid iSCSI name. Offset is the
// byte offset of the offending character, or -1 when the problem is the
// whole name.
type Problem struct {
	Offset int
	Msg    string
}

func (p Problem) String() string {
	if p.Offset < 0 {
		return p.Msg
	}
	return fmt.Sprintf("byte %d: %s", p.Offset, p.Msg)
}

// InvalidError lists every problem found in one name.
type InvalidError struct {
	Name     string
	Problems []Problem
}

func (e *InvalidError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.String()
	}
	return fmt.Sprintf("invalid iSCSI name %q: %s", e.Name, strings.Join(msgs, "; "))
}

// lookAlikes maps characters people paste from word processors to the
// ASCII character they were meant to be.
var lookAlikes = map[rune]string{
	'\u2010': "-", // hyphen
	'\u2011': "-", // non-breaking hyphen
	'\u2012': "-", // figure dash
	'\u2013': "-", // en dash
	'\u2014': "-", // em dash
	'\u2212': "-", // minus sign
	'\uFE63': "-", // small hyphen-minus
	'\uFF0D': "-", // fullwidth hyphen-minus
	'\u00B7': ".", // middle dot
	'\u2024': ".", // one dot leader
	'\uFF0E': ".", // fullwidth full stop
	'\u2236': ":", // ratio
	'\uFF1A': ":", // fullwidth colon
	'\u0131': "i", // dotless i
	'\u0430': "a", // Cyrillic a
	'\u0435': "e", // Cyrillic e
	'\u043E': "o", // Cyrillic o
	'\u0440': "p", // Cyrillic er
	'\u0441': "c", // Cyrillic es
	'\u0445': "x", // Cyrillic ha
	'\u00A0': " ", // no-break space
	'\u200B': "",  // zero-width space
	'\uFEFF': "",  // byte order mark
}

// Validate reports whether name is a well formed iSCSI name in normalized
// (lower case, ASCII) form: "iqn." date "." reversed domain [":" anything],
// "eui." 16 hex digits, or "naa." 16 or 32 hex digits. It returns nil or an
// *InvalidError naming every problem, including look-alike characters such
// as an en dash where a hyphen belongs.
func Validate(name string) error {
	var probs []Problem
	add := func(off int, format string, a ...any) {
		probs = append(probs, Problem{Offset: off, Msg: fmt.Sprintf(format, a...)})
	}
	if name == "" {
		return &InvalidError{Name: name, Problems: []Problem{{Offset: -1, Msg: "empty"}}}
	}
	if len(name) > MaxLen {
		add(-1, "%d bytes, longer than %d", len(name), MaxLen)
	}
	for i := 0; i < len(name); {
		r, size := utf8.DecodeRuneInString(name[i:])
		off := i
		i += size
		switch {
		case r == utf8.RuneError && size == 1:
			add(off, "byte 0x%02x is not valid UTF-8", name[off])
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.', r == ':':
		case r >= 'A' && r <= 'Z':
			add(off, "upper-case %q: iSCSI names are normalized to lower case (RFC 3722)", r)
		default:
			if want, ok := lookAlikes[r]; ok {
				add(off, "look-alike character %U %q where ASCII %q was probably meant", r, r, want)
			} else if unicode.IsSpace(r) || unicode.IsControl(r) {
				add(off, "white space or control character %U", r)
			} else {
				add(off, "character %U %q not allowed (only a-z 0-9 - . :)", r, r)
			}
		}
	}
	lower := strings.ToLower(name)
	switch {
	case strings.HasPrefix(lower, "iqn."):
		probs = append(probs, validateIQN(name)...)
	case strings.HasPrefix(lower, "eui."):
		probs = append(probs, validateHex(name, 4, []int{16})...)
	case strings.HasPrefix(lower, "naa."):
		probs = append(probs, validateHex(name, 4, []int{16, 32})...)
	default:
		add(-1, `must start with "iqn.", "eui." or "naa."`)
	}
	if len(probs) == 0 {
		return nil
	}
	return &InvalidError{Name: name, Problems: probs}
}

// validateIQN checks "iqn.yyyy-mm.reversed.domain[:suffix]" beyond the
// character set, which Validate already checked.
func validateIQN(name string) []Problem {
	var probs []Problem
	rest := name[len("iqn."):]
	// Date: yyyy-mm, a month in which the naming authority owned the domain.
	if len(rest) < 7 || !isDigits(rest[0:4]) || rest[4] != '-' || !isDigits(rest[5:7]) {
		return append(probs, Problem{Offset: 4, Msg: `date must be "yyyy-mm"`})
	}
	if m := (rest[5]-'0')*10 + rest[6] - '0'; m < 1 || m > 12 {
		probs = append(probs, Problem{Offset: 9, Msg: fmt.Sprintf("month %s out of range", rest[5:7])})
	}
	rest = rest[7:]
	if rest == "" || rest[0] != '.' {
		return append(probs, Problem{Offset: 11, Msg: `date must be followed by "." and a reversed domain name`})
	}
	authority, suffix, hasSuffix := strings.Cut(rest[1:], ":")
	if hasSuffix && suffix == "" {
		probs = append(probs, Problem{Offset: len(name) - 1, Msg: `nothing after ":"`})
	}
	if authority == "" {
		return append(probs, Problem{Offset: 12, Msg: "naming authority (reversed domain name) is empty"})
	}
	for _, label := range strings.Split(authority, ".") {
		switch {
		case label == "":
			probs = append(probs, Problem{Offset: -1, Msg: fmt.Sprintf("empty label in naming authority %q", authority)})
		case label[0] == '-' || label[len(label)-1] == '-':
			probs = append(probs, Problem{Offset: -1, Msg: fmt.Sprintf("label %q in naming authority starts or ends with '-'", label)})
		}
	}
	return probs
}

func validateHex(name string, prefixLen int, lengths []int) []Problem {
	digits := name[prefixLen:]
	okLen := false
	for _, l := range lengths {
		okLen = okLen || len(digits) == l
	}
	var probs []Problem
	if !okLen {
		probs = append(probs, Problem{Offset: -1, Msg: fmt.Sprintf("%q needs %v hex digits, has %d characters", name[:prefixLen], lengths, len(digits))})
	}
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			probs = append(probs, Problem{Offset: prefixLen + i, Msg: fmt.Sprintf("%q is not a hex digit", c)})
			break
		}
	}
	return probs
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// Generate returns a fresh initiator name in the style of open-iscsi's
// iscsi-iname: OpenISCSIPrefix, ":", and 12 lower-case hex digits (6 bytes)
// read from random. It fails only if random fails.
func Generate(random io.Reader) (string, error) {
	var b [6]byte
	if _, err := io.ReadFull(random, b[:]); err != nil {
		return "", fmt.Errorf("read random bytes for initiator name: %w", err)
	}
	return fmt.Sprintf("%s:%x", OpenISCSIPrefix, b[:]), nil
}

// ParseFile returns the InitiatorName value from the contents of an
// initiatorname.iscsi file the way iscsid reads it: the first line (leading
// white space skipped, '#' comments ignored) starting with "InitiatorName="
// gives the name, with surrounding white space removed. It returns
// ErrNoInitiatorName when no such line exists. The name is not validated.
func ParseFile(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for sc.Scan() {
		line := strings.TrimLeft(sc.Text(), " \t")
		if line == "" || line[0] == '#' {
			continue
		}
		if v, ok := strings.CutPrefix(line, "InitiatorName="); ok {
			return strings.TrimSpace(v), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read initiator name file: %w", err)
	}
	return "", ErrNoInitiatorName
}

// FileContents is what a fresh initiatorname.iscsi holds for name.
func FileContents(name string) []byte {
	return []byte("## Written by wgmesh-hostprep (open-iscsi iscsi-iname style).\n" +
		"## iscsid reads the InitiatorName line; keep it unique per host.\n" +
		"InitiatorName=" + name + "\n")
}
