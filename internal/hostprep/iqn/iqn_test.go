package iqn

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string // substring of the error; "" means valid
	}{
		{"open-iscsi", "iqn.2016-04.com.open-iscsi:1f2e3d4c5b6a", ""},
		{"rfc example", "iqn.2001-04.com.example:storage:diskarrays-sn-a8675309", ""},
		{"no suffix", "iqn.2001-04.com.example", ""},
		{"eui", "eui.02004567a425678d", ""},
		{"naa 64", "naa.52004567ba64678d", ""},
		{"naa 128", "naa.62004567ba64678d0123456789abcdef", ""},
		{"max length", "iqn.2001-04.com.example:" + strings.Repeat("a", MaxLen-24), ""},
		{"empty", "", "empty"},
		{"too long", "iqn.2001-04.com.example:" + strings.Repeat("a", MaxLen-23), "longer than 223"},
		{"upper case", "iqn.2001-04.com.Example", "upper-case 'E'"},
		{"upper eui", "eui.02004567A425678D", "upper-case 'A'"},
		{"en dash", "iqn.2016\u201304.com.open-iscsi:abc", "look-alike character U+2013"},
		{"cyrillic o", "iqn.2016-04.c\u043em.open-iscsi:abc", "look-alike character U+043E"},
		{"space", "iqn.2016-04.com.open iscsi", "white space"},
		{"underscore", "iqn.2016-04.com.open_iscsi", "'_' not allowed"},
		{"invalid utf8", "iqn.2016-04.com.\xffx", "not valid UTF-8"},
		{"no prefix", "2016-04.com.open-iscsi", `must start with "iqn."`},
		{"bad date", "iqn.16-04.com.example", `date must be "yyyy-mm"`},
		{"bad month", "iqn.2016-13.com.example", "month 13 out of range"},
		{"month zero", "iqn.2016-00.com.example", "month 00 out of range"},
		{"no authority dot", "iqn.2016-04com.example", `followed by "."`},
		{"empty authority", "iqn.2016-04.:abc", "naming authority (reversed domain name) is empty"},
		{"empty label", "iqn.2016-04.com..example", "empty label"},
		{"label dash", "iqn.2016-04.com.-example", "starts or ends with '-'"},
		{"empty after colon", "iqn.2016-04.com.example:", `nothing after ":"`},
		{"eui short", "eui.0200", "needs [16] hex digits"},
		{"eui not hex", "eui.02004567a425678g", "'g' is not a hex digit"},
		{"naa odd length", "naa.52004567ba64678d00", "needs [16 32] hex digits"},
		{"GenerateName placeholder", "GenerateName=yes", "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate(%q) = %v, want valid", tt.in, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate(%q) = nil, want error containing %q", tt.in, tt.wantErr)
			}
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("Validate(%q) error %T, want *InvalidError", tt.in, err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate(%q) = %v, want it to contain %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestGenerateIsValidAndFresh(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		name, err := Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if err := Validate(name); err != nil {
			t.Fatalf("generated name invalid: %v", err)
		}
		if !strings.HasPrefix(name, OpenISCSIPrefix+":") || len(name) != len(OpenISCSIPrefix)+1+12 {
			t.Fatalf("generated %q, want %s:<12 hex digits>", name, OpenISCSIPrefix)
		}
		if seen[name] {
			t.Fatalf("generated %q twice", name)
		}
		seen[name] = true
	}
}

func TestGenerateFixedSource(t *testing.T) {
	name, err := Generate(bytes.NewReader([]byte{0x01, 0x02, 0xab, 0xcd, 0x00, 0xff}))
	if err != nil {
		t.Fatal(err)
	}
	if want := "iqn.2016-04.com.open-iscsi:0102abcd00ff"; name != want {
		t.Fatalf("Generate = %q, want %q", name, want)
	}
	if _, err := Generate(bytes.NewReader([]byte{1, 2})); err == nil {
		t.Fatal("Generate with a short random source succeeded")
	}
}

func TestParseFile(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr error
	}{
		{"plain", "InitiatorName=iqn.2016-04.com.open-iscsi:abc\n", "iqn.2016-04.com.open-iscsi:abc", nil},
		{"comments and spaces", "## comment\n\n  InitiatorName=iqn.2016-04.com.open-iscsi:abc  \r\n", "iqn.2016-04.com.open-iscsi:abc", nil},
		{"first wins", "InitiatorName=iqn.2016-04.com.a\nInitiatorName=iqn.2016-04.com.b\n", "iqn.2016-04.com.a", nil},
		{"commented out", "#InitiatorName=iqn.2016-04.com.a\n", "", ErrNoInitiatorName},
		{"placeholder", "GenerateName=yes\n", "", ErrNoInitiatorName},
		{"empty file", "", "", ErrNoInitiatorName},
		{"empty value", "InitiatorName=\n", "", nil},
		{"no newline", "InitiatorName=iqn.2016-04.com.a", "iqn.2016-04.com.a", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFile(strings.NewReader(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ParseFile err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("ParseFile = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFileContentsRoundTrip(t *testing.T) {
	name := "iqn.2016-04.com.open-iscsi:0102abcd00ff"
	got, err := ParseFile(bytes.NewReader(FileContents(name)))
	if err != nil || got != name {
		t.Fatalf("ParseFile(FileContents(%q)) = %q, %v", name, got, err)
	}
}

// FuzzValidateInitiatorName checks that Validate never panics, that every
// accepted name obeys the RFC limits, and that file parsing agrees with it.
func FuzzValidateInitiatorName(f *testing.F) {
	for _, s := range []string{
		"iqn.2016-04.com.open-iscsi:1f2e3d4c5b6a", "eui.02004567a425678d",
		"naa.52004567ba64678d", "iqn.2016\u201304.com.x", "IQN.2016-04.COM.X",
		"iqn.2016-04.:", "", "iqn.", "iqn.2016-04.com.x:\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := Validate(name)
		if err != nil {
			var inv *InvalidError
			if !errors.As(err, &inv) || len(inv.Problems) == 0 {
				t.Fatalf("Validate(%q) = %v: want *InvalidError with problems", name, err)
			}
			return
		}
		if len(name) > MaxLen || !utf8.ValidString(name) {
			t.Fatalf("accepted %q (len %d)", name, len(name))
		}
		for i := 0; i < len(name); i++ {
			c := name[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == ':') {
				t.Fatalf("accepted %q with byte %q", name, c)
			}
		}
		if !strings.HasPrefix(name, "iqn.") && !strings.HasPrefix(name, "eui.") && !strings.HasPrefix(name, "naa.") {
			t.Fatalf("accepted %q without a type prefix", name)
		}
		got, perr := ParseFile(bytes.NewReader(FileContents(name)))
		if perr != nil || got != name {
			t.Fatalf("valid name %q does not round-trip through the file: %q, %v", name, got, perr)
		}
	})
}
