package shm

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkSlotRingCycle: one message through a slot ring in one goroutine, Next/Commit and
// Poll (raw), or Loan/CommitLoan/EndLoan and Poll (loan): the protocol's software cost
// without the bus, to set beside bus's BenchmarkPublishReceiveRing.
func BenchmarkSlotRingCycle(b *testing.B) {
	for _, form := range []string{"raw", "loan"} {
		b.Run(form, func(b *testing.B) {
			w, rr := ringBenchRing(b, "ring-bench")
			dst := make([]byte, rr.Payload())
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if form == "raw" {
					p, err := w.Next(64)
					if err != nil {
						b.Fatal(err)
					}
					p[0] = byte(i)
					if _, err := w.Commit(64, 0); err != nil {
						b.Fatal(err)
					}
				} else {
					l, err := w.Loan(64)
					if err != nil {
						b.Fatal(err)
					}
					l.Prefix(64)[0] = byte(i)
					if _, err := w.CommitLoan(l, 64); err != nil {
						b.Fatal(err)
					}
					w.EndLoan()
				}
				if _, ok, err := rr.Poll(dst); !ok || err != nil || dst[0] != byte(i) {
					b.Fatal(ok, err)
				}
			}
		})
	}
}

// BenchmarkSlotRingCycleCold is BenchmarkSlotRingCycle/loan with the caches walked over before
// each cycle (64 MiB written a line at a time): ns/cold-cycle is one cycle with every line and
// page of the protocol's path to fetch again, beside bus's BenchmarkPublishReceiveRingCold.
func BenchmarkSlotRingCycleCold(b *testing.B) {
	w, rr := ringBenchRing(b, "ring-bench-cold")
	// The cycle is BenchmarkSlotRingCycle/loan's, written out again: a call for it there would
	// add one to every cycle of the warm benchmark.
	dst := make([]byte, rr.Payload())
	walk := make([]byte, 64<<20)
	cold := make([]time.Duration, b.N)
	for i := range b.N {
		for j := 0; j < len(walk); j += 64 {
			walk[j]++
		}
		t0 := time.Now()
		l, err := w.Loan(64)
		if err != nil {
			b.Fatal(err)
		}
		l.Prefix(64)[0] = byte(i)
		if _, err := w.CommitLoan(l, 64); err != nil {
			b.Fatal(err)
		}
		w.EndLoan()
		if _, ok, err := rr.Poll(dst); !ok || err != nil || dst[0] != byte(i) {
			b.Fatal(ok, err)
		}
		cold[i] = time.Since(t0)
	}
	reportColdMedian(b, cold)
}

// ringBenchRing is a region named name with a slot ring of 16 slots of 64 bytes on topic
// ring.bench, and a reader of it from its next message.
func ringBenchRing(b *testing.B, name string) (*SlotRing, *RingReader) {
	_, me, _ := newTestRegion(b, name)
	tp, err := me.LookupTopic("ring.bench", true, 0)
	if err != nil {
		b.Fatal(err)
	}
	w, err := me.CreateSlotRing(tp, RingShape{Slots: 16, Payload: 64, Readers: 4})
	if err != nil {
		b.Fatal(err)
	}
	rr, err := me.OpenSlotRing(tp, false)
	if err != nil {
		b.Fatal(err)
	}
	return w, rr
}

// reportColdMedian reports the median of cold, the cycles' times, as ns/cold-cycle: a mean
// would be the host's interruptions during the timed cycles as much as the cycle (a run's
// mean went from 4.5 to 12 µs with them).
func reportColdMedian(b *testing.B, cold []time.Duration) {
	slices.Sort(cold)
	b.ReportMetric(float64(cold[len(cold)/2].Nanoseconds()), "ns/cold-cycle")
}
