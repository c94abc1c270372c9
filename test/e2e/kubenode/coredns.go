package kubenode

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// Cluster DNS as k3s sets it up: CoreDNS behind the Service kube-dns at the
// tenth address of the service CIDR, and every kubelet pointing its pods
// there (k3s --cluster-dns, --cluster-domain).
var (
	ClusterDNSIP  = netip.MustParseAddr("10.43.0.10")
	ClusterDomain = "cluster.local"
)

// CoreDNSVersion is the CoreDNS the lab runs (test/e2e/tools/build-k8s.sh
// COREDNS_VERSION builds it into the binary cache).
const CoreDNSVersion = "v1.15.0"

// CoreDNSImage is the lab image holding the cached coredns binary.
var CoreDNSImage = Image{Ref: "wgmesh.test/coredns:" + CoreDNSVersion, Binary: "/coredns"}

// InternetDomain is the zone the lab's upstream resolver (on the internet
// host) answers: www.<InternetDomain> is the internet host itself.
const InternetDomain = "internet.test"

// Corefile is k3s's default Corefile (its manifests/coredns.yaml) less
// what needs files the lab has no use for: the NodeHosts hosts block and
// the two `import /etc/coredns/custom/*` lines. `forward . /etc/resolv.conf`
// reaches the lab's own upstream resolver: the pod's dnsPolicy is Default,
// so its resolv.conf is the kubelet's resolvConf, which names the internet
// host (lab.InternetIP).
const Corefile = `.:53 {
    errors
    health
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
}
`

// upstreamCorefile is the internet host's resolver: www.internet.test is
// the internet host; every other name is NXDOMAIN (no forwarding, so the
// lab never asks a resolver outside it).
func upstreamCorefile() string {
	return fmt.Sprintf(`.:53 {
    errors
    hosts {
        %s www.%s
    }
}
`, lab.InternetIP, InternetDomain)
}

// BuildCoreDNSImage packs the cached coredns binary (build-k8s.sh coredns)
// as a docker-archive under dir, like the lab's other images.
func BuildCoreDNSImage(l *lab.Lab, dir string) (string, error) {
	prog, err := os.ReadFile(filepath.Join(l.K8sBin, "coredns"))
	if err != nil {
		return "", fmt.Errorf("coredns not built (test/e2e/tools/build-k8s.sh coredns): %w", err)
	}
	out := filepath.Join(dir, "coredns.tar")
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := WriteDockerArchive(f, CoreDNSImage.Ref, CoreDNSImage.Binary, prog); err != nil {
		return "", fmt.Errorf("build image %s: %w", CoreDNSImage.Ref, err)
	}
	return out, f.Close()
}

// StartInternet makes the lab's internet host (lab.MakeInternet) and runs
// there the upstream DNS resolver (the same coredns binary) and an HTTP
// server (the workload program: GET /client answers the source address a
// request came from), on port WorkloadHTTPPort.
func StartInternet(ctx context.Context, l *lab.Lab) error {
	if err := l.MakeInternet(ctx); err != nil {
		return err
	}
	corefile := filepath.Join(l.InternetDir(), "Corefile")
	if err := os.WriteFile(corefile, []byte(upstreamCorefile()), 0o644); err != nil {
		return err
	}
	if _, err := l.StartOnInternet("coredns", filepath.Join(l.K8sBin, "coredns"), "-conf", corefile); err != nil {
		return err
	}
	workload := filepath.Join(l.Dir, "images", "workload")
	if _, err := os.Stat(workload); err != nil {
		return fmt.Errorf("internet host: the workload program is built by BuildImages: %w", err)
	}
	p, err := l.StartOnInternet("http", workload)
	if err != nil {
		return err
	}
	netns := lab.NetNSPath(l.InternetNetNS())
	return waitFor(ctx, 30*time.Second, p, func() error {
		_, err := httpGet(ctx, netns, netip.AddrPortFrom(lab.InternetIP, WorkloadHTTPPort), "/healthz", 2*time.Second)
		return err
	})
}

// CoreDNSObjects are the objects k3s's coredns manifest creates in
// kube-system (ServiceAccount, ClusterRole and binding system:coredns,
// ConfigMap coredns, Deployment coredns, Service kube-dns), with the lab's
// image. The lab may run no scheduler, so the pod template names its node.
func CoreDNSObjects(node string) (sa *corev1.ServiceAccount, role *rbacv1.ClusterRole, binding *rbacv1.ClusterRoleBinding,
	cm *corev1.ConfigMap, deploy *appsv1.Deployment, svc *corev1.Service) {
	const ns = "kube-system"
	labels := map[string]string{"k8s-app": "kube-dns"}
	sa = &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: ns}}
	role = &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns", Labels: map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"}},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	binding = &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns", Labels: map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:coredns"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "coredns", Namespace: ns}},
	}
	cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: ns}, Data: map[string]string{"Corefile": Corefile}}
	one := int32(1)
	no, yes := false, true
	deploy = &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: ns, Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeName:           node,
					ServiceAccountName: "coredns",
					DNSPolicy:          corev1.DNSDefault,
					Tolerations: []corev1.Toleration{
						{Key: "CriticalAddonsOnly", Operator: corev1.TolerationOpExists},
						{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
					},
					Containers: []corev1.Container{{
						Name:            "coredns",
						Image:           CoreDNSImage.Ref,
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"-conf", "/etc/coredns/Corefile"},
						Resources: corev1.ResourceRequirements{
							Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("170Mi")},
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("70Mi")},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "config-volume", MountPath: "/etc/coredns", ReadOnly: true}},
						Ports: []corev1.ContainerPort{
							{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
							{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
							{Name: "metrics", ContainerPort: 9153, Protocol: corev1.ProtocolTCP},
						},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: &no,
							Capabilities:             &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}, Drop: []corev1.Capability{"all"}},
							ReadOnlyRootFilesystem:   &yes,
						},
						LivenessProbe: &corev1.Probe{
							ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(8080)}},
							InitialDelaySeconds: 60, PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3,
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8181)}},
							PeriodSeconds: 2, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3,
						},
					}},
					Volumes: []corev1.Volume{{Name: "config-volume", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"},
						Items:                []corev1.KeyToPath{{Key: "Corefile", Path: "Corefile"}},
					}}}},
				},
			},
		},
	}
	svc = &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: ns, Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
		Spec: corev1.ServiceSpec{
			Selector:  labels,
			ClusterIP: ClusterDNSIP.String(),
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP},
				{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP},
			},
		},
	}
	return
}

// DeployCoreDNS creates CoreDNSObjects (the pod bound to node) and waits
// until the CoreDNS pod is Ready: its kubernetes plugin has synced from the
// API, which it reaches as every in-cluster client does, through the
// `kubernetes` Service (10.43.0.1, kube-proxy's DNAT to the API server in
// the control-plane namespace) with its ServiceAccount token. It needs
// kube-proxy on node.
func DeployCoreDNS(ctx context.Context, l *lab.Lab, node string, timeout time.Duration) (*corev1.Pod, error) {
	sa, role, binding, cm, deploy, svc := CoreDNSObjects(node)
	c := l.Client
	errs := []error{
		ignoreExists(c.CoreV1().ServiceAccounts(sa.Namespace).Create(ctx, sa, metav1.CreateOptions{})),
		ignoreExists(c.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})),
		ignoreExists(c.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})),
		ignoreExists(c.CoreV1().ConfigMaps(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{})),
		ignoreExists(c.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})),
		ignoreExists(c.AppsV1().Deployments(deploy.Namespace).Create(ctx, deploy, metav1.CreateOptions{})),
	}
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("deploy coredns: %w", err)
		}
	}
	var ready *corev1.Pod
	err := waitFor(ctx, timeout, nil, func() error {
		pods, err := c.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-dns"})
		if err != nil {
			return err
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if c := podCondition(p, corev1.PodReady); c != nil && c.Status == corev1.ConditionTrue {
				ready = p
				return nil
			}
		}
		if len(pods.Items) == 0 {
			return fmt.Errorf("no coredns pod yet")
		}
		p := &pods.Items[0]
		return fmt.Errorf("coredns pod %s on %s: %s, not Ready", p.Name, p.Spec.NodeName, p.Status.Phase)
	})
	if err != nil {
		return nil, fmt.Errorf("coredns not ready: %w", err)
	}
	return ready, nil
}

func podCondition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

func ignoreExists[T any](_ T, err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
