package kubenode

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/test/e2e/lab"
)

// Up fills a started lab with kubelet nodes (make lab KUBELET=1): nodes
// node1..nodeN each running containerd, kubelet, kube-proxy and wgmesh
// from deploy/overlays/kubelet (the DaemonSet, applied with kubectl),
// podsPer workload pods per node created through the API, and prints the
// pods, the reachability between them and how to poke at the lab.
func Up(ctx context.Context, l *lab.Lab, nodes, podsPer int, w io.Writer) error {
	images, err := BuildImages(ctx, l)
	if err != nil {
		return err
	}
	wgImage, err := BuildWgmeshImage(ctx, l, filepath.Join(l.Dir, "images"))
	if err != nil {
		return err
	}
	images = append(images, wgImage)
	var ks []*Node
	var nodeNames []string
	for i := 1; i <= nodes; i++ {
		k, err := AddNode(ctx, l, fmt.Sprintf("node%d", i), images)
		if err == nil {
			err = k.PrepareForDaemonSet(ctx)
		}
		if err != nil {
			return err
		}
		ks = append(ks, k)
		nodeNames = append(nodeNames, k.Name)
	}
	// wgmesh as users install it: deploy/overlays/kubelet, the DaemonSet's
	// pods bound while this command runs (the lab has no kube-scheduler).
	bindCtx, stopBinder := context.WithCancel(ctx)
	defer stopBinder()
	go RunBinder(bindCtx, l, DaemonSetNamespace, nodeNames)
	if err := ApplyDaemonSet(ctx, l); err != nil {
		return err
	}
	for _, k := range ks {
		if err := k.WaitReady(ctx, 180*time.Second); err != nil {
			return err
		}
	}
	if _, err := WaitDaemonSet(ctx, l, DaemonSetName, 120*time.Second); err != nil {
		return err
	}
	dnsPod, err := StartK3sStack(ctx, l, ks, ks[0].Name)
	if err != nil {
		return err
	}
	// Pod admission needs the namespace's default ServiceAccount, which
	// kube-controller-manager creates shortly after start.
	if err := waitFor(ctx, 60*time.Second, nil, func() error {
		_, err := l.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("no default serviceaccount: %w", err)
	}
	var names []string
	for _, k := range ks {
		for j := 0; j < podsPer; j++ {
			name := fmt.Sprintf("%s-%c", k.Name, 'a'+j)
			if _, err := l.Client.CoreV1().Pods("default").Create(ctx, WorkloadPod(name, k.Name), metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create pod %s: %w", name, err)
			}
			names = append(names, name)
		}
	}
	var pods []*corev1.Pod
	err = waitFor(ctx, 120*time.Second, nil, func() error {
		pods = pods[:0]
		for _, name := range names {
			p, err := l.Client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				return fmt.Errorf("pod %s is %s", name, p.Status.Phase)
			}
			pods = append(pods, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	byName := map[string]*Node{}
	for _, k := range ks {
		byName[k.Name] = k
	}
	fmt.Fprintf(w, "\n=== pods (kubelet + containerd + wgmesh)\n")
	for _, p := range pods {
		fmt.Fprintf(w, "%-10s %-8s %s\n", p.Name, p.Spec.NodeName, p.Status.PodIP)
	}
	fmt.Fprintf(w, "\n=== HTTP from each pod's network namespace to every pod (GET / answers pod=NAME ip=IP)\n")
	bad := 0
	for _, src := range pods {
		netns, err := byName[src.Spec.NodeName].PodNetNS(src)
		if err != nil {
			return err
		}
		var row []string
		for _, dst := range pods {
			got, err := ProbeHTTP(ctx, netns, netip.MustParseAddr(dst.Status.PodIP), 2*time.Second)
			if err != nil || got != fmt.Sprintf("pod=%s ip=%s", dst.Name, dst.Status.PodIP) {
				bad++
				row = append(row, "XX")
				continue
			}
			row = append(row, "ok")
		}
		fmt.Fprintf(w, "%-10s %s\n", src.Name, strings.Join(row, " "))
	}
	k1 := ks[0]
	fmt.Fprintf(w, `
=== poke at it
enter node1:          %[1]s bash
its containerd:       %[1]s %[2]s --address %[3]s -n k8s.io containers ls
its kubelet log:      %[4]s
wgmesh's pods:        ip netns exec %[5]s %[6]s --kubeconfig %[7]s -n kube-system get pods -o wide
kubectl:              ip netns exec %[5]s %[6]s --kubeconfig %[7]s get pods -o wide -A
also running:         kube-proxy (iptables) and %[8]s on every node (logs beside the kubelet's);
                      CoreDNS %[9]s on %[10]s behind kube-dns %[11]s; the internet host %[12]s
                      (upstream DNS for www.%[13]s, HTTP :%[14]d; netns %[15]s, logs in %[16]s)
DNS from a pod:       curl -s http://POD_IP:%[14]d/resolve?name=kubernetes.default   (from its node: %[1]s curl ...)
tear down:            make lab-down
`, k1.EnterCommand(), filepath.Join(k1.bin, "ctr"), ContainerdSocket, k1.kubeletLog(),
		l.ControlPlaneNetNS(), filepath.Join(l.K8sBin, "kubectl"), l.AdminKubeconfig(),
		NetpolProgram, dnsPod.Name, dnsPod.Spec.NodeName, ClusterDNSIP, lab.InternetIP,
		InternetDomain, WorkloadHTTPPort, l.InternetNetNS(), l.InternetDir())
	if bad > 0 {
		return fmt.Errorf("%d pod pairs unreachable (lab left running for inspection; make lab-down)", bad)
	}
	return nil
}
