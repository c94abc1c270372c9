package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/wgmesh/wgmesh/test/e2e/kubenode"
	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// DefaultFocus is every [sig-network] conformance test.
const DefaultFocus = `\[sig-network\].*\[Conformance\]`

// Config describes one run of the suite.
type Config struct {
	// LabDir holds the lab's state while it runs (removed at the end unless Keep).
	LabDir string
	// OutDir receives junit_01.xml, summary.md and e2e.log.
	OutDir string
	// Repo, Bin, RefBin, K8sBin: as lab.Config (defaults from the environment).
	Repo, Bin, RefBin, K8sBin string
	// Focus and Skip are the suite's --ginkgo.focus / --ginkgo.skip
	// regular expressions (Focus default DefaultFocus).
	Focus, Skip string
	// Nodes is the number of kubelet nodes (default 3).
	Nodes int
	// ProxyMode is kube-proxy's mode on every node (default iptables, as
	// k3s's embedded kube-proxy).
	ProxyMode string
	// SuiteTimeout bounds the whole suite (--ginkgo.timeout; default 3h).
	SuiteTimeout time.Duration
	// Keep leaves the lab running after the suite (make lab-down LAB_DIR=...).
	Keep bool
	// Output receives the suite's output as it runs (besides e2e.log).
	Output io.Writer
	Log    *slog.Logger
}

func (c *Config) defaults() {
	if c.Focus == "" {
		c.Focus = DefaultFocus
	}
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.ProxyMode == "" {
		c.ProxyMode = "iptables"
	}
	if c.SuiteTimeout == 0 {
		c.SuiteTimeout = 3 * time.Hour
	}
	if c.Output == nil {
		c.Output = io.Discard
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// Run starts the lab, runs the suite against it, writes the summary into
// OutDir and tears the lab down. The Summary is returned whenever the
// suite produced a report, also with an error (a suite that failed tests
// exits non-zero: the error says so, the Summary says which).
func Run(ctx context.Context, cfg Config) (Summary, RunInfo, error) {
	cfg.defaults()
	info := RunInfo{Date: time.Now(), Focus: cfg.Focus, Skip: cfg.Skip, Nodes: cfg.Nodes, ProxyMode: cfg.ProxyMode,
		NoSCTP: KernelSCTP()}
	l, err := lab.Start(ctx, lab.Config{Dir: cfg.LabDir, Repo: cfg.Repo, Bin: cfg.Bin, RefBin: cfg.RefBin,
		K8sBin: cfg.K8sBin, Kubelets: true, Persistent: cfg.Keep, Log: cfg.Log})
	if err != nil {
		return Summary{}, info, err
	}
	suite := filepath.Join(l.K8sBin, "e2e.test")
	info.K8sVersion = versionOf(suite)
	info.WgmeshCommit = gitDescribe(ctx, l.Repo)
	var nodes []*kubenode.Node
	defer func() {
		if cfg.Keep {
			cfg.Log.Info("conformance: lab left running", "dir", l.Dir, "kubeconfig", l.AdminKubeconfig(), "netns", l.ControlPlaneNetNS())
			return
		}
		for _, k := range nodes {
			if err := k.Teardown(); err != nil {
				cfg.Log.Warn("conformance: teardown", "node", k.Name, "err", err)
			}
		}
		l.Down()
	}()
	if _, err := os.Stat(suite); err != nil {
		return Summary{}, info, fmt.Errorf("conformance: e2e.test not built (test/e2e/tools/build-k8s.sh e2e.test agnhost): %w", err)
	}
	nodes, err = startNodes(ctx, l, cfg)
	if err != nil {
		return Summary{}, info, err
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return Summary{}, info, err
	}
	// A report left by an earlier run must not pass for this run's.
	for _, name := range []string{"junit_01.xml", "summary.md", "e2e.log"} {
		if err := os.Remove(filepath.Join(cfg.OutDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return Summary{}, info, err
		}
	}
	start := time.Now()
	suiteErr := runSuite(ctx, l, suite, cfg)
	info.Duration = time.Since(start)
	info.SuiteExit = "0"
	if suiteErr != nil {
		info.SuiteExit = suiteErr.Error()
	}
	info.JUnitPath = filepath.Join(cfg.OutDir, "junit_01.xml")
	info.SuiteLogs = filepath.Join(cfg.OutDir, "e2e.log")
	f, err := os.Open(info.JUnitPath)
	if err != nil {
		return Summary{}, info, errors.Join(suiteErr, fmt.Errorf("conformance: the suite wrote no report (see %s): %w", info.SuiteLogs, err))
	}
	defer f.Close()
	sum, err := ParseJUnit(f)
	if err != nil {
		return Summary{}, info, errors.Join(suiteErr, err)
	}
	sum.NoteKernelSCTP(info.NoSCTP)
	out, err := os.Create(filepath.Join(cfg.OutDir, "summary.md"))
	if err != nil {
		return sum, info, err
	}
	defer out.Close()
	if err := sum.WriteMarkdown(out, info); err != nil {
		return sum, info, err
	}
	if suiteErr != nil {
		return sum, info, fmt.Errorf("conformance: e2e.test: %w (%d failed)", suiteErr, sum.Count(Failed))
	}
	return sum, info, out.Close()
}

// startNodes makes the kubelet nodes with the lab's and the suite's images,
// starts their agents, kube-proxy and the rest of the k3s node stack, and
// gives the control plane its routes to the pod subnets.
func startNodes(ctx context.Context, l *lab.Lab, cfg Config) ([]*kubenode.Node, error) {
	images, err := kubenode.BuildImages(ctx, l)
	if err != nil {
		return nil, err
	}
	suiteImages, err := BuildImages(ctx, l.K8sBin, l.Repo, filepath.Join(l.Dir, "suite-images"))
	if err != nil {
		return nil, err
	}
	images = append(images, suiteImages...)
	var nodes []*kubenode.Node
	for i := 1; i <= cfg.Nodes; i++ {
		k, err := kubenode.AddNode(ctx, l, fmt.Sprintf("node%d", i), images)
		if k != nil {
			nodes = append(nodes, k)
		}
		if err != nil {
			return nodes, err
		}
	}
	for _, k := range nodes {
		if err := kubenode.StartAgentAndWait(ctx, l, k, 90*time.Second); err != nil {
			return nodes, err
		}
		if err := k.StartKubeProxy(ctx, cfg.ProxyMode); err != nil {
			return nodes, err
		}
	}
	// What else a k3s node runs: the network policy controller, CoreDNS
	// (with the kubelets' clusterDNS) and the internet host it forwards to.
	if _, err := kubenode.StartK3sStack(ctx, l, nodes, nodes[0].Name); err != nil {
		return nodes, err
	}
	if err := routeControlPlaneToPods(ctx, l, nodes); err != nil {
		return nodes, err
	}
	// The suite creates pods in namespaces it makes; their default
	// ServiceAccount comes from kube-controller-manager, as does "default"'s.
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := l.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return nodes, fmt.Errorf("conformance: no default ServiceAccount: %w", err)
	}
	return nodes, nil
}

// routeControlPlaneToPods routes each node's pod subnet, in the control
// plane's namespace, to the node's underlay address. On k3s the server is
// itself a node of the mesh; the lab's control plane is not, and the API
// server reaches pods (the proxy subresource, webhooks) this way instead.
func routeControlPlaneToPods(ctx context.Context, l *lab.Lab, nodes []*kubenode.Node) error {
	for _, k := range nodes {
		cidr, err := l.PodCIDR(ctx, k.Name)
		if err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, "ip", "-n", l.ControlPlaneNetNS(), "route", "replace", cidr.String(), "via", k.Addr.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("conformance: route %s via %s: %w: %s", cidr, k.Addr, err, out)
		}
	}
	return nil
}

// runSuite runs e2e.test inside the control plane's namespace, with the
// lab's admin kubeconfig and kubectl, writing the report into OutDir.
func runSuite(ctx context.Context, l *lab.Lab, suite string, cfg Config) error {
	args := []string{"netns", "exec", l.ControlPlaneNetNS(), suite,
		"--kubeconfig=" + l.AdminKubeconfig(),
		"--provider=skeleton",
		"--kubectl-path=" + filepath.Join(l.K8sBin, "kubectl"),
		"--report-dir=" + cfg.OutDir,
		"--e2e-output-dir=" + cfg.OutDir,
		"--ginkgo.focus=" + cfg.Focus,
		"--ginkgo.timeout=" + cfg.SuiteTimeout.String(),
		"--ginkgo.no-color",
		"--ginkgo.v",
		// Nodes are Ready before the suite starts; a suite that finds them
		// unschedulable should say so soon, not after the default 30 min.
		"--node-schedulable-timeout=5m",
	}
	if cfg.Skip != "" {
		args = append(args, "--ginkgo.skip="+cfg.Skip)
	}
	log, err := os.Create(filepath.Join(cfg.OutDir, "e2e.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Dir = cfg.OutDir
	cmd.Env = append(os.Environ(), "PATH="+l.K8sBin+":"+os.Getenv("PATH"), "KUBECONFIG="+l.AdminKubeconfig())
	cmd.Stdout = io.MultiWriter(log, cfg.Output)
	cmd.Stderr = cmd.Stdout
	cfg.Log.Info("conformance: running the suite", "focus", cfg.Focus, "skip", cfg.Skip, "log", log.Name())
	return cmd.Run()
}

// versionOf is the version a cached program was built at: build-k8s.sh
// links NAME to NAME-<version>.
func versionOf(prog string) string {
	target, err := os.Readlink(prog)
	if err != nil {
		return "unknown"
	}
	_, v, ok := strings.Cut(filepath.Base(target), "-")
	if !ok {
		return "unknown"
	}
	return v
}

// gitDescribe names the wgmesh commit under test ("-dirty" with local changes).
func gitDescribe(ctx context.Context, repo string) string {
	out, err := exec.CommandContext(ctx, "git", "-C", repo, "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
