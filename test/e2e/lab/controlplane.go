package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// APIServerURL is the API as every node (and kubectl in the control-plane
// namespace) reaches it, over the underlay.
func APIServerURL() string {
	return "https://" + net.JoinHostPort(ControlPlaneIP.String(), strconv.Itoa(APIPort))
}

func (l *Lab) cpDir(parts ...string) string {
	return filepath.Join(append([]string{l.Dir, "controlplane"}, parts...)...)
}

// CAFile is the apiserver's self-signed serving certificate bundle (it
// generates one for its bind address into --cert-dir).
func (l *Lab) CAFile() string { return l.cpDir("certs", "apiserver.crt") }

// AdminKubeconfig is a system:masters kubeconfig for the API at
// APIServerURL; use it from inside the control-plane namespace or a node.
func (l *Lab) AdminKubeconfig() string { return l.cpDir("admin.kubeconfig") }

func (l *Lab) k8sBin(name string) (string, error) {
	p := filepath.Join(l.K8sBin, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("lab: %s not built (test/e2e/tools/build-k8s.sh): %w", name, err)
	}
	return p, nil
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (l *Lab) startControlPlane(ctx context.Context) error {
	if _, err := l.k8sBin("kube-controller-manager"); err != nil {
		return err
	}
	if err := l.startAPI(ctx); err != nil {
		return err
	}
	if err := l.startControllerManager(ctx); err != nil {
		return err
	}
	if l.Kubelets {
		return l.startScheduler()
	}
	return nil
}

// startAPI starts etcd and kube-apiserver and waits for /readyz.
func (l *Lab) startAPI(ctx context.Context) error {
	etcd, err := l.k8sBin("etcd")
	if err != nil {
		return err
	}
	apiserver, err := l.k8sBin("kube-apiserver")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(l.cpDir("certs"), 0o700); err != nil {
		return err
	}
	saKey, saPub := l.cpDir("sa.key"), l.cpDir("sa.pub")
	if err := runAll(ctx,
		[]string{"openssl", "genrsa", "-out", saKey, "2048"},
		[]string{"openssl", "rsa", "-in", saKey, "-pubout", "-out", saPub},
	); err != nil {
		return err
	}
	l.AdminToken = randomToken()
	tokens := l.cpDir("tokens.csv")
	if err := os.WriteFile(tokens, []byte(l.AdminToken+",admin,admin,system:masters\n"), 0o600); err != nil {
		return err
	}
	cp := l.ControlPlaneNetNS()
	in := func(argv ...string) []string { return append([]string{"ip", "netns", "exec", cp}, argv...) }

	if _, err := l.startProcess("etcd", l.cpDir("etcd.log"), nil, in(etcd,
		"--data-dir", l.cpDir("etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380",
		"--unsafe-no-fsync", "--log-level", "warn")...); err != nil {
		return err
	}
	if _, err := l.startProcess("kube-apiserver", l.cpDir("kube-apiserver.log"), nil, in(apiserver,
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", ControlPlaneIP.String(), "--advertise-address", ControlPlaneIP.String(),
		"--secure-port", strconv.Itoa(APIPort), "--cert-dir", l.cpDir("certs"),
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--token-auth-file", tokens, "--authorization-mode", "RBAC",
		"--service-cluster-ip-range", l.ServiceCIDRs(),
		// kubectl exec/logs/port-forward go through the kubelet: dial it at
		// the Node's InternalIP, as node names resolve nowhere in the lab.
		"--kubelet-preferred-address-types", "InternalIP")...); err != nil {
		return err
	}
	if err := l.writeKubeconfig(l.AdminKubeconfig(), "admin", l.AdminToken); err != nil {
		return err
	}
	return l.waitAPI(ctx)
}

func (l *Lab) startControllerManager(ctx context.Context) error {
	kcm, err := l.k8sBin("kube-controller-manager")
	if err != nil {
		return err
	}
	saKey := l.cpDir("sa.key")
	in := func(argv ...string) []string {
		return append([]string{"ip", "netns", "exec", l.ControlPlaneNetNS()}, argv...)
	}
	args := []string{kcm,
		"--kubeconfig", l.AdminKubeconfig(), "--leader-elect=false",
		"--bind-address", "127.0.0.1",
		"--service-account-private-key-file", saKey, "--root-ca-file", l.CAFile(),
		"--service-cluster-ip-range", l.ServiceCIDRs(),
	}
	if !l.Kubelets {
		// No kubelets heartbeat for agent-only nodes: without this their
		// Nodes would turn NotReady and tainted after 40 s.
		args = append(args, "--controllers", "*,-node-lifecycle-controller")
	}
	if !l.NoCIDRAllocation {
		args = append(args, "--allocate-node-cidrs", "--cluster-cidr", l.ClusterCIDRs())
		args = append(args, l.nodeCIDRFlags()...)
	}
	if _, err := l.startProcess("kube-controller-manager", l.cpDir("kube-controller-manager.log"), nil, in(args...)...); err != nil {
		return err
	}
	l.Log.Info("lab: control plane up", "api", APIServerURL(), "netns", l.ControlPlaneNetNS(), "cidrAllocation", !l.NoCIDRAllocation)
	return nil
}

// writeKubeconfig writes a token kubeconfig for the lab's API.
func (l *Lab) writeKubeconfig(path, user, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: APIServerURL(), CertificateAuthority: l.CAFile()}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: user}
	cfg.CurrentContext = "lab"
	return clientcmd.WriteToFile(*cfg, path)
}

// Dial opens a connection from inside the control-plane namespace: the
// harness's way to the API, with no port on the machine's own network.
func (l *Lab) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := InNetNS(l.ControlPlaneNetNS(), func() error {
		var err error
		c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// RestConfigFor is a client config with token, dialing through the
// control-plane namespace.
func (l *Lab) RestConfigFor(token string) *rest.Config {
	return &rest.Config{
		Host:            APIServerURL(),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: l.CAFile()},
		Dial:            l.Dial,
		QPS:             100,
		Burst:           200,
		Timeout:         30 * time.Second,
	}
}

func (l *Lab) waitAPI(ctx context.Context) error {
	deadline := time.Now().Add(90 * time.Second)
	for !exists(l.CAFile()) {
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: kube-apiserver wrote no %s (see %s)", l.CAFile(), l.cpDir("kube-apiserver.log"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The apiserver writes its certificate file while starting: a client
	// that read it half-written would never trust the server, so every try
	// builds a fresh client from the file as it is now.
	var last error
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return err
		}
		cfg := l.RestConfigFor(l.AdminToken)
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			l.RestConfig, l.Client = cfg, cs
			return nil
		}
		last = fmt.Errorf("%v %s", err, body)
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("lab: kube-apiserver not ready after 90s (see %s): %v", l.cpDir("kube-apiserver.log"), last)
}
