// Package keys owns this node's WireGuard private key on disk: it generates
// the key once, stores it with mode 0600 in a 0700 directory, and reuses it on
// every restart (a new key per restart would leave stale peers everywhere).
//
// It never logs, prints or returns the key in a form that a log line or a
// %v could leak: PrivateKey redacts itself. It never touches the network.
package keys

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DefaultPath is where the agent keeps the key.
const DefaultPath = "/var/lib/wgmesh/private.key"

const redacted = "(redacted)"

// PrivateKey holds a WireGuard private key. Its String, GoString, Format-based
// printing and slog value are all redacted; use Key only to hand it to the
// device configuration.
type PrivateKey struct {
	k wgtypes.Key
}

// Key returns the raw key for the WireGuard device configuration.
func (p PrivateKey) Key() wgtypes.Key { return p.k }

// PublicKey is the public half, safe to publish.
func (p PrivateKey) PublicKey() wgtypes.Key { return p.k.PublicKey() }

// String redacts the key.
func (p PrivateKey) String() string { return redacted }

// GoString redacts the key under %#v.
func (p PrivateKey) GoString() string { return redacted }

// LogValue redacts the key in slog output.
func (p PrivateKey) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText redacts the key if someone JSON-encodes a struct holding it.
func (p PrivateKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LoadOrCreate returns the key stored at path, generating and storing a new
// one if the file does not exist. The directory is created with mode 0700.
// A new file is written to a temporary file opened with mode 0600 and renamed
// into place, so the key is never readable by others, not even for a moment,
// and a crash never leaves a half-written key. A file that exists but does not
// hold a valid key is an error: silently replacing it would change the node's
// identity.
func LoadOrCreate(path string) (PrivateKey, bool, error) {
	k, err := Load(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return PrivateKey{}, false, err
	}
	gen, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return PrivateKey{}, false, fmt.Errorf("generate private key: %w", err)
	}
	if err := write(path, gen); err != nil {
		if errors.Is(err, os.ErrExist) {
			// Another process stored a key first: that one is the identity.
			k, err := Load(path)
			return k, false, err
		}
		return PrivateKey{}, false, err
	}
	return PrivateKey{k: gen}, true, nil
}

// Load reads the key at path. A missing file gives an error wrapping
// os.ErrNotExist. A file readable by group or others is refused.
func Load(path string) (PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return PrivateKey{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return PrivateKey{}, fmt.Errorf("private key %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return PrivateKey{}, fmt.Errorf("private key %s is not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return PrivateKey{}, fmt.Errorf("private key %s has mode %#o: it must not be readable by group or others (chmod 600 it)", path, st.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, 256))
	if err != nil {
		return PrivateKey{}, fmt.Errorf("read private key %s: %w", path, err)
	}
	// Never include the content in the error.
	k, err := wgtypes.ParseKey(string(bytes.TrimSpace(data)))
	if err != nil {
		return PrivateKey{}, fmt.Errorf("private key %s does not hold a base64 WireGuard key (remove it to generate a new one, which changes this node's identity)", path)
	}
	return PrivateKey{k: k}, nil
}

func write(path string, k wgtypes.Key) error {
	dir := filepath.Dir(path)
	// A directory that exists keeps its mode: the operator chose it (and
	// chmod-ing /tmp or /etc would be a disaster); the file itself is 0600.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create key directory %s: %w", dir, err)
	}
	// os.CreateTemp opens with O_CREATE|O_EXCL and mode 0600 from the start.
	f, err := os.CreateTemp(dir, ".private.key-*")
	if err != nil {
		return fmt.Errorf("create key file in %s: %w", dir, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.WriteString(k.String() + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	// Link rather than rename: if another process created the key meanwhile,
	// keep theirs instead of replacing the identity it may have published.
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("store private key %s: %w", path, err)
	}
	return nil
}
