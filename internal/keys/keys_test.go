package keys

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateWritesKey0600InDir0700(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "private.key")
	k, created, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("created = false for a missing file")
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %#o, want 0600", st.Mode().Perm())
	}
	dst, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("key dir mode = %#o, want 0700", dst.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if strings.TrimSpace(string(data)) != k.Key().String() {
		t.Error("file does not hold the returned key")
	}
	// No temporary file is left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries, want only the key", len(entries))
	}
}

func TestLoadOrCreateReusesKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "private.key")
	k1, _, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, created, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Error("created = true on the second start")
	}
	if k1.Key() != k2.Key() {
		t.Error("second start generated a different key")
	}
}

func TestLoadRefusesWorldReadableKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "private.key")
	if _, _, err := LoadOrCreate(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("err = %v, want a mode error", err)
	}
}

func TestLoadRefusesGarbageWithoutEchoingIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "private.key")
	secret := "not-a-key-but-secret-looking"
	if err := os.WriteFile(path, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadOrCreate(path)
	if err == nil {
		t.Fatal("garbage accepted")
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error echoes the file content: %v", err)
	}
	// The bad file is not replaced: that would silently change the identity.
	data, _ := os.ReadFile(path)
	if string(data) != secret {
		t.Error("bad key file was overwritten")
	}
}

func TestPrivateKeyNeverAppearsInLogsOrPrints(t *testing.T) {
	k, _, err := LoadOrCreate(filepath.Join(t.TempDir(), "private.key"))
	if err != nil {
		t.Fatal(err)
	}
	secret := k.Key().String()
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		log := slog.New(h)
		log.Info("key loaded", "key", k, "keyptr", &k, "public", k.PublicKey())
		log.Info("wrapped", "cfg", struct{ Key PrivateKey }{k})
	}
	fmt.Fprintf(&buf, "%v %+v %#v %s\n", k, k, k, k)
	fmt.Fprintf(&buf, "%v\n", struct{ K PrivateKey }{k})
	out := buf.String()
	if strings.Contains(out, secret) {
		t.Fatalf("private key leaked into output:\n%s", out)
	}
	if !strings.Contains(out, k.PublicKey().String()) {
		t.Error("public key missing from output (test is not logging what it thinks)")
	}
}
