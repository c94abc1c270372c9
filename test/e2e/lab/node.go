package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// NodePaths are the paths a node sees as its own: each is, inside the node's
// mount namespace, a bind mount of Node.Dir/<key>.
var NodePaths = map[string]string{
	"run-wireguard":  "/run/wireguard", // userspace WireGuard UAPI sockets
	"run-wgmesh":     "/run/wgmesh",    // subnet.env
	"var-lib-wgmesh": "/var/lib/wgmesh",
	"var-lib-cni":    "/var/lib/cni",
	"etc-cni-net.d":  "/etc/cni/net.d",
	"opt-cni-bin":    "/opt/cni/bin",
	"run-netns":      "/run/netns", // the node's pod namespaces
}

// Node is one lab node: a network namespace plugged into the underlay, and
// a private mount namespace held open by a sleeping process.
type Node struct {
	Name string
	// NetNS is the `ip netns` name of the node's network namespace.
	NetNS string
	// HolderPID is the process that holds the node's mount namespace:
	// `nsenter -t HolderPID -m -n` enters the node.
	HolderPID int
	// Dir holds the node's files (its bind-mounted paths, logs, kubeconfig).
	Dir string
	// Addr is the node's underlay address (its InternalIP), on eth0.
	Addr netip.Addr
	// Addr6 is its IPv6 underlay address, on eth0 (dual-stack labs only).
	Addr6 netip.Addr

	lab   *Lab
	port  string
	procs []*Process
	// Agent is the running wgmesh-agent, if any.
	Agent *Process
}

// Node returns a node by name, or nil.
func (l *Lab) Node(name string) *Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nodes[name]
}

// Nodes returns the lab's nodes sorted by name.
func (l *Lab) Nodes() []*Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ns []*Node
	for _, n := range l.nodes {
		ns = append(ns, n)
	}
	sortNodes(ns)
	return ns
}

func sortNodes(ns []*Node) {
	for i := 1; i < len(ns); i++ {
		for j := i; j > 0 && ns[j].Name < ns[j-1].Name; j-- {
			ns[j], ns[j-1] = ns[j-1], ns[j]
		}
	}
}

// NewNode makes a node's namespaces, plugs it into the underlay with the next
// free address, and installs the CNI binaries and the shipped conflist in its
// CNI dirs. It does not register a Node object or start anything.
func (l *Lab) NewNode(ctx context.Context, name string) (*Node, error) {
	l.mu.Lock()
	if _, dup := l.nodes[name]; dup {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: node %s exists", name)
	}
	ip := l.nextIP
	l.nextIP++
	l.mu.Unlock()
	addr := UnderlayPrefix.Addr().As4()
	addr[3] = byte(ip)
	n := &Node{
		Name: name, NetNS: l.nsName("n" + strconv.Itoa(ip)), Dir: filepath.Join(l.Dir, "nodes", name),
		Addr: netip.AddrFrom4(addr), lab: l, port: "p" + strconv.Itoa(ip),
	}
	for key := range NodePaths {
		if err := os.MkdirAll(filepath.Join(n.Dir, key), 0o755); err != nil {
			return nil, err
		}
	}
	if _, err := runCmd(ctx, "ip", "netns", "add", n.NetNS); err != nil {
		return nil, err
	}
	l.addNetNS(n.NetNS)
	if err := runAll(ctx,
		[]string{"ip", "-n", n.NetNS, "link", "set", "lo", "up"},
		// A node forwards pod traffic, as k3s sets it up.
		[]string{"ip", "netns", "exec", n.NetNS, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	); err != nil {
		return nil, err
	}
	if err := l.plug(ctx, n.NetNS, n.port, n.Addr); err != nil {
		return nil, err
	}
	if l.DualStack {
		n.Addr6 = underlayAddr6(n.Addr)
		if err := l.plug6(ctx, n.NetNS, n.Addr6); err != nil {
			return nil, err
		}
	}
	holder, err := l.startProcess(name+"/holder", filepath.Join(n.Dir, "holder.log"), nil,
		"ip", "netns", "exec", n.NetNS, "unshare", "--mount", "--propagation", "private", "sleep", "infinity")
	if err != nil {
		return nil, err
	}
	n.HolderPID = holder.PID
	n.procs = append(n.procs, holder)
	if err := n.waitHolder(ctx); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.nodes[name] = n
	l.mu.Unlock()
	_ = l.saveState()
	for key, path := range NodePaths {
		if err := n.Bind(ctx, filepath.Join(n.Dir, key), path); err != nil {
			return nil, err
		}
	}
	if err := l.installCNI(n); err != nil {
		return nil, err
	}
	l.Log.Info("lab: node up", "node", name, "netns", n.NetNS, "addr", n.Addr, "enter", n.EnterCommand())
	return n, nil
}

// waitHolder waits until the holder runs sleep in its own mount namespace.
func (n *Node) waitHolder(ctx context.Context) error {
	self, _ := os.Readlink("/proc/self/ns/mnt")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", n.HolderPID))
		mnt, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.HolderPID))
		if strings.HasPrefix(string(cmdline), "sleep\x00") && mnt != "" && mnt != self {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("lab: node %s holder did not start (see %s)", n.Name, filepath.Join(n.Dir, "holder.log"))
}

// Bind mounts hostDir over path inside the node's mount namespace only.
// A missing mount point is created on the machine (and removed by Down
// when empty), because a bind mount needs one.
func (n *Node) Bind(ctx context.Context, hostDir, path string) error {
	if err := n.lab.ensureHostDir(path); err != nil {
		return err
	}
	_, err := n.Run(ctx, "mount", "--bind", hostDir, path)
	return err
}

func (l *Lab) ensureHostDir(path string) error {
	real := path
	if r, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
		real = filepath.Join(r, filepath.Base(path))
	}
	var missing []string
	for d := real; d != "/" && !exists(d); d = filepath.Dir(d) {
		missing = append([]string{d}, missing...)
	}
	for _, d := range missing {
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return err
		}
		l.mu.Lock()
		l.hostDirs = append(l.hostDirs, d)
		l.mu.Unlock()
	}
	if len(missing) > 0 {
		return l.saveState()
	}
	return nil
}

// installCNI links the plugins into the node's bin dir and copies the
// shipped conflist into its conf dir, as the DaemonSet's install step does.
func (l *Lab) installCNI(n *Node) error {
	bin := filepath.Join(n.Dir, "opt-cni-bin")
	links := map[string]string{
		"wgmesh":      filepath.Join(l.Bin, "wgmesh"),
		"wgmesh-ipam": filepath.Join(l.Bin, "wgmesh-ipam"),
		"portmap":     filepath.Join(l.RefBin, "portmap"),
		"bandwidth":   filepath.Join(l.RefBin, "bandwidth"),
		"loopback":    filepath.Join(l.RefBin, "loopback"),
	}
	for name, target := range links {
		if !exists(target) {
			continue
		}
		if err := os.Symlink(target, filepath.Join(bin, name)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	b, err := os.ReadFile(l.ConflistPath())
	if err != nil {
		return fmt.Errorf("lab: read shipped conflist: %w", err)
	}
	return os.WriteFile(filepath.Join(n.Dir, "etc-cni-net.d", filepath.Base(l.ConflistPath())), b, 0o644)
}

// ConflistPath is the shipped conflist the nodes use.
func (l *Lab) ConflistPath() string { return filepath.Join(l.Repo, "conflist", "10-wgmesh.conflist") }

// EnterCommand is the shell prefix that runs a command inside the node.
func (n *Node) EnterCommand() string { return fmt.Sprintf("nsenter -t %d -m -n", n.HolderPID) }

// Command is argv run inside the node's network and mount namespaces.
func (n *Node) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(n.HolderPID), "-m", "-n", "--"}, argv...)...)
}

// Run runs argv inside the node and returns its combined output.
func (n *Node) Run(ctx context.Context, argv ...string) (string, error) {
	return runCmd(ctx, append([]string{"nsenter", "-t", strconv.Itoa(n.HolderPID), "-m", "-n", "--"}, argv...)...)
}

// Output runs argv inside the node and returns its stdout; stderr (where
// CNI plugins log) goes into the error, or is dropped on success.
func (n *Node) Output(ctx context.Context, argv ...string) (string, error) {
	cmd := n.Command(ctx, argv...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Start runs argv inside the node in the background, logging to
// Node.Dir/<name>.log; Down (or RemoveNode) stops it.
func (n *Node) Start(name string, env []string, argv ...string) (*Process, error) {
	p, err := n.lab.startProcess(n.Name+"/"+name, filepath.Join(n.Dir, name+".log"), env,
		append([]string{"nsenter", "-t", strconv.Itoa(n.HolderPID), "-m", "-n", "--"}, argv...)...)
	if err != nil {
		return nil, err
	}
	n.procs = append(n.procs, p)
	return p, nil
}

// RemoveNode stops the node's processes, deletes its Node object and its
// namespaces, as when a machine leaves the cluster.
func (l *Lab) RemoveNode(ctx context.Context, n *Node) error {
	for i := len(n.procs) - 1; i >= 0; i-- {
		n.procs[i].Stop(5 * time.Second)
	}
	if err := l.DeleteNodeObject(ctx, n.Name); err != nil {
		return err
	}
	killNetNSPids(n.NetNS)
	if _, err := runCmd(ctx, "ip", "netns", "delete", n.NetNS); err != nil {
		return err
	}
	l.mu.Lock()
	delete(l.nodes, n.Name)
	l.mu.Unlock()
	return l.saveState()
}
