package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// InternetIP is the address of the lab's "internet" host: a namespace on
// the underlay that is neither a node nor the control plane. It stands
// for everything outside the cluster a pod talks to: the upstream DNS
// resolver (the nodes' resolv.conf names it) and servers a pod's egress
// reaches (masqueraded to its node's address). Nodes get addresses from
// .11 upwards.
var InternetIP = netip.MustParseAddr("172.31.0.250")

// InternetNetNS is the namespace of the internet host.
func (l *Lab) InternetNetNS() string { return l.nsName("inet") }

// InternetDir holds the internet host's files and logs.
func (l *Lab) InternetDir() string { return filepath.Join(l.Dir, "internet") }

// MakeInternet creates the internet host's namespace on the underlay, with
// InternetIP. Down removes it with the lab's other namespaces.
func (l *Lab) MakeInternet(ctx context.Context) error {
	ns := l.InternetNetNS()
	if err := os.MkdirAll(l.InternetDir(), 0o755); err != nil {
		return err
	}
	if _, err := runCmd(ctx, "ip", "netns", "add", ns); err != nil {
		return err
	}
	l.addNetNS(ns)
	if _, err := runCmd(ctx, "ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
		return err
	}
	if err := l.plug(ctx, ns, "inet", InternetIP); err != nil {
		return fmt.Errorf("lab: internet host: %w", err)
	}
	return nil
}

// StartOnInternet runs argv inside the internet host's namespace, logging
// to InternetDir()/<name>.log; Down stops it.
func (l *Lab) StartOnInternet(name string, argv ...string) (*Process, error) {
	return l.startProcess("internet/"+name, filepath.Join(l.InternetDir(), name+".log"), nil,
		append([]string{"ip", "netns", "exec", l.InternetNetNS()}, argv...)...)
}
