// Package kubenode turns a lab node (test/e2e/lab) into a real Kubernetes
// node: its own containerd and kubelet, running inside the node's network
// namespace and private mount namespace, with the node's CNI directories
// (filled by wgmesh's install step) and its own cgroup parent.
//
// It owns the node's containerd and kubelet processes, their config files
// (Node.Dir/kubenode), the mounts it makes inside the node's mount
// namespace (the machine's cgroup hierarchies again at /sys/fs/cgroup; the
// node's own /var/lib/kubelet, /var/lib/containerd, /run/containerd,
// /var/log/pods and /var/log/containers; files covering the /proc/sys
// tunables the kubelet would otherwise change machine-wide), the cgroups
// under /wgmesh-lab/<lab id>-<node>, and the registry-less images it builds
// (pause, workload). It never touches the machine's own containerd or
// kubelet paths, the machine's sysctls or network namespace, or the lab's
// control plane.
package kubenode
