// Package labcni drives the CNI conflist of a lab node through libcni, as
// containerd does, and provides a tiny TCP echo workload for pods. It runs
// inside a node (cmd labpod); it never enters namespaces itself.
package labcni

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// Node paths, as a kubelet node has them.
const (
	ConfDir  = "/etc/cni/net.d"
	BinDir   = "/opt/cni/bin"
	CacheDir = "/var/lib/cni"
	IfName   = "eth0"
)

// Pod identifies one sandbox.
type Pod struct {
	ContainerID string
	NetNS       string
	Name        string
}

// Do runs CNI op (add, check, del) for pod with the first conflist in
// ConfDir (lexical order, as containerd picks it) and returns the result
// JSON for add.
func Do(ctx context.Context, op string, pod Pod) ([]byte, error) {
	files, err := filepath.Glob(filepath.Join(ConfDir, "*.conflist"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no conflist in %s", ConfDir)
	}
	sort.Strings(files)
	list, err := libcni.ConfListFromFile(files[0])
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", files[0], err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{BinDir}, CacheDir, nil)
	rt := &libcni.RuntimeConf{
		ContainerID: pod.ContainerID,
		NetNS:       pod.NetNS,
		IfName:      IfName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", "default"},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", pod.ContainerID},
		},
	}
	switch op {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return nil, fmt.Errorf("CNI ADD %s: %w", list.Name, err)
		}
		return json.Marshal(res)
	case "check":
		return nil, cni.CheckNetworkList(ctx, list, rt)
	case "del":
		return nil, cni.DelNetworkList(ctx, list, rt)
	}
	return nil, fmt.Errorf("unknown CNI op %q", op)
}

// Serve echoes every line it receives on each TCP connection.
func Serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			_, _ = io.Copy(c, c)
		}()
	}
}

// Probe connects to addr, sends payload and a newline, and requires the
// same line back.
func Probe(addr, payload string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, payload+"\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read echo from %s: %w", addr, err)
	}
	if strings.TrimSuffix(line, "\n") != payload {
		return fmt.Errorf("echo from %s differs: %q", addr, line)
	}
	return nil
}
