package deploy_test

import (
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
)

// uninstallObjects decodes deploy/uninstall/uninstall.yaml strictly.
type uninstallObjects struct {
	sa          *corev1.ServiceAccount
	clusterRole *rbacv1.ClusterRole
	role        *rbacv1.Role
	ds          *appsv1.DaemonSet
	job         *batchv1.Job
}

func uninstallManifest(t *testing.T) uninstallObjects {
	t.Helper()
	strict := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var o uninstallObjects
	for _, doc := range splitDocs(t, readFile(t, filepath.Join(deployDir(t), "uninstall", "uninstall.yaml"))) {
		obj, gvk, err := strict.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decode: %v\n%s", err, doc)
		}
		switch v := obj.(type) {
		case *corev1.ServiceAccount:
			o.sa = v
		case *rbacv1.ClusterRole:
			o.clusterRole = v
		case *rbacv1.Role:
			o.role = v
		case *rbacv1.ClusterRoleBinding, *rbacv1.RoleBinding:
		case *appsv1.DaemonSet:
			o.ds = v
		case *batchv1.Job:
			o.job = v
		default:
			t.Fatalf("unexpected %s in the uninstall manifest", gvk.Kind)
		}
	}
	if o.sa == nil || o.clusterRole == nil || o.role == nil || o.ds == nil || o.job == nil {
		t.Fatalf("uninstall manifest incomplete: %+v", o)
	}
	return o
}

// The uninstall runs where no pod network is left (host network) on every
// node whatever its taints, with flags its programs define, and its
// ServiceAccount may do exactly what `uninstall --cluster` does.
func TestUninstallManifestRunsTheUninstallEverywhere(t *testing.T) {
	o := uninstallManifest(t)
	for name, spec := range map[string]corev1.PodSpec{"DaemonSet": o.ds.Spec.Template.Spec, "Job": o.job.Spec.Template.Spec} {
		if !spec.HostNetwork {
			t.Errorf("%s: not on the host network (the pod network is what it removes)", name)
		}
		if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool { return tl.Key == "" && tl.Operator == corev1.TolerationOpExists }) {
			t.Errorf("%s: does not tolerate every taint (uninstalled nodes are NotReady)", name)
		}
		checkMountsReferToVolumes(t, spec)
	}
	agentFlags := helpFlags(t, agentBinary(t), "uninstall", "--help")
	node := container(t, o.ds.Spec.Template.Spec.InitContainers, "node")
	if n := len(node.Command); n < 2 || !reflect.DeepEqual(node.Command[n-2:], []string{"wgmesh-agent", "uninstall"}) || node.Command[0] != "wgmesh-entrypoint" {
		t.Errorf("node uninstall command %q: want wgmesh-entrypoint ... wgmesh-agent uninstall (the host's iptables backend)", node.Command)
	}
	cluster := container(t, o.job.Spec.Template.Spec.Containers, "cluster")
	if !slices.Contains(cluster.Command, "--cluster") {
		t.Errorf("cluster job command %q lacks --cluster", cluster.Command)
	}
	for _, c := range []corev1.Container{node, cluster} {
		for name := range flagValues(append(slices.Clone(c.Args), c.Command...)) {
			if name != "wgmesh-entrypoint" && name != "wgmesh-agent" && name != "uninstall" && !agentFlags[name] {
				t.Errorf("%s: --%s is not a `wgmesh-agent uninstall` flag", c.Name, name)
			}
		}
	}
	hostprep := container(t, o.ds.Spec.Template.Spec.InitContainers, "hostprep")
	undoHelp, _ := exec.Command(binary(t, "wgmesh-hostprep"), "undo", "--help").CombinedOutput() // --help may exit non-zero
	for name := range flagValues(hostprep.Args) {
		if !regexp.MustCompile(`(?m)^\s+-{1,2}` + regexp.QuoteMeta(name) + `\b`).Match(undoHelp) {
			t.Errorf("hostprep: --%s is not a `wgmesh-hostprep undo` flag", name)
		}
	}
	if !mountedAt(node, "/host", "/") || !mountedAt(hostprep, "/host", "/") {
		t.Error("the node part must see the host's / at /host (--host-root)")
	}
	wantCluster := []rule{{"", "nodes", "list,patch"}, {"", "nodes/status", "patch"}}
	if got := rules(o.clusterRole.Rules); !reflect.DeepEqual(got, wantCluster) {
		t.Errorf("ClusterRole rules\n got %v\nwant %v", got, wantCluster)
	}
	wantNS := []rule{{"coordination.k8s.io", "leases", "delete,list"}}
	if got := rules(o.role.Rules); !reflect.DeepEqual(got, wantNS) {
		t.Errorf("Role rules\n got %v\nwant %v", got, wantNS)
	}
	if o.job.Spec.Template.Spec.ServiceAccountName != o.sa.Name || o.role.Namespace != o.job.Namespace {
		t.Error("the cluster Job runs as the uninstall ServiceAccount, in the namespace of the Leases")
	}
}
