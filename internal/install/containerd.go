package install

import (
	"fmt"
	"strconv"
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
var criCNITables = map[int][][]string{
	4: {{"plugins", "io.containerd.cri.v1.runtime", "cni"}},
	3: {{"plugins", "io.containerd.cri.v1.runtime", "cni"}},
	2: {{"plugins", "io.containerd.grpc.v1.cri", "cni"}},
	1: {{"plugins", "cri", "cni"}, {"plugins", "io.containerd.grpc.v1.cri", "cni"}},
}

// ParseContainerdCNIDirs reads the CNI bin and conf dirs from a containerd
// config.toml (config version 1 to 4). Keys the config leaves out get
// containerd's defaults, as containerd itself does. In version 3, bin_dirs
// wins over the deprecated bin_dir.
func ParseContainerdCNIDirs(doc []byte) (CNIDirs, error) {
	v, err := scanTOML(string(doc))
	if err != nil {
		return CNIDirs{}, fmt.Errorf("parse containerd config: %w", err)
	}
	version := 1
	if raw, ok := v.scalars[tomlKey("version")]; ok {
		n, err := strconv.Atoi(raw)
		if err != nil || criCNITables[n] == nil {
			return CNIDirs{}, fmt.Errorf("containerd config version %q is not one install knows (1-4); pass --cni-bin-dir and --cni-conf-dir", raw)
		}
		version = n
	}
	dirs := CNIDirs{Source: fmt.Sprintf("containerd config version %d defaults", version)}
	for _, table := range criCNITables[version] {
		k := func(name string) string { return tomlKey(append(append([]string(nil), table...), name)...) }
		binDirs, hasBinDirs := v.arrays[k("bin_dirs")]
		binDir, hasBinDir := v.strings[k("bin_dir")]
		confDir, hasConfDir := v.strings[k("conf_dir")]
		if !hasBinDirs && !hasBinDir && !hasConfDir {
			continue
		}
		dirs.Source = fmt.Sprintf("containerd config version %d [%s]", version, tableName(table))
		switch {
		case hasBinDirs && len(binDirs) > 0:
			dirs.BinDirs = binDirs
		case hasBinDir && binDir != "":
			dirs.BinDirs = []string{binDir}
		}
		if hasConfDir && confDir != "" {
			dirs.ConfDir = confDir
		}
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

// tableName renders a table path as containerd's docs write it.
func tableName(path []string) string {
	out := ""
	for i, seg := range path {
		if i > 0 {
			out += "."
		}
		if isBare(seg) {
			out += seg
		} else {
			out += strconv.Quote(seg)
		}
	}
	return out
}

func isBare(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isBareKeyChar(s[i]) {
			return false
		}
	}
	return true
}
