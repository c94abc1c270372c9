package main

import (
	"fmt"
	"testing"
)

// BenchmarkReconcile is the scale section's full reconcile (informer cache
// -> mesh.Desired -> peer and route diffs, steady state) as a Go benchmark:
// go test -run '^$' -bench Reconcile ./test/bench/
func BenchmarkReconcile(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			loop, err := reconcileLoop(b.Context(), n)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := loop(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The steady state of a reconcile writes nothing: the loop that the
// benchmark and the table time must say so, or it would time the wrong
// work.
func TestReconcileLoopSteadyState(t *testing.T) {
	loop, err := reconcileLoop(t.Context(), 50)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := loop(); err != nil {
			t.Fatal(err)
		}
	}
}
