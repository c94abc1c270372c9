package conformance

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// sctpTag marks the suite's tests that serve and probe SCTP inside pods.
const sctpTag = "[Feature:SCTPConnectivity]"

// KernelSCTP says why this machine's kernel cannot open an SCTP socket, or
// "" when it can. Pods share the machine's kernel: without CONFIG_IP_SCTP
// (or its module) the suite's SCTP servers cannot listen and its SCTP probes
// fail with "protocol not supported", which the suite reports only as
// "HTTP servers are not ready".
func KernelSCTP() string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err != nil {
		return fmt.Sprintf("socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP): %v", err)
	}
	unix.Close(fd)
	return ""
}

// NoteKernelSCTP adds why to the reason of every failed SCTP test, so that
// the summary names the cause (a kernel without SCTP) instead of the symptom.
func (s Summary) NoteKernelSCTP(why string) {
	if why == "" {
		return
	}
	for i, r := range s.Results {
		if r.Outcome == Failed && strings.Contains(r.Name, sctpTag) {
			s.Results[i].Reason = fmt.Sprintf("%s (this kernel has no SCTP: %s)", r.Reason, why)
		}
	}
}
