package kubenode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// privateDirs are bind-mounted, inside the node's mount namespace, from
// Node.Dir/<key> over the path: the node's own kubelet and containerd state.
var privateDirs = map[string]string{
	"var-lib-kubelet":    KubeletDir,
	"var-lib-containerd": ContainerdRoot,
	"run-containerd":     ContainerdState,
	"var-log-pods":       PodLogsDir,
	// The kubelet links every container log here; the path is fixed.
	"var-log-containers": "/var/log/containers",
}

// kernelTunables are the machine-wide sysctls the kubelet sets at start
// (pkg/kubelet/cm setupKernelTunables) unless protectKernelDefaults, which
// instead refuses to start when they differ. They are not namespaced: a lab
// kubelet would change the machine's kernel.panic_on_oops, among others.
// Inside the node's mount namespace each is covered by a bind-mounted file
// that already holds the kubelet's value, so the kubelet finds nothing to
// change and the machine's settings stay as they are.
var kernelTunables = map[string]string{
	"/proc/sys/vm/overcommit_memory":      "1",
	"/proc/sys/vm/panic_on_oom":           "0",
	"/proc/sys/kernel/panic":              "10",
	"/proc/sys/kernel/panic_on_oops":      "1",
	"/proc/sys/kernel/keys/root_maxkeys":  "1000000",
	"/proc/sys/kernel/keys/root_maxbytes": "25000000",
}

// Programs the node runs, found in the lab's Kubernetes binary cache
// (test/e2e/tools/build-k8s.sh kubelet containerd containerd-shim-runc-v2 ctr).
var Programs = []string{"kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr"}

// Node is a lab node that runs its own containerd and kubelet.
type Node struct {
	*lab.Node
	Config Config

	lab        *lab.Lab
	bin        string // the directory holding Programs
	confDir    string // host path of the generated config files
	mntNS      string // the node's mount namespace, as /proc/PID/ns/mnt reads
	containerd *lab.Process
	kubelet    *lab.Process
	proxy      *lab.Process
	netpol     *lab.Process
}

// Setup prepares n to run containerd and kubelet: the machine's cgroup
// hierarchies and the private directories (mounts inside the node), the
// kernel tunables covered, the config files under Node.Dir/kubenode and the
// cgroup root. It starts nothing.
func Setup(ctx context.Context, l *lab.Lab, n *lab.Node) (*Node, error) {
	k := &Node{
		Node: n,
		lab:  l,
		bin:  l.K8sBin,
		Config: Config{
			Name:       n.Name,
			NodeIP:     n.Addr,
			NodeIP6:    n.Addr6,
			APIServer:  lab.APIServerURL(),
			Token:      l.AdminToken,
			CgroupRoot: cgroupParent + "/" + l.ID + "-" + n.Name,
			// As k3s: pods resolve through CoreDNS (DeployCoreDNS), which
			// forwards to the lab's internet host (StartInternet).
			ClusterDNS:    ClusterDNSIP,
			ClusterDomain: ClusterDomain,
			ResolvConf:    filepath.Join(n.Dir, "kubenode", "resolv.conf"),
		},
		confDir: filepath.Join(n.Dir, "kubenode"),
	}
	if err := k.Config.Validate(); err != nil {
		return nil, err
	}
	k.Config = k.Config.withDefaults()
	for _, p := range Programs {
		if _, err := os.Stat(filepath.Join(k.bin, p)); err != nil {
			return nil, fmt.Errorf("kubenode: %s not built (test/e2e/tools/build-k8s.sh %s): %w", p, strings.Join(Programs, " "), err)
		}
	}
	mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.HolderPID))
	if err != nil {
		return nil, fmt.Errorf("kubenode: node %s mount namespace: %w", n.Name, err)
	}
	k.mntNS = mnt
	if err := k.mountCgroups(ctx); err != nil {
		return nil, err
	}
	for key, path := range privateDirs {
		dir := filepath.Join(n.Dir, key)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if err := n.Bind(ctx, dir, path); err != nil {
			return nil, fmt.Errorf("kubenode: node %s: %w", n.Name, err)
		}
	}
	if err := os.MkdirAll(k.confDir, 0o755); err != nil {
		return nil, err
	}
	if err := k.maskKernelTunables(ctx); err != nil {
		return nil, err
	}
	for name, content := range map[string]string{
		"containerd.toml":    ContainerdConfig(k.Config),
		"kubelet.yaml":       KubeletConfig(k.Config),
		"kubelet.kubeconfig": Kubeconfig(k.Config),
		"resolv.conf":        "nameserver " + lab.InternetIP.String() + "\n",
	} {
		if err := os.WriteFile(filepath.Join(k.confDir, name), []byte(content), 0o600); err != nil {
			return nil, err
		}
	}
	if err := makeCgroupRoot(k.Config.CgroupRoot); err != nil {
		return nil, fmt.Errorf("kubenode: node %s: %w", n.Name, err)
	}
	return k, nil
}

// mountCgroups mounts the machine's cgroup hierarchies at /sys/fs/cgroup
// inside the node. The node's mount namespace was made under `ip netns
// exec`, which mounts a fresh sysfs (for the namespace's network devices)
// over /sys, hiding /sys/fs/cgroup: the kubelet then fails with "failed to
// get mounted cgroup subsystems: failed to find cgroup mounts". Mounting a
// hierarchy again with the same options attaches the same hierarchy, so the
// node sees the machine's cgroups.
func (k *Node) mountCgroups(ctx context.Context) error {
	mounts, err := cgroupMounts("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	script := []string{"set -e"}
	for _, m := range mounts {
		script = append(script, fmt.Sprintf("mkdir -p %s && mount -t %s -o %s %s %s", m.Mountpoint, m.FSType, m.VFSOptions, m.FSType, m.Mountpoint))
	}
	if out, err := k.Run(ctx, "sh", "-c", strings.Join(script, "\n")); err != nil {
		return fmt.Errorf("kubenode: node %s: mount cgroups: %w: %s", k.Name, err, out)
	}
	return nil
}

// maskKernelTunables covers each of kernelTunables, inside the node only,
// with a file holding the kubelet's value (see kernelTunables).
func (k *Node) maskKernelTunables(ctx context.Context) error {
	dir := filepath.Join(k.confDir, "sysctl")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for path, value := range kernelTunables {
		f := filepath.Join(dir, strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", "."))
		if err := os.WriteFile(f, []byte(value+"\n"), 0o644); err != nil {
			return err
		}
		if out, err := k.Run(ctx, "mount", "--bind", f, path); err != nil {
			return fmt.Errorf("kubenode: node %s: cover %s: %w: %s", k.Name, path, err, out)
		}
	}
	return nil
}

// env is the environment of containerd and kubelet: the cache first in
// PATH (containerd finds containerd-shim-runc-v2 there), then the system
// (runc, iptables, mount).
func (k *Node) env() []string {
	return []string{"PATH=" + k.bin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
}

// StartContainerd starts the node's containerd, waits until it answers and
// imports the given image archives into the CRI namespace (k8s.io).
func (k *Node) StartContainerd(ctx context.Context, images ...string) error {
	p, err := k.Start("containerd", k.env(), filepath.Join(k.bin, "containerd"), "--config", filepath.Join(k.confDir, "containerd.toml"))
	if err != nil {
		return err
	}
	k.containerd = p
	if err := waitFor(ctx, 30*time.Second, p, func() error {
		_, err := k.Ctr(ctx, "version")
		return err
	}); err != nil {
		return fmt.Errorf("kubenode: node %s: containerd not answering (see %s): %w", k.Name, p.Log, err)
	}
	for _, img := range images {
		if out, err := k.Ctr(ctx, "images", "import", "--local", img); err != nil {
			return fmt.Errorf("kubenode: node %s: import %s: %w: %s", k.Name, img, err, out)
		}
	}
	return nil
}

// StartKubelet starts the node's kubelet; it registers its own Node object.
func (k *Node) StartKubelet(ctx context.Context) error {
	args := append([]string{filepath.Join(k.bin, "kubelet")},
		KubeletArgs(k.Config, filepath.Join(k.confDir, "kubelet.yaml"), filepath.Join(k.confDir, "kubelet.kubeconfig"))...)
	p, err := k.Start("kubelet", k.env(), args...)
	if err != nil {
		return err
	}
	k.kubelet = p
	return nil
}

// WaitRegistered waits until the kubelet has created its Node object and
// returns it.
func (k *Node) WaitRegistered(ctx context.Context, timeout time.Duration) (*corev1.Node, error) {
	var node *corev1.Node
	err := waitFor(ctx, timeout, k.kubelet, func() error {
		var err error
		node, err = k.lab.Client.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("kubenode: node %s not registered by its kubelet (see %s): %w", k.Name, k.kubeletLog(), err)
	}
	return node, nil
}

// WaitReady waits until the Node reports Ready=True, which the kubelet sets
// only once the runtime reports NetworkReady (the CNI plugin's STATUS).
func (k *Node) WaitReady(ctx context.Context, timeout time.Duration) error {
	err := waitFor(ctx, timeout, k.kubelet, func() error {
		node, err := k.lab.Client.CoreV1().Nodes().Get(ctx, k.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		c := NodeCondition(node, corev1.NodeReady)
		if c == nil || c.Status != corev1.ConditionTrue {
			return fmt.Errorf("not ready: %v", c)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kubenode: node %s not Ready (see %s): %w", k.Name, k.kubeletLog(), err)
	}
	return nil
}

// NodeCondition returns the node's condition of type t, or nil.
func NodeCondition(node *corev1.Node, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == t {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

func (k *Node) kubeletLog() string { return filepath.Join(k.Dir, "kubelet.log") }

// Ctr runs ctr against the node's containerd, in the CRI namespace, inside
// the node (ctr's FIFOs must be where the node's shims see them).
func (k *Node) Ctr(ctx context.Context, args ...string) (string, error) {
	return k.Run(ctx, append([]string{filepath.Join(k.bin, "ctr"), "--address", ContainerdSocket, "--namespace", "k8s.io"}, args...)...)
}

// StopKubelet and StopContainerd stop the programs gracefully. Pods keep
// running in their shims, as on a real node whose kubelet or containerd
// restarts.
func (k *Node) StopKubelet() {
	if k.kubelet != nil {
		k.kubelet.Stop(10 * time.Second)
	}
}

func (k *Node) StopContainerd() {
	if k.containerd != nil {
		k.containerd.Stop(10 * time.Second)
	}
}

// Teardown stops the kubelet and containerd, kills every process of the
// node's pods and shims, and removes the node's cgroups. Call it before the
// lab's Down (which removes the mount namespace the shims live in).
func (k *Node) Teardown() error {
	k.StopKubelet()
	k.StopContainerd()
	var errs []error
	// Pods' processes are in the node's cgroup tree; shims are in the
	// node's mount namespace (a fresh one per container for the pods).
	for range 3 {
		pids := append(cgroupPIDs(k.Config.CgroupRoot), k.shimPIDs()...)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := removeCgroupRoot(k.Config.CgroupRoot); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// shimPIDs are the containerd shims of this node: processes in the node's
// mount namespace whose program is containerd-shim-runc-v2.
func (k *Node) shimPIDs() []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		mnt, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "mnt"))
		if err != nil || mnt != k.mntNS {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		argv0, _, _ := bytes.Cut(cmdline, []byte{0})
		if filepath.Base(string(argv0)) == "containerd-shim-runc-v2" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitFor polls check until it succeeds, the timeout passes, ctx ends or
// proc (if any) exits.
func waitFor(ctx context.Context, timeout time.Duration, proc *lab.Process, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		if proc != nil {
			select {
			case <-proc.Done():
				return fmt.Errorf("%s exited: %v (last check: %w)", proc.Name, proc.Err(), last)
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timeout after %s: %w", timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
