package shm

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"testing"
)

// BenchmarkParkedRoundTrip: one message to a consumer parked on its participant's bell and one
// back to the sender, while other consumers of the same participant stay parked on inboxes of
// their own that nobody writes. Each round trip rings the consumer's bell once; the leader
// that answers it should read the inbox rung, whatever the number parked beside it (reads/op:
// the inboxes the consumers' leader read per round trip).
func BenchmarkParkedRoundTrip(b *testing.B) {
	for _, parked := range []int{1, 100, 1000} {
		b.Run("parked="+strconv.Itoa(parked), func(b *testing.B) {
			c := unitConfig()
			c.Classes = []Class{{Size: 64, Count: 64}}
			c.Inboxes = uint32(parked + 2)
			c.Held = uint32(parked + 2)
			r := newUnitRegion(b, c)
			p := attachUnit(b, r, "consumers")
			q := attachUnit(b, r, "sender")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			idle := make([]Inbox, parked)
			done := make(chan error, parked)
			for i := range idle {
				var err error
				if idle[i], err = p.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropNewest}); err != nil {
					b.Fatal(err)
				}
				go func() { _, err := p.Take(ctx, &idle[i], Waiter{Strategy: Sleep}); done <- err }()
			}
			// One idle consumer sleeps on its inbox's wake word itself; the rest park.
			for {
				p.disp.mu.Lock()
				n, direct := len(p.disp.entries), p.disp.direct != nil
				p.disp.mu.Unlock()
				if n == parked-1 && direct {
					break
				}
				runtime.Gosched()
			}
			in, err := p.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropNewest})
			if err != nil {
				b.Fatal(err)
			}
			ack, err := q.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropNewest})
			if err != nil {
				b.Fatal(err)
			}
			to, _ := r.inbox(in.ID())
			back, _ := r.inbox(ack.ID())
			echoed := make(chan error, 1)
			go func() { // the parked consumer: takes each message and answers it
				for {
					m, err := p.Take(ctx, &in, Waiter{Strategy: Sleep})
					if err != nil {
						echoed <- err
						return
					}
					m.Release()
					if err := pushMessage(ctx, p, &back, 2, 0); err != nil {
						echoed <- err
						return
					}
				}
			}()
			b.ReportAllocs()
			reads := leaderReads(p)
			for n := uint64(0); b.Loop(); n++ {
				if err := pushMessage(ctx, q, &to, 1, n); err != nil {
					b.Fatal(err)
				}
				m, err := q.Take(ctx, &ack, Waiter{Strategy: Sleep})
				if err != nil {
					b.Fatal(err)
				}
				m.Release()
			}
			b.StopTimer()
			b.ReportMetric(float64(leaderReads(p)-reads)/float64(b.N), "reads/op")
			in.close()
			if err := <-echoed; !errors.Is(err, ErrClosed) {
				b.Fatal(err)
			}
			for i := range idle {
				idle[i].close()
			}
			for range idle {
				if err := <-done; !errors.Is(err, ErrClosed) {
					b.Fatal(err)
				}
			}
			ack.close()
		})
	}
}
