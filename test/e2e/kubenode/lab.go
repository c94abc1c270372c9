package kubenode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// BuildImages builds the lab's images (pause, workload and CoreDNS) into
// <lab dir>/images and returns the archives to import on every node.
func BuildImages(ctx context.Context, l *lab.Lab) ([]string, error) {
	dir := filepath.Join(l.Dir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var tars []string
	for _, img := range []Image{PauseImage, WorkloadImage} {
		tar, err := BuildImage(ctx, l.Repo, dir, img)
		if err != nil {
			return nil, err
		}
		tars = append(tars, tar)
	}
	coredns, err := BuildCoreDNSImage(l, dir)
	if err != nil {
		return nil, err
	}
	return append(tars, coredns), nil
}

// AddNode makes a lab node that runs containerd and kubelet: the node's
// namespaces and CNI dirs (lab.NewNode, which installs the plugins and the
// conflist), the private kubelet/containerd dirs, containerd with images
// imported, and the kubelet, which registers the Node object itself (so
// lab.RegisterNode must not be called for it). It returns once the Node
// exists; the wgmesh agent is not started (lab.StartAgent), so the node
// stays NotReady until it is: containerd's CNI STATUS fails without it.
func AddNode(ctx context.Context, l *lab.Lab, name string, images []string) (*Node, error) {
	n, err := l.NewNode(ctx, name)
	if err != nil {
		return nil, err
	}
	k, err := Setup(ctx, l, n)
	if err != nil {
		return nil, err
	}
	if err := k.StartContainerd(ctx, images...); err != nil {
		return k, err
	}
	if err := k.StartKubelet(ctx); err != nil {
		return k, err
	}
	if _, err := k.WaitRegistered(ctx, 60*time.Second); err != nil {
		return k, err
	}
	return k, nil
}

// StartAgentAndWait starts the node's wgmesh agent and waits until the
// kubelet reports the Node Ready (NetworkReady through CNI STATUS).
func StartAgentAndWait(ctx context.Context, l *lab.Lab, k *Node, timeout time.Duration) error {
	if err := l.StartAgent(ctx, k.Node); err != nil {
		return fmt.Errorf("kubenode: node %s agent: %w", k.Name, err)
	}
	return k.WaitReady(ctx, timeout)
}
