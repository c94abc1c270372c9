// Package lab runs a real multi-node wgmesh cluster inside network
// namespaces on one machine: an "underlay" bridge standing for the internet,
// a control plane (etcd, kube-apiserver, kube-controller-manager) and N nodes,
// each running the real wgmesh-agent and creating pods through the shipped
// conflist with libcni.
//
// It owns only what it creates: network namespaces named "wgl-<id>-*", the
// processes it starts (recorded with their start time in <Dir>/state.json),
// and the files under its Dir. It never opens a port or sends a packet on the
// machine's own network namespace: the harness reaches the API by dialing
// from inside the control-plane namespace (see Lab.Dial).
//
// The API, in the order a scenario or another node kind uses it:
//
//	l, _ := lab.Start(ctx, lab.Config{Dir: ...})      // underlay + control plane
//	n, _ := l.NewNode(ctx, "node1")                    // netns + private mount ns, on the underlay
//	l.RegisterNode(ctx, n)                             // the Node object, as a kubelet would
//	l.StartAgent(ctx, n)                               // the real wgmesh-agent, ServiceAccount token
//	p, _ := l.AddPod(ctx, n, "a")                      // netns + CNI ADD through the conflist
//	n.Run(ctx, "wg", "show")                           // any command inside the node
//	l.Down()                                           // every process, namespace and file
//
// (AddNode does NewNode+RegisterNode+StartAgent.) A node is entered with
// `nsenter -t <Node.HolderPID> -m -n`: its network namespace and its own
// mount namespace, where /run/wireguard, /run/wgmesh, /var/lib/wgmesh,
// /var/lib/cni, /etc/cni/net.d, /opt/cni/bin and /run/netns are bind mounts
// of directories under Node.Dir (Node.Bind adds more). Node.Command and
// Node.Start run programs there; Start records the process for Down.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/internal/atomicfile"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Prefix starts the name of every network namespace a lab creates.
const Prefix = "wgl-"

// RegistryDir indexes every lab on the machine (one <id>.json per lab), so
// that a crashed test's leftovers can be found and swept.
const RegistryDir = "/run/wgmesh-lab"

// Underlay addressing: every address lives only inside the lab's namespaces.
var (
	UnderlayPrefix = netip.MustParsePrefix("172.31.0.0/24")
	ControlPlaneIP = netip.MustParseAddr("172.31.0.2")
)

// Cluster-wide settings, as k3s uses them.
const (
	ClusterCIDR      = "10.42.0.0/16"
	NodeCIDRMaskSize = 24
	ServiceCIDR      = "10.43.0.0/16"
	APIPort          = 6443
	AgentNamespace   = "kube-system"
	ListenPort       = 51820
)

// Config describes a lab.
type Config struct {
	// Dir holds all state (created; removed by Down unless KeepDir).
	Dir string
	// Repo is the wgmesh checkout (for deploy/, conflist/); default: found from the working dir.
	Repo string
	// Bin holds wgmesh binaries (WGMESH_BIN, default <Repo>/bin); RefBin the
	// reference plugins (WGMESH_REF_BIN, default <Bin>/ref).
	Bin, RefBin string
	// K8sBin holds etcd, kube-apiserver, kube-controller-manager
	// (default $WGMESH_CACHE/bin, $WGMESH_CACHE default ~/.cache/wgmesh).
	K8sBin string
	// NoCIDRAllocation runs kube-controller-manager without
	// --allocate-node-cidrs, so Node.spec.podCIDR stays empty.
	NoCIDRAllocation bool
	// Kubelets says the nodes will run real kubelets (test/e2e/kubenode):
	// the control plane then runs what a cluster of kubelets has besides,
	// kube-scheduler and kube-controller-manager's node-lifecycle
	// controller (which removes the not-ready taint once a kubelet reports
	// Ready, and needs kubelet heartbeats to do no harm).
	Kubelets bool
	// AgentEnv is added to every agent's environment (e.g. a WGMESH_*
	// setting a scenario runs the agents with).
	AgentEnv []string
	// DualStack gives the lab IPv6 beside IPv4: underlay addresses
	// (UnderlayPrefix6), pod network and Service range of both families
	// (ClusterCIDRs, ServiceCIDRs) for the control plane and the agents.
	DualStack bool
	// Persistent marks a lab that outlives its creator (make lab): the
	// sweep never removes it.
	Persistent bool
	// Log receives progress lines; default slog.Default().
	Log *slog.Logger
}

// Lab is a running lab.
type Lab struct {
	Config
	ID string

	// AdminToken authenticates as system:masters (tokens.csv).
	AdminToken string
	// Client is an admin clientset that dials from inside the control-plane namespace.
	Client     kubernetes.Interface
	RestConfig *rest.Config

	mu       sync.Mutex
	nodes    map[string]*Node
	procs    []*Process
	netns    []string
	hostDirs []string
	nextIP   int
	labpod   string
}

// state is what Down needs to undo a lab from another process (make lab-down).
type state struct {
	ID         string       `json:"id"`
	Dir        string       `json:"dir"`
	OwnerPID   int          `json:"ownerPID"`
	Persistent bool         `json:"persistent"`
	NetNS      []string     `json:"netns"`
	Procs      []procRecord `json:"procs"`
	HostDirs   []string     `json:"hostDirs"`
	Nodes      []nodeRecord `json:"nodes"`
}

type procRecord struct {
	Name      string `json:"name"`
	PID       int    `json:"pid"`
	StartTime string `json:"startTime"`
}

type nodeRecord struct {
	Name      string `json:"name"`
	NetNS     string `json:"netns"`
	HolderPID int    `json:"holderPID"`
	Addr      string `json:"addr"`
	Dir       string `json:"dir"`
}

func newID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (c *Config) defaults() error {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Repo == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				c.Repo = d
				break
			}
			if d == filepath.Dir(d) {
				return fmt.Errorf("lab: no go.mod above %s; set Config.Repo", wd)
			}
		}
	}
	if c.Bin == "" {
		c.Bin = os.Getenv("WGMESH_BIN")
	}
	if c.Bin == "" {
		c.Bin = filepath.Join(c.Repo, "bin")
	}
	if c.RefBin == "" {
		c.RefBin = os.Getenv("WGMESH_REF_BIN")
	}
	if c.RefBin == "" {
		c.RefBin = filepath.Join(c.Bin, "ref")
	}
	if c.K8sBin == "" {
		cache := os.Getenv("WGMESH_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "wgmesh")
		}
		c.K8sBin = filepath.Join(cache, "bin")
	}
	if c.Dir == "" {
		return errors.New("lab: Config.Dir is required")
	}
	abs, err := filepath.Abs(c.Dir)
	if err != nil {
		return err
	}
	c.Dir = abs
	return nil
}

// Start sweeps leftovers of dead labs, then builds the underlay and the
// control plane. On error everything made so far is removed.
func Start(ctx context.Context, cfg Config) (*Lab, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	Sweep(cfg.Log)
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	l := &Lab{Config: cfg, ID: newID(), nodes: map[string]*Node{}, nextIP: 11}
	if err := l.saveState(); err != nil {
		return nil, err
	}
	if err := l.start(ctx); err != nil {
		l.Down()
		return nil, err
	}
	return l, nil
}

func (l *Lab) start(ctx context.Context) error {
	for _, p := range []string{"wgmesh-agent", "wgmesh", "wgmesh-ipam"} {
		if _, err := os.Stat(filepath.Join(l.Bin, p)); err != nil {
			return fmt.Errorf("lab: %s missing in %s (make build): %w", p, l.Bin, err)
		}
	}
	if err := l.buildLabpod(ctx); err != nil {
		return err
	}
	if err := l.makeUnderlay(ctx); err != nil {
		return err
	}
	return l.startControlPlane(ctx)
}

// nsName is the full name of one of this lab's network namespaces.
func (l *Lab) nsName(short string) string { return Prefix + l.ID + "-" + short }

func (l *Lab) addNetNS(name string) {
	l.mu.Lock()
	l.netns = append(l.netns, name)
	l.mu.Unlock()
	_ = l.saveState()
}

func (l *Lab) registryFile() string { return filepath.Join(RegistryDir, l.ID+".json") }

func (l *Lab) saveState() error {
	l.mu.Lock()
	st := state{ID: l.ID, Dir: l.Dir, OwnerPID: os.Getpid(), Persistent: l.Persistent,
		NetNS: append([]string(nil), l.netns...), HostDirs: append([]string(nil), l.hostDirs...)}
	for _, p := range l.procs {
		st.Procs = append(st.Procs, procRecord{Name: p.Name, PID: p.PID, StartTime: p.startTime})
	}
	for _, n := range l.nodes {
		st.Nodes = append(st.Nodes, nodeRecord{Name: n.Name, NetNS: n.NetNS, HolderPID: n.HolderPID, Addr: n.Addr.String(), Dir: n.Dir})
	}
	l.mu.Unlock()
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].Name < st.Nodes[j].Name })
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(l.Dir, "state.json"), b, 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(RegistryDir, 0o755); err != nil {
		return err
	}
	return atomicfile.Write(l.registryFile(), b, 0o644)
}

// Down stops every process and removes every namespace, host mount point and
// file of the lab. It is safe to call twice and after a failed Start.
func (l *Lab) Down() {
	l.mu.Lock()
	procs := append([]*Process(nil), l.procs...)
	l.mu.Unlock()
	// Newest first: pods' servers and agents before holders and the control plane.
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop(5 * time.Second)
	}
	st := readState(filepath.Join(l.Dir, "state.json"))
	if st == nil {
		st = &state{ID: l.ID, Dir: l.Dir}
	}
	st.NetNS = l.netns
	st.HostDirs = l.hostDirs
	downState(st, l.Log)
}

// otherLabRegistered says whether a lab other than id is in RegistryDir.
func otherLabRegistered(id string) bool {
	entries, _ := os.ReadDir(RegistryDir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") && e.Name() != id+".json" {
			return true
		}
	}
	return false
}

// DownDir undoes the lab whose state is in dir (make lab-down).
func DownDir(dir string, log *slog.Logger) error {
	st := readState(filepath.Join(dir, "state.json"))
	if st == nil {
		return fmt.Errorf("no lab state in %s", dir)
	}
	downState(st, log)
	return nil
}

func readState(path string) *state {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var st state
	if json.Unmarshal(b, &st) != nil {
		return nil
	}
	return &st
}

func downState(st *state, log *slog.Logger) {
	for i := len(st.Procs) - 1; i >= 0; i-- {
		p := st.Procs[i]
		stopRecorded(p.PID, p.StartTime, 5*time.Second)
	}
	// Anything still running inside a lab namespace (a process someone
	// started by hand while poking at the lab) goes too.
	for _, ns := range st.NetNS {
		killNetNSPids(ns)
	}
	for i := len(st.NetNS) - 1; i >= 0; i-- {
		if out, err := runCmd(context.Background(), "ip", "netns", "delete", st.NetNS[i]); err != nil && !strings.Contains(out, "No such file") {
			log.Warn("lab: delete netns", "netns", st.NetNS[i], "err", err, "out", out)
		}
	}
	// rmdir succeeds on a directory that is a mount point only in another
	// mount namespace, and silently detaches that mount there: removing
	// /opt/cni/bin while another lab runs empties every CNI bin dir of its
	// nodes. Keep the mount points while any other lab is registered.
	if !otherLabRegistered(st.ID) {
		for i := len(st.HostDirs) - 1; i >= 0; i-- {
			_ = os.Remove(st.HostDirs[i]) // only if empty
		}
	}
	_ = os.Remove(filepath.Join(RegistryDir, st.ID+".json"))
	if st.Dir != "" && strings.Contains(st.Dir, "lab") {
		if err := os.RemoveAll(st.Dir); err != nil {
			log.Warn("lab: remove dir", "dir", st.Dir, "err", err)
		}
	}
}

// Sweep removes labs whose creating process died without cleaning up
// (non-persistent labs only), and namespaces with the lab prefix that no
// registered lab owns.
func Sweep(log *slog.Logger) {
	owned := map[string]bool{}
	entries, _ := os.ReadDir(RegistryDir)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		st := readState(filepath.Join(RegistryDir, e.Name()))
		if st == nil {
			continue
		}
		if st.Persistent || processAlive(st.OwnerPID) {
			owned[st.ID] = true
			continue
		}
		log.Info("lab: sweeping leftovers of a dead lab", "id", st.ID, "dir", st.Dir)
		downState(st, log)
	}
	out, _ := runCmd(context.Background(), "ip", "netns", "list")
	for _, line := range strings.Split(out, "\n") {
		name := strings.Fields(line + " ")
		if len(name) == 0 || !strings.HasPrefix(name[0], Prefix) {
			continue
		}
		rest := strings.TrimPrefix(name[0], Prefix)
		id, _, _ := strings.Cut(rest, "-")
		if owned[id] {
			continue
		}
		log.Info("lab: sweeping orphan namespace", "netns", name[0])
		killNetNSPids(name[0])
		_, _ = runCmd(context.Background(), "ip", "netns", "delete", name[0])
	}
}
