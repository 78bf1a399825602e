// Package coldbench times one cycle of a message path with the caches walked over first, as
// they are after the host interrupts a vCPU for long, for the benchmarks of bus and
// internal/shm (docs/performance.md, issue 15's fifteenth and sixteenth rounds).
package coldbench

import (
	"slices"
	"testing"
	"time"
)

// Run times b.N cycles, each after a walk over 64 MiB, a line at a time: twice the 32 MiB
// last-level cache of the AMD EPYC (Zen 5) core complex the fifteenth and sixteenth rounds ran
// on (the VM itself reports no cache beyond its 1 MiB L2). On a machine whose last-level
// cache is larger, the walk leaves part of the path cached, and the cycles are less cold than
// their names say. In turn, a timed cycle of this runs:
//
//   - with nothing run first, reported as ns/cold-cycle;
//   - after a cycle of other, a path of the same shape on other objects, which brings back the
//     code, the package variables and the runtime's lines but none of this path's objects:
//     ns/code-warm-cycle, so that cold minus code warm is the code's part, code warm minus warm
//     the data's;
//   - after a cycle of this: ns/warm-cycle, what is left being the lines every cycle meets
//     fresh.
//
// Each is the median of its cycles: a mean would count the host's interruptions during the
// timed cycles. The three are interleaved, so that a change of the host's state meets all of
// them. A cycle's argument numbers it (a byte to write and check).
func Run(b *testing.B, this, other func(i int)) {
	walk := make([]byte, 64<<20)
	var times [3][]time.Duration
	for i := range b.N {
		for j := 0; j < len(walk); j += 64 {
			walk[j]++
		}
		v := i % len(times)
		switch v {
		case 1:
			other(i)
		case 2:
			this(i + 1)
		}
		t0 := time.Now()
		this(i)
		times[v] = append(times[v], time.Since(t0))
	}
	for v, unit := range []string{"ns/cold-cycle", "ns/code-warm-cycle", "ns/warm-cycle"} {
		if d := times[v]; len(d) > 0 {
			slices.Sort(d)
			b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), unit)
		}
	}
}
