// Package deploy_test checks the shipped manifests against the code: the
// single file equals the kustomize base, RBAC is exactly the least-privilege
// set, the DaemonSet has the properties a CNI needs, and every flag the
// manifests pass exists in the binary that receives it.
package deploy_test

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/wgmesh/wgmesh/internal/install"
	"github.com/wgmesh/wgmesh/internal/testutil"
)

func deployDir(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// splitDocs returns the non-empty YAML documents of data.
func splitDocs(t *testing.T, data []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatalf("yaml: %v\n%s", err, doc)
		}
		if len(m) > 0 {
			docs = append(docs, doc)
		}
	}
}

// objects holds the manifests' objects, decoded strictly (an unknown or
// misspelled field is an error) into the API types.
type objects struct {
	sa           *corev1.ServiceAccount
	clusterRole  *rbacv1.ClusterRole
	clusterRB    *rbacv1.ClusterRoleBinding
	role         *rbacv1.Role
	roleBinding  *rbacv1.RoleBinding
	ds           *appsv1.DaemonSet
	policies     []*admissionv1.ValidatingAdmissionPolicy
	bindings     []*admissionv1.ValidatingAdmissionPolicyBinding
	byKey        map[string]map[string]any
	orderedKinds []string
}

func decode(t *testing.T, data []byte) objects {
	t.Helper()
	strict := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	o := objects{byKey: map[string]map[string]any{}}
	for _, doc := range splitDocs(t, data) {
		obj, gvk, err := strict.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decode: %v\n%s", err, doc)
		}
		var m map[string]any
		yaml.Unmarshal(doc, &m)
		meta := m["metadata"].(map[string]any)
		key := fmt.Sprintf("%s/%v/%v", gvk.Kind, meta["namespace"], meta["name"])
		if _, dup := o.byKey[key]; dup {
			t.Fatalf("%s appears twice", key)
		}
		o.byKey[key] = m
		o.orderedKinds = append(o.orderedKinds, gvk.Kind)
		switch v := obj.(type) {
		case *corev1.ServiceAccount:
			o.sa = v
		case *rbacv1.ClusterRole:
			o.clusterRole = v
		case *rbacv1.ClusterRoleBinding:
			o.clusterRB = v
		case *rbacv1.Role:
			o.role = v
		case *rbacv1.RoleBinding:
			o.roleBinding = v
		case *appsv1.DaemonSet:
			o.ds = v
		case *admissionv1.ValidatingAdmissionPolicy:
			o.policies = append(o.policies, v)
		case *admissionv1.ValidatingAdmissionPolicyBinding:
			o.bindings = append(o.bindings, v)
		default:
			t.Fatalf("unexpected object %s", key)
		}
	}
	if o.sa == nil || o.clusterRole == nil || o.clusterRB == nil || o.role == nil || o.roleBinding == nil || o.ds == nil {
		t.Fatalf("missing objects; have %v", o.orderedKinds)
	}
	return o
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func shipped(t *testing.T) objects {
	return decode(t, readFile(t, filepath.Join(deployDir(t), "wgmesh.yaml")))
}

// base decodes deploy/base's resources and those of the components the k3s
// overlay adds (node-isolation), in kustomization order: what
// deploy/wgmesh.yaml holds.
func base(t *testing.T) objects {
	t.Helper()
	var all []byte
	for _, dir := range []string{"base", "components/node-isolation"} {
		dir = filepath.Join(deployDir(t), dir)
		var k struct{ Resources []string }
		if err := yaml.Unmarshal(readFile(t, filepath.Join(dir, "kustomization.yaml")), &k); err != nil {
			t.Fatal(err)
		}
		for _, r := range k.Resources {
			all = append(all, []byte("\n---\n")...)
			all = append(all, readFile(t, filepath.Join(dir, r))...)
		}
	}
	return decode(t, all)
}

func TestSingleFileEqualsKustomizeBase(t *testing.T) {
	got, want := shipped(t).byKey, base(t).byKey
	if !reflect.DeepEqual(got, want) {
		for k := range want {
			if !reflect.DeepEqual(got[k], want[k]) {
				a, _ := yaml.Marshal(got[k])
				b, _ := yaml.Marshal(want[k])
				t.Errorf("%s differs; deploy/wgmesh.yaml:\n%s\ndeploy/base:\n%s", k, a, b)
			}
		}
		t.Fatal("deploy/wgmesh.yaml is out of date: run deploy/generate.sh")
	}
}

type rule struct{ group, resource, verbs string }

func rules(rs []rbacv1.PolicyRule) []rule {
	var out []rule
	for _, r := range rs {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			out = append(out, rule{"?", "resourceNames/nonResourceURLs", ""})
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				v := slices.Clone(r.Verbs)
				sort.Strings(v)
				out = append(out, rule{g, res, strings.Join(v, ",")})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]) < fmt.Sprint(out[j]) })
	return out
}

// The agent reads every Node and patches its own; reserves subnets through
// Leases in its namespace (update: adopting a Lease for a re-registered
// Node); records Events. Nothing else: no secrets, no pods, no wildcards.
func TestRBACIsExactlyLeastPrivilege(t *testing.T) {
	o := shipped(t)
	wantCluster := []rule{
		{"", "events", "create,patch"},
		{"", "nodes", "get,list,patch,watch"},
		{"", "nodes/status", "patch"},
	}
	if got := rules(o.clusterRole.Rules); !reflect.DeepEqual(got, wantCluster) {
		t.Errorf("ClusterRole rules\n got %v\nwant %v", got, wantCluster)
	}
	wantNS := []rule{{"coordination.k8s.io", "leases", "create,delete,get,list,update,watch"}}
	if got := rules(o.role.Rules); !reflect.DeepEqual(got, wantNS) {
		t.Errorf("Role rules\n got %v\nwant %v", got, wantNS)
	}
	sa := rbacv1.Subject{Kind: "ServiceAccount", Name: o.sa.Name, Namespace: o.sa.Namespace}
	for name, b := range map[string]struct {
		ref  rbacv1.RoleRef
		subj []rbacv1.Subject
	}{
		"ClusterRoleBinding": {o.clusterRB.RoleRef, o.clusterRB.Subjects},
		"RoleBinding":        {o.roleBinding.RoleRef, o.roleBinding.Subjects},
	} {
		if !reflect.DeepEqual(b.subj, []rbacv1.Subject{sa}) {
			t.Errorf("%s subjects %v, want only %v", name, b.subj, sa)
		}
		wantKind := map[string]string{"ClusterRoleBinding": "ClusterRole", "RoleBinding": "Role"}[name]
		if b.ref.Kind != wantKind || b.ref.Name != "wgmesh" {
			t.Errorf("%s binds %v", name, b.ref)
		}
	}
	if o.role.Namespace != o.ds.Namespace || o.roleBinding.Namespace != o.ds.Namespace || o.sa.Namespace != o.ds.Namespace {
		t.Error("Role, RoleBinding, ServiceAccount and DaemonSet must share a namespace (the agent's Leases live there)")
	}
	if o.ds.Spec.Template.Spec.ServiceAccountName != o.sa.Name {
		t.Errorf("DaemonSet runs as %q, not the ServiceAccount %q", o.ds.Spec.Template.Spec.ServiceAccountName, o.sa.Name)
	}
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func TestDaemonSetRunsOnEveryNodeAsACNI(t *testing.T) {
	ds := shipped(t).ds
	spec := ds.Spec.Template.Spec
	if ds.Namespace != "kube-system" {
		t.Errorf("namespace %q", ds.Namespace)
	}
	if !spec.HostNetwork {
		t.Error("not hostNetwork: the agent configures the host's network")
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if !reflect.DeepEqual(spec.Tolerations, []corev1.Toleration{{Operator: corev1.TolerationOpExists}}) {
		t.Errorf("tolerations %+v, want one that tolerates every taint", spec.Tolerations)
	}
	u := ds.Spec.UpdateStrategy
	if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil || u.RollingUpdate.MaxUnavailable == nil || u.RollingUpdate.MaxUnavailable.String() != "1" {
		t.Errorf("updateStrategy %+v, want RollingUpdate maxUnavailable 1", u)
	}
	if spec.HostPID {
		t.Error("hostPID is for the optional hostprep component only")
	}
	sel := ds.Spec.Selector.MatchLabels
	for k, v := range sel {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the template", k, v)
		}
	}

	agent := container(t, spec.Containers, "agent")
	sc := agent.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("agent has no securityContext")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("agent is privileged; NET_ADMIN and NET_RAW are enough")
	}
	if !reflect.DeepEqual(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("agent capabilities %+v, want drop ALL, add NET_ADMIN NET_RAW", sc.Capabilities)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), container(t, spec.Containers, "cni-config")) {
		if c.SecurityContext == nil || c.SecurityContext.Capabilities == nil || len(c.SecurityContext.Capabilities.Add) > 0 ||
			!reflect.DeepEqual(c.SecurityContext.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s must drop every capability (it only copies files)", c.Name)
		}
	}
	env := map[string]string{}
	for _, e := range agent.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if env["NODE_NAME"] != "spec.nodeName" || env["POD_NAMESPACE"] != "metadata.namespace" {
		t.Errorf("agent env from the downward API: %v", env)
	}

	// Host paths the agent relies on.
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range agent.VolumeMounts {
		mounts[m.MountPath] = m
	}
	for mountPath, want := range map[string]struct {
		host     string
		typ      corev1.HostPathType
		readOnly bool
	}{
		"/var/lib/wgmesh":    {"/var/lib/wgmesh", corev1.HostPathDirectoryOrCreate, false},
		"/run/wgmesh":        {"/run/wgmesh", corev1.HostPathDirectoryOrCreate, false},
		"/dev/net":           {"/dev/net", corev1.HostPathDirectoryOrCreate, false},
		"/lib/modules":       {"/lib/modules", "", true},
		"/run/xtables.lock":  {"/run/xtables.lock", corev1.HostPathFileOrCreate, false},
		"/var/run/wireguard": {"/run/wireguard", corev1.HostPathDirectoryOrCreate, false},
	} {
		m, ok := mounts[mountPath]
		if !ok {
			t.Errorf("agent does not mount %s", mountPath)
			continue
		}
		hp := vols[m.Name].HostPath
		if hp == nil || hp.Path != want.host || ptrOr(hp.Type) != want.typ || m.ReadOnly != want.readOnly {
			t.Errorf("agent mount %s: volume %s %+v readOnly=%v, want host %s type %q readOnly=%v", mountPath, m.Name, hp, m.ReadOnly, want.host, want.typ, want.readOnly)
		}
	}
	checkMountsReferToVolumes(t, spec)
	checkTUNIsOptional(t, spec)
}

// checkTUNIsOptional: the TUN device serves only userspace WireGuard, so
// a host without /dev/net/tun (some LXC containers, minimal images) must
// still start the pod, for kernel WireGuard. No volume may require the
// device (type CharDevice), nor name it with a type that lets the runtime
// create it (containerd makes a missing hostPath a directory); the agent
// mounts its directory, /dev/net.
func checkTUNIsOptional(t *testing.T, spec corev1.PodSpec) {
	t.Helper()
	for _, v := range spec.Volumes {
		hp := v.HostPath
		if hp == nil {
			continue
		}
		if ptrOr(hp.Type) == corev1.HostPathCharDev || ptrOr(hp.Type) == corev1.HostPathBlockDev {
			t.Errorf("volume %s requires a device on the host (hostPath %s type %s): the pod would not start where it is missing", v.Name, hp.Path, *hp.Type)
		}
		if filepath.Clean(hp.Path) == "/dev/net/tun" {
			t.Errorf("volume %s mounts /dev/net/tun itself: mount /dev/net (DirectoryOrCreate), so that a host without it still starts the pod", v.Name)
		}
	}
}

func ptrOr(p *corev1.HostPathType) corev1.HostPathType {
	if p == nil {
		return ""
	}
	return *p
}

func checkMountsReferToVolumes(t *testing.T, spec corev1.PodSpec) {
	t.Helper()
	vols := map[string]bool{}
	for _, v := range spec.Volumes {
		vols[v.Name] = true
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		for _, m := range c.VolumeMounts {
			if !vols[m.Name] {
				t.Errorf("container %s mounts undefined volume %s", c.Name, m.Name)
			}
		}
	}
}

// expandEnv replaces $(VAR) as the kubelet does, with placeholders.
var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func expandEnv(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = envRef.ReplaceAllString(a, "placeholder")
	}
	return out
}

// installFlags parses args with the real `wgmesh-agent install` flag set.
func installFlags(args []string) (install.Options, error) {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var o install.Options
	o.RegisterFlags(fs)
	if err := fs.Parse(expandEnv(args)); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, nil
}

// mountedAt reports whether host path p is inside a mount of c under root.
func mountedAt(c corev1.Container, root, p string) bool {
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, filepath.Join(root, p))
		if err == nil && !strings.HasPrefix(rel, "..") {
			return true
		}
	}
	return false
}

// checkInstallContainers: install's args are its flags, the paths they name
// are mounted where install looks (under --host-root), and the cni-config
// container agrees with the agent on the bridge, interface and subnet file.
func checkInstallContainers(t *testing.T, ds *appsv1.DaemonSet, binDir, confDir string) {
	spec := ds.Spec.Template.Spec
	agentArgs := agentSettings(container(t, spec.Containers, "agent"))
	for _, c := range []corev1.Container{container(t, spec.InitContainers, "install"), container(t, spec.Containers, "cni-config")} {
		if !reflect.DeepEqual(c.Command, []string{"wgmesh-agent", "install"}) {
			t.Errorf("%s command %q", c.Name, c.Command)
		}
		o, err := installFlags(c.Args)
		if err != nil {
			t.Errorf("%s args %q are not `wgmesh-agent install` flags: %v", c.Name, c.Args, err)
			continue
		}
		if o.CNIBinDir == "" || o.CNIConfDir == "" {
			if !mountedAt(c, o.HostRoot, o.ContainerdConfig) {
				t.Errorf("%s reads %s but does not mount it under %s", c.Name, o.ContainerdConfig, o.HostRoot)
			}
		}
		bin := o.CNIBinDir
		if bin == "" {
			bin = binDir
		}
		if !mountedAt(c, o.HostRoot, bin) {
			t.Errorf("%s installs into %s but does not mount it under %s", c.Name, bin, o.HostRoot)
		}
		if o.StateDir != "" && !mountedAt(c, o.HostRoot, o.StateDir) {
			t.Errorf("%s sets up state dir %s without mounting it", c.Name, o.StateDir)
		}
		switch c.Name {
		case "install":
			if o.WriteConflist != install.ConflistNever {
				t.Errorf("the init container writes the conflist (%s) before the agent is ready", o.WriteConflist)
			}
		case "cni-config":
			if o.WriteConflist != install.ConflistWhenReady || o.Watch <= 0 {
				t.Errorf("cni-config: --write-conflist=%s --watch=%s, want when-ready and a watch", o.WriteConflist, o.Watch)
			}
			conf := o.CNIConfDir
			if conf == "" {
				conf = confDir
			}
			if !mountedAt(c, o.HostRoot, conf) || !mountedAt(c, o.HostRoot, o.SubnetFile) {
				t.Errorf("cni-config does not mount the conf dir %s and the subnet file %s under %s", conf, o.SubnetFile, o.HostRoot)
			}
			for flagName, v := range map[string]string{"bridge": o.Bridge, "interface": o.Interface, "subnet-file": o.SubnetFile} {
				if agentArgs[flagName] != v {
					t.Errorf("cni-config --%s=%s, agent --%s=%s: the conflist would not match the agent", flagName, v, flagName, agentArgs[flagName])
				}
			}
			if port := portOf(agentArgs["metrics-addr"]); port == "" || !strings.Contains(o.ReadyURL, ":"+port+"/readyz") {
				t.Errorf("cni-config --ready-url=%s does not reach the agent's --metrics-addr=%s", o.ReadyURL, agentArgs["metrics-addr"])
			}
		}
	}
}

func portOf(addr string) string {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return ""
	}
	return addr[i+1:]
}

// envName is the agent's environment variable for a flag (its convention;
// TestAgentArgsAreAgentFlags checks the names against `run --help`).
func envName(flagName string) string {
	return "WGMESH_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// agentSettings maps the agent's flag names to the values the manifest
// gives, as args or as WGMESH_* environment (args win, as in the agent).
func agentSettings(agent corev1.Container) map[string]string {
	out := map[string]string{}
	for _, e := range agent.Env {
		if name, ok := strings.CutPrefix(e.Name, "WGMESH_"); ok && e.ValueFrom == nil {
			out[strings.ToLower(strings.ReplaceAll(name, "_", "-"))] = e.Value
		}
	}
	for k, v := range flagValues(agent.Args) {
		out[k] = v
	}
	return out
}

// flagValues maps --name=value args to name -> value.
func flagValues(args []string) map[string]string {
	out := map[string]string{}
	for _, a := range args {
		name, value, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		out[name] = value
	}
	return out
}

// Whatever k3s's containerd config says, the dirs are mounted: containerd's
// defaults (k3s with --flannel-backend=none) and k3s's own dirs of every
// release.
func TestInstallArgsAreInstallFlags(t *testing.T) {
	ds := shipped(t).ds
	for _, dirs := range [][2]string{
		{"/opt/cni/bin", "/etc/cni/net.d"},
		{"/var/lib/rancher/k3s/data/cni", "/var/lib/rancher/k3s/agent/etc/cni/net.d"},
		{"/var/lib/rancher/k3s/data/current/bin", "/var/lib/rancher/k3s/agent/etc/cni/net.d"},
		{"/var/lib/rancher/k3s/data/3f1a9c/bin", "/var/lib/rancher/k3s/agent/etc/cni/net.d"},
	} {
		checkInstallContainers(t, ds, dirs[0], dirs[1])
	}
}

// The agent's args and WGMESH_* environment must be flags and variables
// `wgmesh-agent run` defines, and the probes must hit the port
// --metrics-addr serves.
func TestAgentArgsAreAgentFlags(t *testing.T) {
	ds := shipped(t).ds
	agent := container(t, ds.Spec.Template.Spec.Containers, "agent")
	if n := len(agent.Command); n < 2 || !reflect.DeepEqual(agent.Command[n-2:], []string{"wgmesh-agent", "run"}) {
		t.Fatalf("agent command %q does not end in `wgmesh-agent run`", agent.Command)
	}
	help := agentRunHelp(t)
	known := map[string]bool{}
	for _, m := range helpFlag.FindAllStringSubmatch(help, -1) {
		known[m[1]] = true
	}
	for name := range flagValues(agent.Args) {
		if !known[name] {
			t.Errorf("agent arg --%s is not a `wgmesh-agent run` flag (it has %v)", name, keys(known))
		}
	}
	for _, e := range agent.Env {
		if !strings.HasPrefix(e.Name, "WGMESH_") {
			continue
		}
		if !strings.Contains(help, "(env "+e.Name+")") {
			t.Errorf("agent env %s is not a variable `wgmesh-agent run` reads", e.Name)
		}
		flagName := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(e.Name, "WGMESH_"), "_", "-"))
		if !known[flagName] || envName(flagName) != e.Name {
			t.Errorf("agent env %s does not match a flag --%s", e.Name, flagName)
		}
	}
	if len(agentSettings(agent)) < 5 {
		t.Errorf("agent settings %v: the manifest should set the mesh's settings explicitly", agentSettings(agent))
	}
	port := portOf(agentSettings(agent)["metrics-addr"])
	for _, p := range []*corev1.Probe{agent.LivenessProbe, agent.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Fatal("agent needs HTTP liveness and readiness probes")
		}
	}
	if agent.LivenessProbe.HTTPGet.Path != "/healthz" || agent.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("probe paths %s %s", agent.LivenessProbe.HTTPGet.Path, agent.ReadinessProbe.HTTPGet.Path)
	}
	var metricsPort string
	for _, cp := range agent.Ports {
		if cp.Name == agent.ReadinessProbe.HTTPGet.Port.String() {
			metricsPort = fmt.Sprint(cp.ContainerPort)
		}
	}
	if metricsPort != port {
		t.Errorf("probes use container port %q, --metrics-addr serves %q", metricsPort, port)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// binary is WGMESH_BIN/name, or a fresh build of ./cmd/name.
func binary(t *testing.T, name string) string {
	t.Helper()
	if dir := os.Getenv("WGMESH_BIN"); dir != "" {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	out := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = filepath.Dir(deployDir(t))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s to read its flags: %v\n%s", name, err, b)
	}
	return out
}

func agentBinary(t *testing.T) string { return binary(t, "wgmesh-agent") }

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

var helpFlag = regexp.MustCompile(`(?m)^\s+-{1,2}([a-z0-9][a-z0-9-]*)`)

func helpFlags(t *testing.T, bin string, args ...string) map[string]bool {
	t.Helper()
	out, _ := exec.Command(bin, args...).CombinedOutput() // --help may exit non-zero
	known := map[string]bool{}
	for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
		known[m[1]] = true
	}
	if len(known) < 3 {
		t.Fatalf("`wgmesh-agent %s` listed no flags:\n%s", strings.Join(args, " "), out)
	}
	return known
}

func agentRunHelp(t *testing.T) string {
	t.Helper()
	out, _ := exec.Command(agentBinary(t), "run", "--help").CombinedOutput() // --help may exit non-zero
	return string(out)
}

// The binary's `install` subcommand is this package's flag set (the
// dispatcher wires runInstall).
func TestAgentBinaryInstallIsWired(t *testing.T) {
	known := helpFlags(t, agentBinary(t), "install", "--help")
	for _, f := range []string{"host-root", "containerd-config", "cni-bin-dir", "cni-conf-dir", "write-conflist", "ready-url", "watch", "uninstall"} {
		if !known[f] {
			t.Errorf("`wgmesh-agent install --help` does not list --%s", f)
		}
	}
}

// kustomize renders the overlays: kustomize itself where installed, else
// kubectl's built-in kustomize, from the cache `make k8s-bin` fills or PATH.
// Without either the tests skip, except under CI=true (.ci/run builds
// kubectl first), where they fail.
func kustomize(t *testing.T, dir string) []byte {
	t.Helper()
	var cmd *exec.Cmd
	if p, err := exec.LookPath("kustomize"); err == nil {
		cmd = exec.Command(p, "build", dir)
	} else {
		kubectl := testutil.Program(t, "kubectl", "overlays not rendered (kustomize is not installed either)")
		cmd = exec.Command(kubectl, "kustomize", dir)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, stderr.String())
	}
	return out
}

func TestK3sOverlayRendersTheSingleFile(t *testing.T) {
	got := decode(t, kustomize(t, filepath.Join(deployDir(t), "overlays", "k3s"))).byKey
	if want := shipped(t).byKey; !reflect.DeepEqual(got, want) {
		t.Fatal("kustomize build deploy/overlays/k3s differs from deploy/wgmesh.yaml: run deploy/generate.sh")
	}
}

func TestKubeletOverlayUsesStandardPaths(t *testing.T) {
	data := kustomize(t, filepath.Join(deployDir(t), "overlays", "kubelet"))
	if bytes.Contains(data, []byte("rancher")) {
		t.Errorf("kubelet overlay still names k3s paths:\n%s", data)
	}
	o := decode(t, data)
	checkInstallContainers(t, o.ds, "", "")
	for _, c := range append(o.ds.Spec.Template.Spec.InitContainers, container(t, o.ds.Spec.Template.Spec.Containers, "cni-config")) {
		opts, _ := installFlags(c.Args)
		if opts.CNIBinDir != "/opt/cni/bin" || opts.CNIConfDir != "/etc/cni/net.d" {
			t.Errorf("%s: bin %q conf %q", c.Name, opts.CNIBinDir, opts.CNIConfDir)
		}
	}
}

// withHostprep renders the k3s overlay with the hostprep component, as a
// user's kustomization next to a copy of deploy/ does (kustomize takes
// relative paths only).
func withHostprep(t *testing.T) objects {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "deploy"), os.DirFS(deployDir(t))); err != nil {
		t.Fatal(err)
	}
	k := "resources: [deploy/overlays/k3s]\ncomponents: [deploy/components/hostprep]\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return decode(t, kustomize(t, dir))
}

func TestHostprepComponentAddsThePrivilegedSidecar(t *testing.T) {
	o := withHostprep(t)
	spec := o.ds.Spec.Template.Spec
	hp := container(t, spec.Containers, "hostprep")
	if !spec.HostPID || hp.SecurityContext == nil || hp.SecurityContext.Privileged == nil || !*hp.SecurityContext.Privileged {
		t.Error("hostprep needs hostPID and privileged")
	}
	if !reflect.DeepEqual(hp.Command, []string{"wgmesh-hostprep", "run"}) || !slices.Contains(hp.Args, "--host-root=/host") || !mountedAt(hp, "/", "/host") {
		t.Errorf("hostprep: command %q args %q mounts %+v", hp.Command, hp.Args, hp.VolumeMounts)
	}
	known := helpFlags(t, binary(t, "wgmesh-hostprep"), "run", "-h")
	for name := range flagValues(hp.Args) {
		if !known[name] {
			t.Errorf("hostprep arg --%s is not a `wgmesh-hostprep run` flag (it has %v)", name, keys(known))
		}
	}
	if port := portOf(flagValues(hp.Args)["health-addr"]); hp.LivenessProbe == nil || hp.LivenessProbe.HTTPGet == nil ||
		len(hp.Ports) != 1 || fmt.Sprint(hp.Ports[0].ContainerPort) != port || hp.LivenessProbe.HTTPGet.Port.String() != hp.Ports[0].Name {
		t.Errorf("hostprep liveness probe does not hit --health-addr")
	}
	if hp.ReadinessProbe != nil {
		t.Error("a hostprep readiness probe would make the CNI pod unready while Longhorn's dependencies are missing")
	}
	agent := container(t, spec.Containers, "agent")
	if agent.SecurityContext.Privileged != nil && *agent.SecurityContext.Privileged {
		t.Error("the component made the agent privileged")
	}
	checkMountsReferToVolumes(t, spec)
}
