package shm

import (
	"testing"
)

// BenchmarkSlotRingCycle: one message through a slot ring in one goroutine, Next/Commit and
// Poll (raw), or Loan/CommitLoan/EndLoan and Poll (loan): the protocol's software cost
// without the bus, to set beside bus's BenchmarkPublishReceiveRing.
func BenchmarkSlotRingCycle(b *testing.B) {
	for _, form := range []string{"raw", "loan"} {
		b.Run(form, func(b *testing.B) {
			_, me, _ := newTestRegion(b, "ring-bench")
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
