package install

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// tomlValues is what scanTOML keeps of a document: every string, array of
// strings and scalar (as raw text), by full key path (table path + dotted
// key, segments joined with keySep). Inline tables, other arrays and arrays
// of tables are skipped: containerd's CNI paths never use them.
type tomlValues struct {
	strings map[string]string
	arrays  map[string][]string
	// scalars holds the raw text of numbers, booleans and dates.
	scalars map[string]string
}

// keySep joins key segments; it cannot appear in a TOML key we look up.
const keySep = "\x00"

func tomlKey(segments ...string) string { return strings.Join(segments, keySep) }

// scanTOML reads the subset of TOML that containerd configs use: [tables],
// [[arrays of tables]] (skipped), bare/quoted/dotted keys, basic and literal
// strings (single and multi-line), arrays (possibly across lines), comments.
// The module graph has no TOML library, and the three keys install needs do
// not justify adding one; the scanner is fuzzed instead.
func scanTOML(doc string) (*tomlValues, error) {
	s := &tomlScanner{src: doc, line: 1}
	v := &tomlValues{strings: map[string]string{}, arrays: map[string][]string{}, scalars: map[string]string{}}
	var table []string
	inArrayTable := false
	for {
		s.skipBlank(true)
		if s.eof() {
			return v, nil
		}
		if s.peek() == '[' {
			s.next()
			array := false
			if s.peek() == '[' {
				s.next()
				array = true
			}
			path, err := s.keyPath()
			if err != nil {
				return nil, err
			}
			if err := s.expect(']'); err != nil {
				return nil, err
			}
			if array {
				if err := s.expect(']'); err != nil {
					return nil, err
				}
			}
			table, inArrayTable = path, array
			if err := s.endOfLine(); err != nil {
				return nil, err
			}
			continue
		}
		key, err := s.keyPath()
		if err != nil {
			return nil, err
		}
		if err := s.expect('='); err != nil {
			return nil, err
		}
		s.skipBlank(false)
		full := tomlKey(append(append([]string(nil), table...), key...)...)
		if err := s.value(v, full, !inArrayTable); err != nil {
			return nil, err
		}
		if err := s.endOfLine(); err != nil {
			return nil, err
		}
	}
}

type tomlScanner struct {
	src  string
	pos  int
	line int
}

func (s *tomlScanner) eof() bool { return s.pos >= len(s.src) }

// peek returns the next byte, or 0 at the end (no TOML token starts with 0).
func (s *tomlScanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.pos]
}

func (s *tomlScanner) next() byte {
	c := s.src[s.pos]
	s.pos++
	if c == '\n' {
		s.line++
	}
	return c
}

func (s *tomlScanner) errorf(format string, args ...any) error {
	return fmt.Errorf("line %d: %s", s.line, fmt.Sprintf(format, args...))
}

// skipBlank skips spaces, tabs and comments, and newlines too if newlines.
func (s *tomlScanner) skipBlank(newlines bool) {
	for !s.eof() {
		switch c := s.peek(); {
		case c == ' ' || c == '\t' || c == '\r':
			s.next()
		case c == '\n' && newlines:
			s.next()
		case c == '#':
			for !s.eof() && s.peek() != '\n' {
				s.next()
			}
		default:
			return
		}
	}
}

func (s *tomlScanner) expect(c byte) error {
	s.skipBlank(false)
	if s.eof() {
		return s.errorf("want %q, got end of file", c)
	}
	if got := s.peek(); got != c {
		return s.errorf("want %q, got %q", c, got)
	}
	s.next()
	return nil
}

// endOfLine accepts only blanks and a comment before the next line.
func (s *tomlScanner) endOfLine() error {
	s.skipBlank(false)
	if s.eof() {
		return nil
	}
	if c := s.peek(); c != '\n' {
		return s.errorf("unexpected %q after value", c)
	}
	s.next()
	return nil
}

// keyPath reads a dotted key: segments are bare (A-Za-z0-9_-) or quoted.
func (s *tomlScanner) keyPath() ([]string, error) {
	var path []string
	for {
		s.skipBlank(false)
		if s.eof() {
			return nil, s.errorf("want a key, got end of file")
		}
		var seg string
		switch c := s.peek(); {
		case c == '"':
			str, err := s.basicString()
			if err != nil {
				return nil, err
			}
			seg = str
		case c == '\'':
			str, err := s.literalString()
			if err != nil {
				return nil, err
			}
			seg = str
		case isBareKeyChar(c):
			start := s.pos
			for !s.eof() && isBareKeyChar(s.peek()) {
				s.next()
			}
			seg = s.src[start:s.pos]
		default:
			return nil, s.errorf("want a key, got %q", c)
		}
		path = append(path, seg)
		s.skipBlank(false)
		if s.eof() || s.peek() != '.' {
			return path, nil
		}
		s.next()
	}
}

func isBareKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// value reads one value; strings and string arrays are stored under key when
// keep is set (values inside arrays of tables are not addressable by path).
func (s *tomlScanner) value(v *tomlValues, key string, keep bool) error {
	if s.eof() {
		return s.errorf("want a value, got end of file")
	}
	switch s.peek() {
	case '"', '\'':
		str, err := s.stringValue()
		if err != nil {
			return err
		}
		if keep {
			v.strings[key] = str
		}
		return nil
	case '[':
		arr, err := s.array()
		if err != nil {
			return err
		}
		if keep && arr != nil {
			v.arrays[key] = arr
		}
		return nil
	case '{':
		return s.skipInlineTable()
	default:
		raw, err := s.scalar()
		if err != nil {
			return err
		}
		if keep {
			v.scalars[key] = raw
		}
		return nil
	}
}

func (s *tomlScanner) stringValue() (string, error) {
	if strings.HasPrefix(s.src[s.pos:], `"""`) {
		return s.multiLine(`"""`, true)
	}
	if strings.HasPrefix(s.src[s.pos:], `'''`) {
		return s.multiLine(`'''`, false)
	}
	if s.peek() == '"' {
		return s.basicString()
	}
	return s.literalString()
}

// array reads [v, v, ...] across lines. It returns the strings when every
// element is a string, nil otherwise (nested arrays, numbers, tables).
func (s *tomlScanner) array() ([]string, error) {
	s.next() // '['
	out := []string{}
	allStrings := true
	for {
		s.skipBlank(true)
		if s.eof() {
			return nil, s.errorf("unterminated array")
		}
		if s.peek() == ']' {
			s.next()
			if !allStrings {
				return nil, nil
			}
			return out, nil
		}
		switch s.peek() {
		case '"', '\'':
			str, err := s.stringValue()
			if err != nil {
				return nil, err
			}
			out = append(out, str)
		case '[':
			if _, err := s.array(); err != nil {
				return nil, err
			}
			allStrings = false
		case '{':
			if err := s.skipInlineTable(); err != nil {
				return nil, err
			}
			allStrings = false
		default:
			if _, err := s.scalar(); err != nil {
				return nil, err
			}
			allStrings = false
		}
		s.skipBlank(true)
		if s.eof() {
			return nil, s.errorf("unterminated array")
		}
		switch s.peek() {
		case ',':
			s.next()
		case ']':
		default:
			return nil, s.errorf("want ',' or ']' in array, got %q", s.peek())
		}
	}
}

// skipInlineTable skips { ... } on one logical value, honouring strings.
func (s *tomlScanner) skipInlineTable() error {
	depth := 0
	for !s.eof() {
		switch s.peek() {
		case '{', '[':
			depth++
			s.next()
		case '}', ']':
			depth--
			s.next()
			if depth == 0 {
				return nil
			}
		case '"', '\'':
			if _, err := s.stringValue(); err != nil {
				return err
			}
		case '\n':
			return s.errorf("newline inside inline table")
		default:
			s.next()
		}
	}
	return s.errorf("unterminated inline table")
}

// scalar reads a number, boolean or date as raw text: everything up to a
// delimiter that can follow a value.
func (s *tomlScanner) scalar() (string, error) {
	start := s.pos
	for !s.eof() {
		c := s.peek()
		if c == ',' || c == ']' || c == '}' || c == '\n' || c == '#' {
			break
		}
		s.next()
	}
	raw := strings.TrimSpace(s.src[start:s.pos])
	if raw == "" {
		return "", s.errorf("want a value")
	}
	return raw, nil
}

func (s *tomlScanner) literalString() (string, error) {
	s.next() // '
	start := s.pos
	for !s.eof() {
		switch s.peek() {
		case '\'':
			str := s.src[start:s.pos]
			s.next()
			return str, nil
		case '\n':
			return "", s.errorf("newline in literal string")
		}
		s.next()
	}
	return "", s.errorf("unterminated literal string")
}

func (s *tomlScanner) basicString() (string, error) {
	s.next() // "
	var b strings.Builder
	for !s.eof() {
		if s.peek() == '\n' {
			return "", s.errorf("newline in string")
		}
		c := s.next()
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if err := s.escape(&b); err != nil {
				return "", err
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", s.errorf("unterminated string")
}

// multiLine reads a """ or ”' string; a newline right after the opening
// delimiter is trimmed, as TOML says.
func (s *tomlScanner) multiLine(delim string, escapes bool) (string, error) {
	for range delim {
		s.next()
	}
	if strings.HasPrefix(s.src[s.pos:], "\r\n") {
		s.next()
		s.next()
	} else if !s.eof() && s.peek() == '\n' {
		s.next()
	}
	var b strings.Builder
	for !s.eof() {
		if strings.HasPrefix(s.src[s.pos:], delim) {
			for range delim {
				s.next()
			}
			// Up to two quotes may directly follow inside the string.
			for i := 0; i < 2 && !s.eof() && s.peek() == delim[0]; i++ {
				b.WriteByte(s.next())
			}
			return b.String(), nil
		}
		c := s.next()
		if escapes && c == '\\' {
			if !s.eof() && (s.peek() == '\n' || s.peek() == ' ' || s.peek() == '\t' || s.peek() == '\r') {
				// Line-ending backslash: trim whitespace up to the next text.
				for !s.eof() && strings.IndexByte(" \t\r\n", s.peek()) >= 0 {
					s.next()
				}
				continue
			}
			if err := s.escape(&b); err != nil {
				return "", err
			}
			continue
		}
		b.WriteByte(c)
	}
	return "", s.errorf("unterminated multi-line string")
}

func (s *tomlScanner) escape(b *strings.Builder) error {
	if s.eof() {
		return s.errorf("unterminated escape")
	}
	c := s.next()
	switch c {
	case 'b':
		b.WriteByte('\b')
	case 't':
		b.WriteByte('\t')
	case 'n':
		b.WriteByte('\n')
	case 'f':
		b.WriteByte('\f')
	case 'r':
		b.WriteByte('\r')
	case 'e':
		b.WriteByte(0x1b)
	case '"', '\\':
		b.WriteByte(c)
	case 'u', 'U':
		n := 4
		if c == 'U' {
			n = 8
		}
		if s.pos+n > len(s.src) {
			return s.errorf("short \\%c escape", c)
		}
		code, err := strconv.ParseUint(s.src[s.pos:s.pos+n], 16, 32)
		if err != nil || !utf8.ValidRune(rune(code)) {
			return s.errorf("bad \\%c escape %q", c, s.src[s.pos:s.pos+n])
		}
		for range n {
			s.next()
		}
		b.WriteRune(rune(code))
	default:
		return s.errorf("bad escape \\%c", c)
	}
	return nil
}
