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
// each cycle (64 MiB written a line at a time), as bus's BenchmarkPublishReceiveRingCold is,
// with the same three metrics, each the median of its cycles: ns/cold-cycle (nothing run
// first), ns/code-warm-cycle (after a cycle on another ring, in another region) and
// ns/warm-cycle (after a cycle on this ring). Set beside the bus's, it measures what the bus's
// wider set of lines costs a cycle after the host interrupts a vCPU.
func BenchmarkSlotRingCycleCold(b *testing.B) {
	w, rr := ringBenchRing(b, "ring-bench-cold")
	ow, orr := ringBenchRing(b, "ring-bench-cold-other")
	dst := make([]byte, rr.Payload())
	cycle := func(w *SlotRing, rr *RingReader, i int) {
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
	}
	walk := make([]byte, 64<<20)
	var times [3][]time.Duration
	for i := range b.N {
		for j := 0; j < len(walk); j += 64 {
			walk[j]++
		}
		v := i % len(times)
		switch v {
		case 1:
			cycle(ow, orr, i)
		case 2:
			cycle(w, rr, i+1)
		}
		t0 := time.Now()
		cycle(w, rr, i)
		times[v] = append(times[v], time.Since(t0))
	}
	for v, unit := range []string{"ns/cold-cycle", "ns/code-warm-cycle", "ns/warm-cycle"} {
		if d := times[v]; len(d) > 0 {
			slices.Sort(d)
			b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), unit)
		}
	}
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
