package install

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Containerd's defaults when its config names no CNI dirs.
const (
	DefaultCNIBinDir  = "/opt/cni/bin"
	DefaultCNIConfDir = "/etc/cni/net.d"
)

// CNIDirs are the directories containerd's CRI plugin uses for CNI.
type CNIDirs struct {
	// BinDirs are searched in order for plugin binaries; install writes into
	// the first.
	BinDirs []string
	// ConfDir holds the network configs; containerd uses the first in
	// lexical order.
	ConfDir string
	// Source says where the dirs came from, for logs and errors.
	Source string
}

// criCNITables are the CRI plugin's cni tables by containerd config version:
// 4 (containerd 2.4's `config default`) and 3 (containerd 2.0-2.3, k3s
// releases with containerd 2.x) share the 2.x plugin names; 2 (containerd
// 1.x, older k3s); 1 (the short plugin names of containerd 1.0-1.2).
var criCNITables = map[int64][][]string{
	4: {{"plugins", "io.containerd.cri.v1.runtime", "cni"}},
	3: {{"plugins", "io.containerd.cri.v1.runtime", "cni"}},
	2: {{"plugins", "io.containerd.grpc.v1.cri", "cni"}},
	1: {{"plugins", "cri", "cni"}, {"plugins", "io.containerd.grpc.v1.cri", "cni"}},
}

// ParseContainerdCNIDirs reads the CNI bin and conf dirs from a containerd
// config.toml (config version 1 to 4). It parses with the TOML library
// containerd itself uses (pelletier/go-toml/v2), so any table, dotted key or
// inline table containerd accepts is read the same way here. Keys the config
// leaves out get containerd's defaults, as containerd itself does. In
// versions 3 and 4, bin_dirs wins over the deprecated bin_dir.
func ParseContainerdCNIDirs(doc []byte) (CNIDirs, error) {
	var cfg map[string]any
	if err := toml.Unmarshal(doc, &cfg); err != nil {
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, col := derr.Position()
			return CNIDirs{}, fmt.Errorf("parse containerd config: line %d column %d: %w", row, col, err)
		}
		return CNIDirs{}, fmt.Errorf("parse containerd config: %w", err)
	}
	version := int64(1)
	if raw, ok := cfg["version"]; ok {
		n, isInt := raw.(int64)
		if !isInt || criCNITables[n] == nil {
			return CNIDirs{}, fmt.Errorf("containerd config version %q is not one install knows (1-4); pass --cni-bin-dir and --cni-conf-dir", fmt.Sprint(raw))
		}
		version = n
	}
	dirs := CNIDirs{Source: fmt.Sprintf("containerd config version %d defaults", version)}
	for _, path := range criCNITables[version] {
		cni, err := lookupTable(cfg, path)
		if err != nil {
			return CNIDirs{}, err
		}
		binDirs, hasBinDirs, err := stringsKey(cni, path, "bin_dirs")
		if err != nil {
			return CNIDirs{}, err
		}
		binDir, hasBinDir, err := stringKey(cni, path, "bin_dir")
		if err != nil {
			return CNIDirs{}, err
		}
		confDir, hasConfDir, err := stringKey(cni, path, "conf_dir")
		if err != nil {
			return CNIDirs{}, err
		}
		if !hasBinDirs && !hasBinDir && !hasConfDir {
			// Version 1 has two candidate tables: try the next one.
			continue
		}
		dirs.Source = fmt.Sprintf("containerd config version %d [%s]", version, tableName(path))
		switch {
		case len(binDirs) > 0:
			dirs.BinDirs = binDirs
		case binDir != "":
			dirs.BinDirs = []string{binDir}
		}
		dirs.ConfDir = confDir
		break
	}
	if len(dirs.BinDirs) == 0 {
		dirs.BinDirs = []string{DefaultCNIBinDir}
	}
	if dirs.ConfDir == "" {
		dirs.ConfDir = DefaultCNIConfDir
	}
	return dirs, nil
}

// lookupTable walks path through nested tables. A missing table is an empty
// one (containerd then uses its defaults); a path element that is not a table
// is an error, because containerd would refuse that config too and guessing
// its CNI dirs would put the plugins where containerd never looks.
func lookupTable(cfg map[string]any, path []string) (map[string]any, error) {
	cur := cfg
	for i, seg := range path {
		v, ok := cur[seg]
		if !ok {
			return nil, nil
		}
		t, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("containerd config: %s is %s, not a table", tableName(path[:i+1]), tomlType(v))
		}
		cur = t
	}
	return cur, nil
}

// stringKey reads a string key of table; present reports whether the key is
// there at all, so that an empty value still counts as set.
func stringKey(table map[string]any, path []string, key string) (s string, present bool, err error) {
	v, ok := table[key]
	if !ok {
		return "", false, nil
	}
	s, ok = v.(string)
	if !ok {
		return "", true, fmt.Errorf("containerd config: [%s] %s is %s, not a string", tableName(path), key, tomlType(v))
	}
	return s, true, nil
}

// stringsKey reads an array-of-strings key of table.
func stringsKey(table map[string]any, path []string, key string) (list []string, present bool, err error) {
	v, ok := table[key]
	if !ok {
		return nil, false, nil
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, true, fmt.Errorf("containerd config: [%s] %s is %s, not an array of strings", tableName(path), key, tomlType(v))
	}
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			return nil, true, fmt.Errorf("containerd config: [%s] %s[%d] is %s, not a string", tableName(path), key, i, tomlType(e))
		}
		list = append(list, s)
	}
	return list, true, nil
}

// tomlType names the TOML type of a decoded value, with its article, for
// error messages.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return "a date or time"
	}
}

// tableName renders a table path as containerd's docs write it: dotted,
// with segments that are not bare keys in double quotes.
func tableName(path []string) string {
	segs := make([]string, len(path))
	for i, seg := range path {
		segs[i] = seg
		if !isBareKey(seg) {
			segs[i] = strconv.Quote(seg)
		}
	}
	return strings.Join(segs, ".")
}

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
