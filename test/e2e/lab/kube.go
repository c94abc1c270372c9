package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/wgmesh/wgmesh/internal/cniconf"
	"github.com/wgmesh/wgmesh/internal/keys"
	"github.com/wgmesh/wgmesh/internal/subnetenv"
	"github.com/wgmesh/wgmesh/internal/wireguard"
)

// AgentServiceAccount is the ServiceAccount deploy/ grants the agent's RBAC to.
const AgentServiceAccount = "wgmesh"

// AgentRBACFiles are the manifests whose ServiceAccount, (Cluster)Roles and
// bindings the lab's agents run under: the same least privilege as the
// DaemonSet, never admin.
func (l *Lab) AgentRBACFiles() []string {
	return []string{
		filepath.Join(l.Repo, "deploy", "base", "serviceaccount.yaml"),
		filepath.Join(l.Repo, "deploy", "base", "rbac.yaml"),
	}
}

// DecodeManifests reads every object of a multi-document YAML file.
func DecodeManifests(path string) ([]runtime.Object, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := utilyaml.NewYAMLReader(bufioReader(b))
	var objs []runtime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		objs = append(objs, obj)
	}
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// ApplyAgentRBAC creates the agent's ServiceAccount, roles and bindings from
// deploy/ (idempotent).
func (l *Lab) ApplyAgentRBAC(ctx context.Context) error {
	for _, f := range l.AgentRBACFiles() {
		objs, err := DecodeManifests(f)
		if err != nil {
			return fmt.Errorf("lab: agent RBAC: %w", err)
		}
		for _, o := range objs {
			if err := l.create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("lab: agent RBAC from %s: %w", f, err)
			}
		}
	}
	return nil
}

func (l *Lab) create(ctx context.Context, o runtime.Object) error {
	c := l.Client
	var err error
	switch o := o.(type) {
	case *corev1.ServiceAccount:
		_, err = c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.ClusterRole:
		_, err = c.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.ClusterRoleBinding:
		_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.Role:
		_, err = c.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.RoleBinding:
		_, err = c.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *admissionv1.ValidatingAdmissionPolicy:
		_, err = c.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, o, metav1.CreateOptions{})
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		_, err = c.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, o, metav1.CreateOptions{})
	default:
		return fmt.Errorf("unexpected %T in agent RBAC manifests", o)
	}
	return err
}

// AgentToken returns a ServiceAccount token (TokenRequest) for the agent's
// ServiceAccount, as the kubelet projects one into the DaemonSet's pods.
func (l *Lab) AgentToken(ctx context.Context) (string, error) {
	exp := int64((72 * time.Hour).Seconds())
	tr, err := l.Client.CoreV1().ServiceAccounts(AgentNamespace).CreateToken(ctx, AgentServiceAccount,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("lab: token for serviceaccount %s/%s: %w", AgentNamespace, AgentServiceAccount, err)
	}
	return tr.Status.Token, nil
}

// NodeIsolationPolicyFile is deploy/'s ValidatingAdmissionPolicy and binding
// that confine each agent to its own Node and subnet Leases.
func (l *Lab) NodeIsolationPolicyFile() string {
	return filepath.Join(l.Repo, "deploy", "components", "node-isolation", "policy.yaml")
}

// ApplyNodeIsolationPolicy creates the policy and its binding from deploy/
// (idempotent). The API server enforces a new policy only after its policy
// cache caught up (about a second): callers wait for a denial they expect.
func (l *Lab) ApplyNodeIsolationPolicy(ctx context.Context) error {
	objs, err := DecodeManifests(l.NodeIsolationPolicyFile())
	if err != nil {
		return fmt.Errorf("lab: node isolation policy: %w", err)
	}
	for _, o := range objs {
		if err := l.create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("lab: node isolation policy: %w", err)
		}
	}
	return nil
}

// AgentPodToken returns a token of the agent's ServiceAccount bound to a Pod
// on node, as the kubelet projects one into the DaemonSet's pod there: the
// API server adds the node claim (user extra
// authentication.kubernetes.io/node-name) to such a token. The Pod
// (wgmesh-<node> in the agent's namespace, bound to node by spec.nodeName)
// only has to exist; no kubelet runs it. Call ApplyAgentRBAC first (the
// ServiceAccount must exist).
func (l *Lab) AgentPodToken(ctx context.Context, node string) (string, error) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "wgmesh-" + node, Namespace: AgentNamespace,
			Labels: map[string]string{"app.kubernetes.io/name": "wgmesh"}},
		Spec: corev1.PodSpec{
			NodeName:           node,
			ServiceAccountName: AgentServiceAccount,
			Containers:         []corev1.Container{{Name: "agent", Image: "ghcr.io/wgmesh/wgmesh:latest"}},
		},
	}
	p, err := l.Client.CoreV1().Pods(AgentNamespace).Create(ctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		p, err = l.Client.CoreV1().Pods(AgentNamespace).Get(ctx, pod.Name, metav1.GetOptions{})
	}
	if err != nil {
		return "", fmt.Errorf("lab: agent pod on %s: %w", node, err)
	}
	exp := int64((72 * time.Hour).Seconds())
	tr, err := l.Client.CoreV1().ServiceAccounts(AgentNamespace).CreateToken(ctx, AgentServiceAccount,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
		}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("lab: pod-bound token for %s/%s on %s: %w", AgentNamespace, AgentServiceAccount, node, err)
	}
	return tr.Status.Token, nil
}

// SetAgentToken makes n's agent authenticate with token from its next
// (re)start (StartAgent): by default it gets a token bound to nothing.
func (l *Lab) SetAgentToken(n *Node, token string) error {
	return l.writeKubeconfig(filepath.Join(n.Dir, "agent.kubeconfig"),
		"system:serviceaccount:"+AgentNamespace+":"+AgentServiceAccount, token)
}

// RegisterNode creates n's Node object as a kubelet would: InternalIP = its
// underlay address, Hostname, and a Ready condition.
func (l *Lab) RegisterNode(ctx context.Context, n *Node) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{
		"kubernetes.io/hostname": n.Name, "kubernetes.io/os": "linux",
	}}}
	if _, err := l.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("lab: register node %s: %w", n.Name, err)
	}
	// A patch, not an update: kube-controller-manager may already have set
	// spec.podCIDR, and a patch does not race with it.
	now := metav1.Now()
	status := corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.Addr.String()},
			{Type: corev1.NodeHostName, Address: n.Name},
		},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "lab node (no kubelet)", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
	}
	patch, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return err
	}
	if _, err := l.Client.CoreV1().Nodes().PatchStatus(ctx, n.Name, patch); err != nil {
		return fmt.Errorf("lab: node %s status: %w", n.Name, err)
	}
	if l.NoCIDRAllocation {
		return nil
	}
	// On a real cluster the DaemonSet's pod starts well after
	// kube-controller-manager filled spec.podCIDR; wait for it, so that the
	// agent never sees an allocating cluster's node without one.
	return WaitReachable(ctx, func(ctx context.Context) error {
		p, err := l.PodCIDR(ctx, n.Name)
		if err == nil && !p.IsValid() {
			err = fmt.Errorf("node %s has no spec.podCIDR yet", n.Name)
		}
		return err
	}, 30*time.Second)
}

// DeleteNodeObject deletes a Node object (absent is fine).
func (l *Lab) DeleteNodeObject(ctx context.Context, name string) error {
	err := l.Client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("lab: delete node %s: %w", name, err)
	}
	return nil
}

// Node paths the agent uses, inside the node.
const (
	AgentInterface  = cniconf.DefaultWireguardInterface
	AgentBridge     = cniconf.DefaultBridge
	AgentKeyFile    = keys.DefaultPath
	AgentSubnetFile = subnetenv.DefaultPath
	AgentMetrics    = "127.0.0.1:9918"
)

// AgentCommand is `wgmesh-agent <sub>` with the flags the lab's agents run
// with (status and doctor take the same flags as run).
func (l *Lab) AgentCommand(n *Node, sub string) []string {
	return append([]string{filepath.Join(l.Bin, "wgmesh-agent"), sub}, l.agentFlags(n)...)
}

// agentFlags are the agent flags the lab uses, as the DaemonSet passes them.
func (l *Lab) agentFlags(n *Node) []string {
	return []string{
		"--kubeconfig", filepath.Join(n.Dir, "agent.kubeconfig"),
		"--node-name", n.Name,
		"--interface", AgentInterface,
		"--wireguard", "auto",
		"--listen-port", strconv.Itoa(ListenPort),
		"--private-key", AgentKeyFile,
		"--subnet-file", AgentSubnetFile,
		"--cluster-cidr", l.ClusterCIDRs(),
		"--node-cidr-mask-size", strconv.Itoa(NodeCIDRMaskSize),
		"--namespace", AgentNamespace,
		"--metrics-addr", AgentMetrics,
		"--bridge", AgentBridge,
	}
}

// StartAgent runs the real wgmesh-agent inside n with a ServiceAccount
// token bound to deploy/'s RBAC. A running agent is stopped first.
func (l *Lab) StartAgent(ctx context.Context, n *Node) error {
	kc := filepath.Join(n.Dir, "agent.kubeconfig")
	if !exists(kc) {
		if err := l.ApplyAgentRBAC(ctx); err != nil {
			return err
		}
		tok, err := l.AgentToken(ctx)
		if err != nil {
			return err
		}
		if err := l.writeKubeconfig(kc, "system:serviceaccount:"+AgentNamespace+":"+AgentServiceAccount, tok); err != nil {
			return err
		}
	}
	if n.Agent != nil {
		n.Agent.Stop(10 * time.Second)
	}
	// wireguard-go's debug messages in the device log (handshakes, keypair
	// changes), for the failure dumps of the scenarios.
	env := append([]string{wireguard.DebugEnv + "=1"}, l.AgentEnv...)
	p, err := n.Start("wgmesh-agent", env, l.AgentCommand(n, "run")...)
	if err != nil {
		return err
	}
	n.Agent = p
	return nil
}

// StopAgent stops n's agent with SIGTERM (a graceful shutdown).
func (l *Lab) StopAgent(n *Node) {
	if n.Agent != nil {
		n.Agent.Stop(10 * time.Second)
		n.Agent = nil
	}
}

// AddNode is NewNode + RegisterNode + StartAgent: an agent-only node.
func (l *Lab) AddNode(ctx context.Context, name string) (*Node, error) {
	n, err := l.NewNode(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := l.RegisterNode(ctx, n); err != nil {
		return nil, err
	}
	if err := l.StartAgent(ctx, n); err != nil {
		return nil, err
	}
	return n, nil
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// WaitAgentReady waits until n's agent answers /readyz and has written
// subnet.env: what a kubelet waits for (CNI STATUS) before it runs pods.
func (l *Lab) WaitAgentReady(ctx context.Context, n *Node, timeout time.Duration) error {
	err := WaitReachable(ctx, func(ctx context.Context) error {
		if out, err := n.Run(ctx, "curl", "-fsS", "-m", "1", "http://"+AgentMetrics+"/readyz"); err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		_, err := n.Run(ctx, "test", "-s", AgentSubnetFile)
		return err
	}, timeout)
	if err != nil {
		return fmt.Errorf("lab: agent on %s not ready after %s: %w", n.Name, timeout, err)
	}
	return nil
}
