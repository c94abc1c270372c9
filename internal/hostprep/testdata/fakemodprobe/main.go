// Command fakemodprobe plays a host's modprobe for
// TestChrootRunnerRunsInsideTheHostRoot: built static, copied into a fake
// root and run chrooted there by ChrootRunner, it appends the module to
// /proc/modules, which, inside the chroot, is the fake root's file. It
// never touches the real host: outside a chroot it refuses to run.
package main

import (
	"fmt"
	"os"
)

func main() {
	if _, err := os.Stat("/fake-host-root"); err != nil {
		fmt.Fprintln(os.Stderr, "fake modprobe: not in a fake host root; refusing")
		os.Exit(3)
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "fake modprobe: want one module")
		os.Exit(1)
	}
	f, err := os.OpenFile("/proc/modules", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	fmt.Fprintf(f, "%s 24576 0 - Live 0x0 MODULE_DIR=%s\n", os.Args[1], os.Getenv("MODULE_DIR"))
}
