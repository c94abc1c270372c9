// Package kubenode turns a lab node (test/e2e/lab) into a real Kubernetes
// node: its own containerd and kubelet, running inside the node's network
// namespace and private mount namespace, with the node's CNI directories
// (filled by wgmesh's install step) and its own cgroup parent.
//
// It owns the node's containerd and kubelet processes, their config files,
// the private directories bind-mounted over /var/lib/kubelet,
// /var/lib/containerd, /run/containerd and /var/log/pods inside the node's
// mount namespace, the cgroups under the node's cgroup root, and the
// registry-less images it builds (pause, workload). It never touches the
// machine's own containerd or kubelet paths, the machine's network namespace,
// or the lab's control plane.
package kubenode
