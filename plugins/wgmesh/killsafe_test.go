package main

// Kill safety: an ADD SIGKILLed at any step leaves nothing that DEL, a
// retried ADD or GC cannot undo.

import (
	"context"
	"errors"
	"os/exec"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/wgmesh/wgmesh/internal/faultpoint"
)

// killAtExec runs plugins like groupKillExec (each in its own process
// group) with the fault point armed: the plugin, or its IPAM, SIGKILLs its
// whole group on reaching point.
type killAtExec struct {
	groupKillExec
	point string
}

var _ invoke.Exec = (*killAtExec)(nil)

func (e *killAtExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	return e.groupKillExec.ExecPlugin(ctx, path, stdin, append(environ, faultpoint.EnvVar+"="+e.point))
}

// killedBySIGKILL reports whether err is a plugin process's death by SIGKILL.
func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// addKilledAt runs an ADD of p that dies at point, and fails the test unless
// it really died there.
func (l *lab) addKilledAt(p *pod, point string) {
	l.t.Helper()
	killer := libcni.NewCNIConfigWithCacheDir(l.cni.Path, l.dir+"/cache", &killAtExec{point: point})
	err := l.inNode(func() error {
		_, err := killer.AddNetworkList(context.Background(), l.list, p.rt)
		return err
	})
	if !killedBySIGKILL(err) {
		l.t.Fatalf("ADD armed to die at %s: want death by SIGKILL, got %v", point, err)
	}
}

// TestAddKilledAtEveryStepIsUndone kills an ADD at each fault point (see
// package faultpoint: between every two changes an ADD makes, in the
// plugin and in the IPAM), then undoes it the three ways a runtime can:
// DEL, a retried ADD (then DEL), or GC without the attachment. Each must
// succeed and leave no veth, no pod interface and no address.
func TestAddKilledAtEveryStepIsUndone(t *testing.T) {
	for _, point := range faultpoint.All {
		for _, undo := range []string{"del", "retry", "gc"} {
			t.Run(point+"/"+undo, func(t *testing.T) {
				l := newLab(t, true)
				p := l.newPod()
				l.addKilledAt(p, point)
				switch undo {
				case "del":
					if err := l.del(p); err != nil {
						t.Fatalf("DEL after an ADD killed at %s: %v", point, err)
					}
				case "retry":
					r, err := l.add(context.Background(), p)
					if err != nil {
						t.Fatalf("ADD retried after an ADD killed at %s: %v", point, err)
					}
					if err := ping(p.netns, l.subnet.Addr().Next()); err != nil {
						t.Errorf("pod of the retried ADD (%s): %v", podIP(t, r), err)
					}
					if err := l.del(p); err != nil {
						t.Fatalf("DEL: %v", err)
					}
				case "gc":
					if err := l.gc(nil); err != nil {
						t.Fatalf("GC after an ADD killed at %s: %v", point, err)
					}
				}
				assertNothingLeft(t, l, p)
			})
		}
	}
}

// An ADD repeated for the same attachment without a DEL (a runtime that
// timed out waiting and tried again) succeeds, with the same address, and
// one DEL then removes everything. 112 is only for another attachment's
// interface (TestAddWhenPodAlreadyHasTheInterface).
func TestAddRepeatedForTheSameAttachmentSucceeds(t *testing.T) {
	l := newLab(t, true)
	p := l.newPod()
	first := podIP(t, l.mustAdd(p))
	second := podIP(t, l.mustAdd(p))
	if first != second {
		t.Errorf("repeated ADD got %s, the first %s", second, first)
	}
	if err := ping(p.netns, l.subnet.Addr().Next()); err != nil {
		t.Errorf("after the repeated ADD: %v", err)
	}
	if err := l.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	assertNothingLeft(t, l, p)
}
