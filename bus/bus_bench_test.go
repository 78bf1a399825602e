package bus

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/offq/offq/internal/coldbench"
	"github.com/offq/offq/internal/shm"
)

// benchConfig has room for 1 MiB messages in flight on every subscription.
func benchConfig() shm.Config {
	c := shm.DefaultConfig()
	c.Classes = []shm.Class{{Size: 256, Count: 4096}, {Size: 4 << 10, Count: 1024}, {Size: 1 << 20, Count: 64}}
	c.InboxCapacity = 1024
	return c
}

// BenchmarkPublishReceive: Loan, write the first bytes in place, Send, Receive, read, Release,
// in one goroutine: the software cost of one message, without cross-core traffic. Zero copy
// makes it independent of the payload size.
func BenchmarkPublishReceive(b *testing.B) {
	for _, size := range []int{64, 4 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("size=%s", shm.Size(size)), func(b *testing.B) {
			bs, err := Open("bench", WithDir(b.TempDir()), WithConfig(benchConfig()))
			if err != nil {
				b.Fatal(err)
			}
			defer bs.Close()
			ctx := context.Background()
			sub, _ := bs.Subscribe("bench.x", WithQueueDepth(64))
			pub, _ := bs.Publisher("bench.x")
			publishReceive(b, ctx, pub, sub, size)
		})
	}
}

// BenchmarkPublishCopy is Publish (copying the payload into the loaned buffer) and Receive.
func BenchmarkPublishCopy(b *testing.B) {
	for _, size := range []int{64, 4 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("size=%s", shm.Size(size)), func(b *testing.B) {
			bs, err := Open("bench", WithDir(b.TempDir()), WithConfig(benchConfig()))
			if err != nil {
				b.Fatal(err)
			}
			defer bs.Close()
			ctx := context.Background()
			sub, _ := bs.Subscribe("bench.x", WithQueueDepth(64))
			pub, _ := bs.Publisher("bench.x")
			data := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := pub.Publish(ctx, data); err != nil {
					b.Fatal(err)
				}
				m, _ := sub.Receive(ctx)
				m.Release()
			}
		})
	}
}

// BenchmarkStream: a publisher goroutine and a subscriber goroutine (two cores), 64 B
// messages, Block policy so that none is lost; reports messages per second.
func BenchmarkStream(b *testing.B) {
	for _, w := range []WaitStrategy{BusySpin, SpinThenSleep} {
		b.Run(w.String(), func(b *testing.B) {
			if runtime.GOMAXPROCS(0) < 2 {
				b.Skip("needs two cores")
			}
			bs, err := Open("bench", WithDir(b.TempDir()), WithConfig(benchConfig()))
			if err != nil {
				b.Fatal(err)
			}
			defer bs.Close()
			ctx := context.Background()
			sub, _ := bs.Subscribe("bench.s", WithQueueDepth(1024), WithOverflow(Block), WithWait(w))
			pub, _ := bs.Publisher("bench.s")
			done := make(chan error, 1)
			go func() {
				for range b.N {
					m, err := sub.Receive(ctx)
					if err != nil {
						done <- err
						return
					}
					m.Release()
				}
				done <- nil
			}()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				l, err := pub.Loan(64)
				if err != nil {
					b.Fatal(err)
				}
				if err := pub.Send(ctx, l); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkFanOut: one publish delivered to N subscriptions, then each drained, in one
// goroutine; reports deliveries per second. The publish cost is one buffer however many
// subscribers there are; each delivery costs a reference update and a ring push.
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			bs, err := Open("bench", WithDir(b.TempDir()), WithConfig(benchConfig()))
			if err != nil {
				b.Fatal(err)
			}
			defer bs.Close()
			ctx := context.Background()
			subs := make([]*Subscription, n)
			for i := range subs {
				subs[i], _ = bs.Subscribe("fan.>", WithQueueDepth(64))
			}
			pub, _ := bs.Publisher("fan.x")
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				l, err := pub.Loan(64)
				if err != nil {
					b.Fatal(err)
				}
				if err := pub.Send(ctx, l); err != nil {
					b.Fatal(err)
				}
				for _, s := range subs {
					m, err := s.Receive(ctx)
					if err != nil {
						b.Fatal(err)
					}
					m.Release()
				}
			}
			el := time.Since(start).Seconds()
			b.ReportMetric(float64(b.N*n)/el, "deliveries/s")
			b.ReportMetric(float64(b.N)/el, "publishes/s")
		})
	}
}

// BenchmarkLoanBytes writes a 16-byte header into each of a batch of loans through
// Loan.Bytes, as a batched publisher does once a message (docs/performance.md, "Issue 15,
// sixth round": a copy of the Loan in Bytes took a tenth of such a publisher's time).
func BenchmarkLoanBytes(b *testing.B) {
	bb, err := Open("bytes", WithDir(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close()
	var loans [MaxBatch]Loan
	_, ls := fullBatch(b, bb, "bytes", loans[:])
	defer func() {
		for _, l := range ls {
			l.Discard()
		}
	}()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for j := range ls {
			d := ls[j].Bytes()
			binary.LittleEndian.PutUint64(d[0:], uint64(i))
			binary.LittleEndian.PutUint64(d[8:], uint64(j))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ls)), "ns/loan")
}

// BenchmarkMessageData reads the 16-byte header of each of a batch of received messages
// through Message.Data, in a range loop by value, as a batched subscriber does once a message
// (docs/performance.md, "Issue 15, seventh round": three copies of the message in Data, one
// of them misaligned, took a tenth of such a subscriber's time).
func BenchmarkMessageData(b *testing.B) {
	bb, err := Open("data", WithDir(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close()
	ctx := context.Background()
	sub, err := bb.Subscribe("data", WithQueueDepth(MaxBatch))
	if err != nil {
		b.Fatal(err)
	}
	var loans [MaxBatch]Loan
	pub, ls := fullBatch(b, bb, "data", loans[:])
	if err := pub.SendBatch(ctx, ls); err != nil {
		b.Fatal(err)
	}
	var got [MaxBatch]Message
	ms, err := sub.ReceiveBatch(ctx, got[:])
	if err != nil {
		b.Fatal(err)
	}
	defer ReleaseBatch(ms)
	var sum uint64
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range ms {
			d := m.Data()
			sum += binary.LittleEndian.Uint64(d[0:]) + binary.LittleEndian.Uint64(d[8:])
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ms)), "ns/msg")
	if sum == 1 {
		b.Log(sum) // keep the reads
	}
}

// fullBatch makes a Publisher of topic on bb and loans len(loans) buffers of 64 bytes from it.
func fullBatch(b *testing.B, bb *Bus, topic string, loans []Loan) (*Publisher, []Loan) {
	b.Helper()
	pub, err := bb.Publisher(topic)
	if err != nil {
		b.Fatal(err)
	}
	ls, err := pub.LoanBatch(loans, 64)
	if err != nil || len(ls) != len(loans) {
		b.Fatalf("LoanBatch: %d of %d, %v", len(ls), len(loans), err)
	}
	return pub, ls
}

// BenchmarkPublishReceiveRing is BenchmarkPublishReceive through a publisher's slot ring
// (WithSlotRing): Loan, Send, Receive, Release of a 64-byte message in one process.
func BenchmarkPublishReceiveRing(b *testing.B) {
	pub, sub := ringBenchBus(b)
	publishReceive(b, context.Background(), pub, sub, 64)
}

// ringBenchBus is a bus, closed when the benchmark ends, with a publisher of bench.x that has
// a slot ring of 64 slots of 64 bytes and a subscription that reads it.
func ringBenchBus(b *testing.B) (*Publisher, *Subscription) {
	bs, err := Open("bench", WithDir(b.TempDir()), WithConfig(benchConfig()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bs.Close() })
	sub, err := bs.Subscribe("bench.x", WithQueueDepth(16))
	if err != nil {
		b.Fatal(err)
	}
	pub, err := bs.Publisher("bench.x", WithSlotRing(64, 64))
	if err != nil {
		b.Fatal(err)
	}
	return pub, sub
}

// BenchmarkPublishReceiveRingCold is BenchmarkPublishReceiveRing with the caches walked over
// before each cycle, as they are after the host interrupts a vCPU for long: ns/cold-cycle,
// ns/code-warm-cycle (after a cycle on another bus of the same shape) and ns/warm-cycle (after
// a cycle on this bus), as internal/coldbench.Run says (ns/op counts the walk). Set beside
// internal/shm's BenchmarkSlotRingCycleCold, the protocol alone, it measures what the bus's
// wider set of lines costs the round trip after an interruption (docs/performance.md,
// fifteenth and sixteenth rounds).
func BenchmarkPublishReceiveRingCold(b *testing.B) {
	pub, sub := ringBenchBus(b)
	otherPub, otherSub := ringBenchBus(b)
	ctx := context.Background()
	// The cycle is publishReceive's, written out again: calling one function from both would
	// cost the warm benchmark, the reference figure, a call a cycle (120.7 → 134.1 ns, seven
	// alternating runs each, 2026-12-08).
	cycle := func(pub *Publisher, sub *Subscription, i int) {
		l, err := pub.Loan(64)
		if err != nil {
			b.Fatal(err)
		}
		l.Bytes()[0] = byte(i)
		if err := pub.Send(ctx, l); err != nil {
			b.Fatal(err)
		}
		m, err := sub.Receive(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if m.Data()[0] != byte(i) {
			b.Fatal("wrong message")
		}
		m.Release()
	}
	coldbench.Run(b, func(i int) { cycle(pub, sub, i) }, func(i int) { cycle(otherPub, otherSub, i) })
}

// publishReceive times b.N rounds of Loan, a byte written, Send, Receive, the byte checked,
// Release.
func publishReceive(b *testing.B, ctx context.Context, pub *Publisher, sub *Subscription, size int) {
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		l, err := pub.Loan(size)
		if err != nil {
			b.Fatal(err)
		}
		l.Bytes()[0] = byte(i)
		if err := pub.Send(ctx, l); err != nil {
			b.Fatal(err)
		}
		m, err := sub.Receive(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if m.Data()[0] != byte(i) {
			b.Fatal("wrong message")
		}
		m.Release()
	}
}
