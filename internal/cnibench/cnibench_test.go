package cnibench

import (
	"testing"
	"time"
)

func TestPercentileOfSamples(t *testing.T) {
	var d Durations
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(101-i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    int
		want float64
	}{{50, 50}, {99, 99}, {100, 100}, {1, 1}} {
		if got := d.Pct(tc.p); got != tc.want {
			t.Errorf("p%d = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := (Durations{}).Pct(50); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
}

func TestRuntimeConfIsANewPodEachTime(t *testing.T) {
	a, b := RuntimeConf("/run/netns/x"), RuntimeConf("/run/netns/x")
	if a.ContainerID == b.ContainerID || len(a.ContainerID) != 32 {
		t.Errorf("container IDs %q and %q: want two different 32-digit IDs", a.ContainerID, b.ContainerID)
	}
	if a.NetNS != "/run/netns/x" || a.IfName != "eth0" || PodName(a) != "pod-"+a.ContainerID[:8] {
		t.Errorf("runtime conf %+v", a)
	}
}
