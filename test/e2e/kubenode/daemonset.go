package kubenode

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// wgmesh as users deploy it: the DaemonSet of deploy/overlays/kubelet,
// applied with kubectl, running the wgmesh image (BuildWgmeshImage) that
// every node's containerd has under WgmeshImageRef.

// DaemonSetName and DaemonSetNamespace are deploy/'s DaemonSet.
const (
	DaemonSetName      = "wgmesh"
	DaemonSetNamespace = lab.AgentNamespace
)

// KubeletOverlay is the kustomize overlay the kubelet lab applies.
func KubeletOverlay(l *lab.Lab) string {
	return filepath.Join(l.Repo, "deploy", "overlays", "kubelet")
}

// UninstallManifest is deploy/'s documented uninstall.
func UninstallManifest(l *lab.Lab) string {
	return filepath.Join(l.Repo, "deploy", "uninstall", "uninstall.yaml")
}

// Kubectl runs the lab's kubectl with the admin kubeconfig inside the
// control plane's namespace (where the API answers) and returns its output.
func Kubectl(ctx context.Context, l *lab.Lab, args ...string) (string, error) {
	argv := append([]string{"netns", "exec", l.ControlPlaneNetNS(), filepath.Join(l.K8sBin, "kubectl"),
		"--kubeconfig", l.AdminKubeconfig()}, args...)
	out, err := exec.CommandContext(ctx, "ip", argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// PrepareForDaemonSet makes a kubelet node what a fresh node is before
// wgmesh is installed, and gives it what the manifest needs from a node
// that the lab otherwise lacks:
//   - empty CNI dirs: lab.NewNode installs the plugins and the conflist for
//     harness-started agents; here the DaemonSet's install step and its
//     cni-config container must do it;
//   - kube-proxy (iptables mode, as k3s runs it embedded) and a default
//     route: the agent reaches the API through the kubernetes Service
//     (KUBERNETES_SERVICE_HOST=10.43.0.1, set by the kubelet), which on a
//     real node works before any CNI because kube-proxy DNATs it;
//   - a private /var/lib/wgmesh-hostprep: the uninstall's host-prep step
//     works on the host's, which must be the node's, not the machine's.
func (k *Node) PrepareForDaemonSet(ctx context.Context) error {
	for _, key := range []string{"opt-cni-bin", "etc-cni-net.d"} {
		dir := filepath.Join(k.Dir, key)
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	hp := filepath.Join(k.Dir, "var-lib-wgmesh-hostprep")
	if err := os.MkdirAll(hp, 0o755); err != nil {
		return err
	}
	if err := k.Bind(ctx, hp, "/var/lib/wgmesh-hostprep"); err != nil {
		return fmt.Errorf("kubenode: node %s: %w", k.Name, err)
	}
	return k.StartKubeProxy(ctx, "iptables")
}

// ApplyDaemonSet applies deploy/overlays/kubelet with kubectl, as a user
// installs wgmesh on plain kubelet nodes.
func ApplyDaemonSet(ctx context.Context, l *lab.Lab) error {
	_, err := Kubectl(ctx, l, "apply", "-k", KubeletOverlay(l))
	return err
}

// WaitDaemonSet waits until the DaemonSet's rollout is complete: every
// scheduled pod runs the current template and is ready.
func WaitDaemonSet(ctx context.Context, l *lab.Lab, name string, timeout time.Duration) (*appsv1.DaemonSet, error) {
	var ds *appsv1.DaemonSet
	err := waitFor(ctx, timeout, nil, func() error {
		var err error
		ds, err = l.Client.AppsV1().DaemonSets(DaemonSetNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s := ds.Status
		if s.ObservedGeneration < ds.Generation || s.DesiredNumberScheduled == 0 ||
			s.UpdatedNumberScheduled != s.DesiredNumberScheduled || s.NumberReady != s.DesiredNumberScheduled ||
			s.NumberAvailable != s.DesiredNumberScheduled {
			return fmt.Errorf("daemonset %s: desired %d, updated %d, ready %d, available %d (generation %d, observed %d)",
				name, s.DesiredNumberScheduled, s.UpdatedNumberScheduled, s.NumberReady, s.NumberAvailable, ds.Generation, s.ObservedGeneration)
		}
		return nil
	})
	return ds, err
}

// RunBinder binds the lab's unscheduled pods until ctx ends, standing in
// for kube-scheduler, which the lab does not run: a pod whose node
// affinity names one node (what the DaemonSet controller creates) goes
// there; any other (a Job's) goes to the first of nodes by name. Test pods
// name their node themselves. A pod someone else bound first is left.
func RunBinder(ctx context.Context, l *lab.Lab, namespace string, nodes []string) {
	nodes = append([]string(nil), nodes...)
	sort.Strings(nodes)
	for ctx.Err() == nil {
		pods, err := l.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName="})
		if err == nil {
			for i := range pods.Items {
				p := &pods.Items[i]
				node := affinityNode(p)
				if node == "" && len(nodes) > 0 {
					node = nodes[0]
				}
				if node == "" || p.DeletionTimestamp != nil {
					continue
				}
				err := l.Client.CoreV1().Pods(namespace).Bind(ctx, &corev1.Binding{
					ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: namespace, UID: p.UID},
					Target:     corev1.ObjectReference{Kind: "Node", Name: node},
				}, metav1.CreateOptions{})
				if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
					l.Log.Warn("kubenode: bind", "pod", p.Name, "node", node, "err", err)
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// affinityNode is the one node a pod's required node affinity allows by
// metadata.name, or "".
func affinityNode(p *corev1.Pod) string {
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, f := range term.MatchFields {
			if f.Key == "metadata.name" && f.Operator == corev1.NodeSelectorOpIn && len(f.Values) == 1 {
				return f.Values[0]
			}
		}
	}
	return ""
}

// DaemonSetPod returns the DaemonSet's pod on node (by label), or an error.
func DaemonSetPod(ctx context.Context, l *lab.Lab, name, node string) (*corev1.Pod, error) {
	pods, err := l.Client.CoreV1().Pods(DaemonSetNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=" + name, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, err
	}
	for i := range pods.Items {
		if pods.Items[i].DeletionTimestamp == nil {
			return &pods.Items[i], nil
		}
	}
	return nil, fmt.Errorf("no %s pod on %s", name, node)
}
