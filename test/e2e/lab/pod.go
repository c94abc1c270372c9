package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// EchoPort is the TCP port every lab pod's echo workload listens on.
const EchoPort = 8080

// Pod is a network namespace inside a node, networked through the node's
// conflist, running a TCP echo server.
type Pod struct {
	Name        string
	Node        *Node
	ContainerID string
	// NetNS is the pod's `ip netns` name inside the node's mount namespace.
	NetNS string
	IP    netip.Addr
	// Result is the CNI ADD result.
	Result *types100.Result
}

func (l *Lab) buildLabpod(ctx context.Context) error {
	l.labpod = filepath.Join(l.Dir, "labpod")
	if _, err := runCmd(ctx, "go", "build", "-C", l.Repo, "-o", l.labpod, "./test/e2e/cmd/labpod"); err != nil {
		return fmt.Errorf("lab: build labpod: %w", err)
	}
	return nil
}

// Labpod is the path of the lab's CNI/workload helper (cmd/labpod).
func (l *Lab) Labpod() string { return l.labpod }

// AddPod creates a pod namespace in n, runs CNI ADD through the conflist
// (libcni, as containerd), and starts the echo workload in it.
func (l *Lab) AddPod(ctx context.Context, n *Node, name string) (*Pod, error) {
	sum := sha256.Sum256([]byte(l.ID + n.Name + name))
	p := &Pod{Name: name, Node: n, ContainerID: hex.EncodeToString(sum[:]), NetNS: "pod-" + name}
	if _, err := n.Run(ctx, "ip", "netns", "add", p.NetNS); err != nil {
		return nil, err
	}
	if _, err := n.Run(ctx, "ip", "netns", "exec", p.NetNS, "ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	out, err := n.Output(ctx, l.labpod, "add", p.ContainerID, p.NetNSPath(), name)
	if err != nil {
		return nil, fmt.Errorf("lab: pod %s on %s: %w", name, n.Name, err)
	}
	var res types100.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return nil, fmt.Errorf("lab: pod %s: CNI result %q: %w", name, out, err)
	}
	p.Result = &res
	for _, ip := range res.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok && a.Unmap().Is4() {
			p.IP = a.Unmap()
			break
		}
	}
	if !p.IP.IsValid() {
		return nil, fmt.Errorf("lab: pod %s: no IPv4 address in CNI result %s", name, out)
	}
	if _, err := n.Start("pod-"+name+"-echo", nil, "ip", "netns", "exec", p.NetNS, l.labpod, "serve", fmt.Sprintf(":%d", EchoPort)); err != nil {
		return nil, err
	}
	return p, nil
}

// DelPod runs CNI DEL and removes the pod's namespace.
func (l *Lab) DelPod(ctx context.Context, p *Pod) error {
	if _, err := p.Node.Run(ctx, l.labpod, "del", p.ContainerID, p.NetNSPath(), p.Name); err != nil {
		return err
	}
	_, err := p.Node.Run(ctx, "ip", "netns", "delete", p.NetNS)
	return err
}

// NetNSPath is the pod namespace's path inside the node.
func (p *Pod) NetNSPath() string { return filepath.Join("/run/netns", p.NetNS) }

// Run runs argv inside the pod (its netns, the node's mount namespace).
func (p *Pod) Run(ctx context.Context, argv ...string) (string, error) {
	return p.Node.Run(ctx, append([]string{"ip", "netns", "exec", p.NetNS}, argv...)...)
}

// Ping sends count ICMP echos to dst and fails unless all are answered.
func (p *Pod) Ping(ctx context.Context, dst netip.Addr, count int) error {
	_, err := p.Run(ctx, "ping", "-q", "-n", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "1", dst.String())
	return err
}

// ProbeTCP sends payload to dst's echo workload and expects it back.
func (p *Pod) ProbeTCP(ctx context.Context, dst netip.Addr, payload string) error {
	_, err := p.Run(ctx, p.Node.lab.labpod, "probe", netip.AddrPortFrom(dst, EchoPort).String(), payload)
	return err
}

// WaitReachable retries a ping until it answers or timeout passes.
func WaitReachable(ctx context.Context, run func(context.Context) error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = run(ctx); err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}
