// Command pause is the lab's sandbox ("pause") image: the first process of
// every pod, holding the pod's namespaces until the runtime stops it.
//
// The lab cannot pull registry.k8s.io/pause, so this static program is packed
// into a local image (see test/e2e/kubenode) and pinned as containerd's
// sandbox image. It waits for SIGTERM or SIGINT and exits 0; as PID 1 of the
// pod's PID namespace it also reaps orphaned children, as the real pause does.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		reap()
	}
}

// reap collects every exited child so none stays a zombie.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
