package kubenode

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// nodeExec runs CNI plugins inside a lab node (its network and mount
// namespaces, where the node's subnet.env and IPAM store are), for libcni
// calls made from the test process. A multithreaded Go process cannot enter
// a mount namespace itself, so each plugin runs under nsenter.
type nodeExec struct {
	k *Node
}

var _ invoke.Exec = nodeExec{}

func (e nodeExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	cmd := e.k.Command(ctx, pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var cniErr types.Error
		if json.Unmarshal(stdout.Bytes(), &cniErr) == nil && cniErr.Code != 0 {
			return nil, &cniErr
		}
		return nil, fmt.Errorf("%s on %s: %w: %s%s", filepath.Base(pluginPath), e.k.Name, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

// FindInPath looks in the host paths of the node's bin dirs; they hold
// the same files the node sees.
func (e nodeExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (e nodeExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

// cniHostDir maps a directory inside the node to where the machine sees it.
func (k *Node) cniHostDir(nodePath string) string {
	switch nodePath {
	case DefaultCNIBinDir:
		return filepath.Join(k.Dir, "opt-cni-bin")
	case DefaultCNIConfDir:
		return filepath.Join(k.Dir, "etc-cni-net.d")
	case "/var/lib/cni":
		return filepath.Join(k.Dir, "var-lib-cni")
	}
	return nodePath
}

// Conflist loads the conflist containerd uses on the node: the first one in
// its conf dir, in lexical order (max_conf_num = 1).
func (k *Node) Conflist() (*libcni.NetworkConfigList, error) {
	dir := k.cniHostDir(k.Config.CNIConfDir)
	files, err := libcni.ConfFiles(dir, []string{".conflist"})
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no conflist in %s on %s: %v", dir, k.Name, err)
	}
	sort.Strings(files)
	return libcni.ConfListFromFile(files[0])
}

// SandboxIDs lists the pod sandboxes containerd knows on the node, running
// or not: the attachments a runtime would call valid.
func (k *Node) SandboxIDs(ctx context.Context) ([]string, error) {
	out, err := k.Ctr(ctx, "containers", "ls", "-q", `labels."io.cri-containerd.kind"==sandbox`)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes on %s: %w: %s", k.Name, err, out)
	}
	return strings.Fields(out), nil
}

// CNIGC runs CNI GC on the node's conflist as a CNI 1.1 runtime does after a
// restart: the valid attachments are containerd's sandboxes (interface
// eth0). containerd v2.4 never issues GC itself, so the lab plays that part.
func (k *Node) CNIGC(ctx context.Context) error {
	ids, err := k.SandboxIDs(ctx)
	if err != nil {
		return err
	}
	list, err := k.Conflist()
	if err != nil {
		return err
	}
	valid := make([]types.GCAttachment, 0, len(ids))
	for _, id := range ids {
		valid = append(valid, types.GCAttachment{ContainerID: id, IfName: "eth0"})
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{k.cniHostDir(k.Config.CNIBinDir)}, k.cniHostDir("/var/lib/cni"), nodeExec{k})
	if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		return fmt.Errorf("CNI GC on %s: %w", k.Name, err)
	}
	return nil
}

// CNIAdd attaches a sandbox that containerd does not know to the node's
// network: the network namespace netns (inside the node) gets an address
// exactly as a pod would. Tests use it to make allocations the runtime
// never recorded.
func (k *Node) CNIAdd(ctx context.Context, containerID, netns string) (*libcni.RuntimeConf, error) {
	list, err := k.Conflist()
	if err != nil {
		return nil, err
	}
	rt := &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "leak-" + containerID[:8]}}}
	cni := libcni.NewCNIConfigWithCacheDir([]string{k.cniHostDir(k.Config.CNIBinDir)}, k.cniHostDir("/var/lib/cni"), nodeExec{k})
	if _, err := cni.AddNetworkList(ctx, list, rt); err != nil {
		return nil, fmt.Errorf("CNI ADD %s on %s: %w", containerID, k.Name, err)
	}
	return rt, nil
}

// IPAMAllocations lists the addresses the node's IPAM store holds for
// network (one file per address, host-local's format), by address.
func (k *Node) IPAMAllocations(network string) (map[string]string, error) {
	dir := filepath.Join(k.cniHostDir("/var/lib/cni"), "networks", network)
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || name == "lock" || strings.HasPrefix(name, "last_reserved_ip") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue // released while we read
		}
		id, _, _ := strings.Cut(string(b), "\r\n")
		out[name] = strings.TrimSpace(id)
	}
	return out, nil
}
