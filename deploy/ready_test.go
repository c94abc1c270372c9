package deploy_test

import (
	"net/netip"
	"net/url"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// notReadyTaints are the taints a node carries before it is Ready, and the
// ones a fresh k3s server or cloud node adds.
var notReadyTaints = []corev1.Taint{
	{Key: "node.kubernetes.io/not-ready", Effect: corev1.TaintEffectNoSchedule},
	{Key: "node.kubernetes.io/not-ready", Effect: corev1.TaintEffectNoExecute},
	{Key: "node.kubernetes.io/unreachable", Effect: corev1.TaintEffectNoExecute},
	{Key: "node.kubernetes.io/network-unavailable", Effect: corev1.TaintEffectNoSchedule},
	{Key: "node.cloudprovider.kubernetes.io/uninitialized", Value: "true", Effect: corev1.TaintEffectNoSchedule},
	{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule},
	{Key: "CriticalAddonsOnly", Value: "true", Effect: corev1.TaintEffectNoExecute},
}

// A node becomes Ready only once wgmesh has written its conflist there; k3s
// stops itself when a node stays NotReady too long (docs/install-k3s.md).
// So nothing the wgmesh pod needs to start and turn ready may itself wait
// for a Ready node: no cluster DNS (CoreDNS is an ordinary pod, it needs
// the pod network), no volume a CSI driver serves (its node plugin needs
// the pod network too), no Service name, no taint left untolerated, no
// node selector or affinity beyond the OS. Every way the manifests are
// shipped is checked.
func TestNothingOnThePathToReadyWaitsForReady(t *testing.T) {
	for name, o := range map[string]func(*testing.T) objects{
		"deploy/wgmesh.yaml": shipped,
		"deploy/overlays/kubelet": func(t *testing.T) objects {
			return decode(t, kustomize(t, filepath.Join(deployDir(t), "overlays", "kubelet")))
		},
		"deploy/overlays/k3s + hostprep": withHostprep,
	} {
		t.Run(name, func(t *testing.T) {
			spec := o(t).ds.Spec.Template.Spec
			if !spec.HostNetwork {
				t.Error("not hostNetwork: a pod network pod waits for the CNI this pod installs")
			}
			if spec.DNSPolicy != corev1.DNSDefault {
				t.Errorf("dnsPolicy %q, want Default: ClusterFirst(WithHostNet) resolves through CoreDNS, which cannot run before a node is Ready", spec.DNSPolicy)
			}
			for _, taint := range notReadyTaints {
				tolerated := false
				for _, tol := range spec.Tolerations {
					tolerated = tolerated || tol.ToleratesTaint(klog.Background(), &taint, false)
				}
				if !tolerated {
					t.Errorf("taint %s=%s:%s is not tolerated", taint.Key, taint.Value, taint.Effect)
				}
			}
			for k := range spec.NodeSelector {
				if k != "kubernetes.io/os" {
					t.Errorf("nodeSelector %s: the mesh must run on every node", k)
				}
			}
			if spec.Affinity != nil {
				t.Errorf("affinity %+v: the mesh must run on every node", spec.Affinity)
			}
			for _, v := range spec.Volumes {
				if v.HostPath == nil && v.ConfigMap == nil && v.Secret == nil && v.Projected == nil && v.DownwardAPI == nil && v.EmptyDir == nil {
					t.Errorf("volume %s is neither a host path nor served by the kubelet itself", v.Name)
				}
			}
			for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
				for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
					if p == nil {
						continue
					}
					if p.HTTPGet == nil || p.HTTPGet.Host != "" {
						t.Errorf("%s: a probe other than an HTTP GET on the pod's (the node's) own address: %+v", c.Name, p.ProbeHandler)
					}
				}
				if u, ok := flagValues(c.Args)["ready-url"]; ok {
					pu, err := url.Parse(u)
					if err != nil {
						t.Fatalf("%s: --ready-url %q: %v", c.Name, u, err)
					}
					if a, err := netip.ParseAddr(pu.Hostname()); err != nil || !a.IsLoopback() {
						t.Errorf("%s: --ready-url %q is not on the loopback address: it must not need DNS or a Service", c.Name, u)
					}
				}
			}
		})
	}
}
