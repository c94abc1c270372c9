package agent

import (
	"go/build"
	"strings"
	"testing"
)

// kernelImports are the packages that talk to the kernel (a trailing
// /... takes in the packages below). The agent
// reaches the kernel only through the Dataplane it is given (and
// dataplane.UnderlayMTU), so that it stays a loop over plain values that
// tests drive without root; wgtypes (plain key and config types) is allowed.
var kernelImports = []string{
	"github.com/vishvananda/netlink/...",
	"golang.zx2c4.com/wireguard/wgctrl/...",
	"github.com/coreos/go-iptables/...",
	"github.com/containernetworking/plugins/pkg/ns",
	"golang.org/x/sys/unix",
	"syscall",
	"net", // net.Interfaces and friends; net/netip is plain values
}

func TestAgentHoldsNoKernelCode(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if imp == "golang.zx2c4.com/wireguard/wgctrl/wgtypes" {
			continue
		}
		for _, k := range kernelImports {
			if tree, ok := strings.CutSuffix(k, "/..."); imp == k || ok && (imp == tree || strings.HasPrefix(imp, tree+"/")) {
				t.Errorf("internal/agent imports %s: kernel reads belong in dataplane or wireguard, printing in cmd/wgmesh-agent", imp)
			}
		}
	}
}
