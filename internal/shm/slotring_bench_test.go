package shm

import (
	"testing"

	"github.com/offq/offq/internal/coldbench"
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
					if _, ok, err := rr.Poll(dst); !ok || err != nil || dst[0] != byte(i) {
						b.Fatal(ok, err)
					}
				} else {
					loanCycle(b, w, rr, dst, i)
				}
			}
		})
	}
}

// BenchmarkSlotRingCycleCold is BenchmarkSlotRingCycle/loan with the caches walked over before
// each cycle, as bus's BenchmarkPublishReceiveRingCold is, with the same three metrics
// (internal/coldbench.Run; the other path is a ring in another region). Set beside the bus's,
// it measures what the bus's wider set of lines costs a cycle after the host interrupts a vCPU.
func BenchmarkSlotRingCycleCold(b *testing.B) {
	w, rr := ringBenchRing(b, "ring-bench-cold")
	ow, orr := ringBenchRing(b, "ring-bench-cold-other")
	// Each path polls into a buffer of its own: the other path warms none of this one's data.
	dst, odst := make([]byte, rr.Payload()), make([]byte, orr.Payload())
	coldbench.Run(b, func(i int) { loanCycle(b, w, rr, dst, i) }, func(i int) { loanCycle(b, ow, orr, odst, i) })
}

// loanCycle is one message, i, through w and rr: Loan, a byte written, CommitLoan, EndLoan,
// Poll into dst, the byte checked. BenchmarkSlotRingCycle/loan calls it in its loop: unlike
// the bus's cycle (BenchmarkPublishReceiveRing), the call costs that benchmark nothing
// measurable (73.7 ns inline, 72.2 called, seven alternating runs each, 2026-12-08).
func loanCycle(b *testing.B, w *SlotRing, rr *RingReader, dst []byte, i int) {
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
