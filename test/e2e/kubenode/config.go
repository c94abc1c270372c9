package kubenode

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Paths inside a kubelet node's private mount namespace. They are the
// standard paths of a real node; Node bind-mounts a per-node directory of the
// lab over each one, so nodes never share state.
const (
	KubeletDir        = "/var/lib/kubelet"
	PodLogsDir        = "/var/log/pods"
	ContainerdRoot    = "/var/lib/containerd"
	ContainerdState   = "/run/containerd"
	ContainerdSocket  = "/run/containerd/containerd.sock"
	DefaultCNIBinDir  = "/opt/cni/bin"
	DefaultCNIConfDir = "/etc/cni/net.d"
)

// Config describes one kubelet node of the lab.
type Config struct {
	// Name is the Node name the kubelet registers.
	Name string
	// NodeIP is the node's underlay address (kubelet --node-ip); it must not
	// be a loopback address.
	NodeIP netip.Addr
	// NodeIP6 is its IPv6 underlay address in a dual-stack lab (kubelet
	// --node-ip=v4,v6); invalid when the lab is IPv4 only.
	NodeIP6 netip.Addr
	// APIServer is the URL of the lab's kube-apiserver as the node reaches it.
	APIServer string
	// Token is a bearer token the kubelet authenticates with.
	Token string
	// CgroupRoot is the cgroup under which the kubelet puts every pod, so
	// that several nodes on one machine never share a cgroup. Default:
	// /wgmesh-lab/<Name>.
	CgroupRoot string
	// CNIBinDir and CNIConfDir are the CNI directories containerd reads.
	// Default: /opt/cni/bin and /etc/cni/net.d (private to the node).
	CNIBinDir  string
	CNIConfDir string
	// SandboxImage is the pinned pause image. Default: PauseImage.Ref.
	SandboxImage string
	// Snapshotter is containerd's snapshotter. Default: overlayfs.
	Snapshotter string
	// ClusterDNS and ClusterDomain are the kubelet's clusterDNS and
	// clusterDomain (k3s: 10.43.0.10, cluster.local); ResolvConf the file
	// it gives dnsPolicy Default pods (and search lines). Empty: not set.
	ClusterDNS    netip.Addr
	ClusterDomain string
	ResolvConf    string
}

func (c Config) withDefaults() Config {
	if c.CgroupRoot == "" {
		c.CgroupRoot = cgroupParent + "/" + c.Name
	}
	if c.CNIBinDir == "" {
		c.CNIBinDir = DefaultCNIBinDir
	}
	if c.CNIConfDir == "" {
		c.CNIConfDir = DefaultCNIConfDir
	}
	if c.SandboxImage == "" {
		c.SandboxImage = PauseImage.Ref
	}
	if c.Snapshotter == "" {
		c.Snapshotter = "overlayfs"
	}
	return c
}

// Validate reports the first field a kubelet node cannot run with.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return fmt.Errorf("kubelet node: empty name")
	case !c.NodeIP.IsValid():
		return fmt.Errorf("kubelet node %s: no node IP", c.Name)
	case c.NodeIP.IsLoopback():
		// The kubelet reports --node-ip as the Node's InternalIP; a loopback
		// address there is refused and useless to the other nodes.
		return fmt.Errorf("kubelet node %s: node IP %s is a loopback address", c.Name, c.NodeIP)
	case c.APIServer == "":
		return fmt.Errorf("kubelet node %s: no API server URL", c.Name)
	case c.Token == "":
		return fmt.Errorf("kubelet node %s: no API token", c.Name)
	}
	return nil
}

// ContainerdConfig renders containerd's config.toml (version 3) for the node.
func ContainerdConfig(c Config) string {
	c = c.withDefaults()
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, `version = 3
root = %s
state = %s

# The lab runs several containerd on one machine: nothing here may listen
# outside the node's namespaces or share a path with another node.
disabled_plugins = [
  "io.containerd.nri.v1.nri",
  "io.containerd.internal.v1.tracing",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
]

[grpc]
  address = %s

[ttrpc]
  address = %s

[plugins."io.containerd.cri.v1.runtime"]
  # The lab's processes lack CAP_SYS_RESOURCE: runc cannot lower
  # oom_score_adj to the sandbox's -998 ("failed to update
  # /proc/self/oom_score_adj: Permission denied"), and every sandbox would
  # fail with "can't get final child's PID from pipe: EOF". With this,
  # containerd never asks for a value below its own.
  restrict_oom_score_adj = true

  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [%s]
    conf_dir = %s
    max_conf_num = 1

[plugins."io.containerd.cri.v1.images"]
  snapshotter = %s

  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %s

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`,
		q(ContainerdRoot), q(ContainerdState), q(ContainerdSocket), q(ContainerdSocket+".ttrpc"),
		q(c.CNIBinDir), q(c.CNIConfDir), q(c.Snapshotter), q(c.SandboxImage))
	return b.String()
}

// KubeletConfig renders the KubeletConfiguration for the node.
func KubeletConfig(c Config) string {
	c = c.withDefaults()
	q := strconv.Quote
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 (hybrid) and swap may be on.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupRoot: %s
containerRuntimeEndpoint: %s
podLogsDirectory: %s
# No webhook authn/authz: the lab's API server has no kubelet client
# credentials, and the kubelet listens only inside the node's namespace.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
readOnlyPort: 0
# The kubelet would lower its own oom_score_adj to -999, which needs
# CAP_SYS_RESOURCE (absent here; see restrict_oom_score_adj in containerd).
oomScoreAdj: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
serializeImagePulls: false
registerNode: true
# Several kubelets share this machine's disk and memory: never evict or
# garbage-collect the lab's local-only images because of the machine's fill.
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "0%%"
  nodefs.inodesFree: "0%%"
  imagefs.available: "0%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Fast feedback in tests: report status and pick up pod changes quickly.
nodeStatusUpdateFrequency: 2s
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 10s
`, q(c.CgroupRoot), q("unix://"+ContainerdSocket), q(PodLogsDir)) + kubeletDNSConfig(c)
}

// kubeletDNSConfig is the DNS part of the KubeletConfiguration.
func kubeletDNSConfig(c Config) string {
	var b strings.Builder
	if c.ClusterDNS.IsValid() {
		fmt.Fprintf(&b, "clusterDNS: [%s]\n", strconv.Quote(c.ClusterDNS.String()))
	}
	if c.ClusterDomain != "" {
		fmt.Fprintf(&b, "clusterDomain: %s\n", strconv.Quote(c.ClusterDomain))
	}
	if c.ResolvConf != "" {
		fmt.Fprintf(&b, "resolvConf: %s\n", strconv.Quote(c.ResolvConf))
	}
	return b.String()
}

// Kubeconfig renders the kubelet's kubeconfig: the lab API server with a
// bearer token. The lab's serving certificate is self-signed, so TLS
// verification is off; the connection never leaves the lab's namespaces.
func Kubeconfig(c Config) string {
	q := strconv.Quote
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: kubelet
  user:
    token: %s
contexts:
- name: lab
  context:
    cluster: lab
    user: kubelet
current-context: lab
`, q(c.APIServer), q(c.Token))
}

// KubeletArgs are the kubelet's command-line flags for the node, given where
// its config files are (inside the node's mount namespace).
func KubeletArgs(c Config, configPath, kubeconfigPath string) []string {
	return []string{
		"--config=" + configPath,
		"--kubeconfig=" + kubeconfigPath,
		"--hostname-override=" + c.Name,
		"--node-ip=" + nodeIPs(c),
		"--root-dir=" + KubeletDir,
		"--v=1",
	}
}
