package kubenode

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// taskDir is where containerd's runc shims keep each task's bundle (with
// init.pid), inside the node: ContainerdState/io.containerd.runtime.v2.task/<ns>/<id>.
const taskDir = "io.containerd.runtime.v2.task/k8s.io"

// ContainerPID is the host PID of a running container of the node, read
// from the task bundle's init.pid (the run-containerd bind mount makes it
// visible from the machine).
func (k *Node) ContainerPID(containerID string) (int, error) {
	id := strings.TrimPrefix(containerID, "containerd://")
	b, err := os.ReadFile(filepath.Join(k.Dir, "run-containerd", taskDir, id, "init.pid"))
	if err != nil {
		return 0, fmt.Errorf("container %s on %s: %w", id, k.Name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("container %s on %s: init.pid %q: %w", id, k.Name, b, err)
	}
	return pid, nil
}

// PodNetNS is the path of a running pod's network namespace, through its
// first container's process.
func (k *Node) PodNetNS(pod *corev1.Pod) (string, error) {
	if len(pod.Status.ContainerStatuses) == 0 || pod.Status.ContainerStatuses[0].ContainerID == "" {
		return "", fmt.Errorf("pod %s has no running container", pod.Name)
	}
	pid, err := k.ContainerPID(pod.Status.ContainerStatuses[0].ContainerID)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("/proc/%d/ns/net", pid), nil
}

// InNetNS runs fn on a locked OS thread inside the network namespace at
// path. Sockets fn opens stay in that namespace.
func InNetNS(path string, fn func() error) error {
	return ns.WithNetNSPath(path, func(ns.NetNS) error { return fn() })
}

// ProbeHTTP asks the workload at dst for its identity ("pod=NAME ip=IP"),
// from inside the network namespace at netnsPath.
func ProbeHTTP(ctx context.Context, netnsPath string, dst netip.Addr, timeout time.Duration) (string, error) {
	return ProbeHTTPAt(ctx, netnsPath, netip.AddrPortFrom(dst, WorkloadHTTPPort), timeout)
}

// ProbeHTTPAt is ProbeHTTP to any address and port that leads to a
// workload: a Service's ClusterIP, a NodePort.
func ProbeHTTPAt(ctx context.Context, netnsPath string, dst netip.AddrPort, timeout time.Duration) (string, error) {
	return httpGet(ctx, netnsPath, dst, "/", timeout)
}

// httpGet sends GET path to dst over a connection made inside the network
// namespace at netnsPath, and returns the body of a 200 answer.
func httpGet(ctx context.Context, netnsPath string, dst netip.AddrPort, path string, timeout time.Duration) (string, error) {
	var conn net.Conn
	addr := dst.String()
	err := InNetNS(netnsPath, func() error {
		var err error
		conn, err = (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.0\r\nHost: "+addr+"\r\n\r\n"); err != nil {
		return "", fmt.Errorf("GET %s%s: %w", addr, path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", fmt.Errorf("GET %s%s: %w", addr, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s%s: %w", addr, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s%s: %s", addr, path, resp.Status)
	}
	return strings.TrimSpace(string(body)), nil
}

// ProbeUDP sends payload to the workload's UDP echo at dst from inside the
// network namespace at netnsPath and requires it back.
func ProbeUDP(ctx context.Context, netnsPath string, dst netip.Addr, payload []byte, timeout time.Duration) error {
	var conn net.Conn
	addr := netip.AddrPortFrom(dst, WorkloadUDPPort).String()
	err := InNetNS(netnsPath, func() error {
		var err error
		conn, err = (&net.Dialer{Timeout: timeout}).DialContext(ctx, "udp", addr)
		return err
	})
	if err != nil {
		return fmt.Errorf("dial udp %s: %w", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(payload); err != nil {
		return fmt.Errorf("udp %s: %w", addr, err)
	}
	buf := make([]byte, len(payload)+1)
	n, err := conn.Read(buf)
	if err != nil {
		return fmt.Errorf("udp echo from %s: %w", addr, err)
	}
	if !bytes.Equal(buf[:n], payload) {
		return fmt.Errorf("udp echo from %s differs: %q", addr, buf[:n])
	}
	return nil
}

// WorkloadPod is a Pod running WorkloadImage, bound to node (the lab runs
// no scheduler), with the downward API telling it its name and address.
func WorkloadPod(name, node string) *corev1.Pod {
	no := false
	grace := int64(2)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "wgmesh-workload"}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name:            "workload",
				Image:           WorkloadImage.Ref,
				ImagePullPolicy: corev1.PullNever,
				Env: []corev1.EnvVar{
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				},
				Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: WorkloadHTTPPort, Protocol: corev1.ProtocolTCP},
					{Name: "echo", ContainerPort: WorkloadUDPPort, Protocol: corev1.ProtocolUDP},
				},
			}},
		},
	}
}
