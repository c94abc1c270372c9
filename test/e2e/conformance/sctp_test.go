package conformance

import "testing"

func TestNoteKernelSCTPNamesTheCauseOfFailedSCTPTests(t *testing.T) {
	sctpTest := "[sig-network] Netpol [Feature:SCTPConnectivity] [LinuxOnly] NetworkPolicy between server and client using SCTP should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]"
	tcpTest := "[sig-network] Netpol NetworkPolicy between server and client should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]"
	notReady := "[FAILED] unable to initialize resources: after 10 tries, 1 HTTP servers are not ready"
	for _, tc := range []struct {
		name, why string
		in        Result
		want      string
	}{
		{"failed SCTP test, no kernel SCTP", "protocol not supported", Result{Name: sctpTest, Outcome: Failed, Reason: notReady},
			notReady + " (this kernel has no SCTP: protocol not supported)"},
		{"failed SCTP test, kernel has SCTP", "", Result{Name: sctpTest, Outcome: Failed, Reason: notReady}, notReady},
		{"passed SCTP test", "protocol not supported", Result{Name: sctpTest, Outcome: Passed}, ""},
		{"failed TCP test", "protocol not supported", Result{Name: tcpTest, Outcome: Failed, Reason: notReady}, notReady},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Summary{Results: []Result{tc.in}}
			s.NoteKernelSCTP(tc.why)
			if got := s.Results[0].Reason; got != tc.want {
				t.Errorf("reason %q, want %q", got, tc.want)
			}
		})
	}
}
