package shm

import (
	"context"
	"fmt"
	"testing"
)

// benchConfig has one class per benchmarked size, so each size takes its own class.
func benchConfig() Config {
	c := unitConfig()
	c.Classes = []Class{{Size: 64, Count: 64}, {Size: 4 << 10, Count: 64}, {Size: 1 << 20, Count: 4}}
	c.InboxCapacity = 1024
	return c
}

// BenchmarkAllocFree: loan a buffer and end the loan, the cost a publisher pays per message
// on top of the ring. The payload is not touched: zero copy means the size does not matter.
func BenchmarkAllocFree(b *testing.B) {
	for _, size := range []Size{64, 4 << 10, 1 << 20} {
		b.Run(size.String(), func(b *testing.B) {
			r := newUnitRegion(b, benchConfig())
			p := attachUnit(b, r, "bench")
			b.ReportAllocs()
			for b.Loop() {
				buf, err := p.alloc(int(size))
				if err != nil {
					b.Fatal(err)
				}
				if err := p.unloan(buf.Handle()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPublishRelease: the whole life of a 64-byte message in one goroutine: Alloc,
// AddRefs, Push, Unloan, TryPop, Buffer, Release.
func BenchmarkPublishRelease(b *testing.B) {
	r := newUnitRegion(b, benchConfig())
	p := attachUnit(b, r, "bench")
	in, err := p.OpenInbox(InboxConfig{Capacity: 64})
	if err != nil {
		b.Fatal(err)
	}
	defer in.close()
	bg := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		buf, err := p.alloc(64)
		if err != nil {
			b.Fatal(err)
		}
		h := buf.Handle()
		buf.SetMeta(Meta{Len: 64})
		r.addRefsHandle(h, 1)
		if err := in.pushHandle(bg, h); err != nil {
			b.Fatal(err)
		}
		p.unloan(h)
		got, ok, err := in.tryPop()
		if !ok || err != nil {
			b.Fatal(ok, err)
		}
		if _, err := r.buffer(got); err != nil {
			b.Fatal(err)
		}
		r.release(got)
	}
}

// BenchmarkPushPop: one Push and one TryPop of a handle in one goroutine: the ring alone.
func BenchmarkPushPop(b *testing.B) {
	r := newUnitRegion(b, benchConfig())
	p := attachUnit(b, r, "bench")
	in, err := p.OpenInbox(InboxConfig{Capacity: 1024})
	if err != nil {
		b.Fatal(err)
	}
	defer in.close()
	buf, err := p.alloc(64)
	if err != nil {
		b.Fatal(err)
	}
	defer p.unloan(buf.Handle())
	h := buf.Handle() // the ring does not look at references: push the same handle over and over
	bg := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := in.pushHandle(bg, h); err != nil {
			b.Fatal(err)
		}
		if _, ok, err := in.tryPop(); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkPushPopParallel: a producer goroutine pushes b.N handles into a Block inbox, a
// consumer goroutine pops them: throughput of the ring between two cores, for each way the
// consumer can wait.
func BenchmarkPushPopParallel(b *testing.B) {
	for _, w := range []Waiter{{Strategy: BusySpin}, {Strategy: SpinThenSleep}, {Strategy: Sleep}} {
		b.Run(w.Strategy.String(), func(b *testing.B) {
			r := newUnitRegion(b, benchConfig())
			p := attachUnit(b, r, "bench")
			in, err := p.OpenInbox(InboxConfig{Capacity: 1024, Overflow: Block})
			if err != nil {
				b.Fatal(err)
			}
			defer in.close()
			out, _ := r.inbox(in.ID())
			buf, err := p.alloc(64)
			if err != nil {
				b.Fatal(err)
			}
			defer p.unloan(buf.Handle())
			h := buf.Handle()
			bg := context.Background()
			n := b.N
			done := make(chan error, 1)
			b.ReportAllocs()
			b.ResetTimer()
			go func() {
				for range n {
					if err := out.pushHandle(bg, h); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			for range n {
				if _, err := in.pop(bg, w); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
		})
	}
}

// BenchmarkLoanExhausted: a Loan that fails because the pool is exhausted, as a publisher
// retrying for a buffer pays it, for pools of 1 Ki, 64 Ki and 1 Mi buffers. It reads the slots
// near its cursor and the counters, not the pool. Once a second it reads the whole pool, in
// case the counters are wrong (see pool.exhausted): the benchmark measures the claims in
// between. The error it returns is its one allocation.
func BenchmarkLoanExhausted(b *testing.B) {
	for _, n := range []uint32{1 << 10, 1 << 16, 1 << 20} {
		b.Run(fmt.Sprint("buffers=", n), func(b *testing.B) {
			c := benchConfig()
			c.Classes = []Class{{Size: 64, Count: n}}
			r := newUnitRegion(b, c)
			p := attachUnit(b, r, "bench")
			for range n {
				if _, err := p.Loan(64); err != nil {
					b.Fatal(err)
				}
			}
			r.pools[0].scanned.Store(Now()) // the steady state: no rescan due within the run
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Loan(64); err == nil {
					b.Fatal("loaned from a full pool")
				}
			}
		})
	}
}
