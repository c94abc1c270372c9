// Package install puts wgmesh's CNI plugins and network config where the
// node's container runtime finds them: it copies wgmesh and wgmesh-ipam (and
// portmap/bandwidth when the runtime has none) into the CNI bin dir, and
// writes 10-wgmesh.conflist into the CNI conf dir once the agent is ready.
//
// The dirs come from flags or from containerd's config.toml (k3s writes its
// own, and its CNI bin dir differs across releases). Every write is atomic
// (temp file + rename) and skipped when the file is already right, so a
// running containerd never executes or loads a half-written file and a second
// run changes nothing.
//
// It owns only the files it names (OwnPlugins, ConflistName, its temp files
// and the agent's state dir mode). It never overwrites another vendor's
// plugin or conflist, never edits containerd's config, and never touches the
// network.
package install
