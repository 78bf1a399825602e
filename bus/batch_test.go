package bus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/internal/shm"
)

// sendBatch loans k 8-byte buffers, writes first+i into each and sends them as one batch.
func sendBatch(t testing.TB, pub *Publisher, loans []Loan, k int, first uint64) {
	ls, err := pub.LoanBatch(loans[:k], 8)
	if err != nil || len(ls) != k {
		t.Fatalf("LoanBatch: %d loans, %v", len(ls), err)
	}
	for i := range ls {
		binary.LittleEndian.PutUint64(ls[i].Bytes(), first+uint64(i))
	}
	if err := pub.SendBatch(context.Background(), ls); err != nil {
		t.Fatalf("SendBatch: %v", err)
	}
}

// Batches reach every matching subscription in order, each message with its own sequence
// number, and are released one by one or as a batch.
func TestBatchSendReceive(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	subs := make([]*Subscription, 3)
	subs[0], _ = b.Subscribe("batch.a")
	subs[1], _ = b.Subscribe("batch.*")
	subs[2], _ = b.Subscribe("batch.>", WithQueueDepth(256))
	pub, _ := b.Publisher("batch.a")
	var loans [MaxBatch]Loan
	var got [MaxBatch]Message
	next := uint64(1)
	for _, k := range []int{1, 7, MaxBatch, 2} {
		sendBatch(t, pub, loans[:], k, next)
		for si, s := range subs {
			seen := 0
			for seen < k {
				ms, err := s.ReceiveBatch(ctx, got[:])
				if err != nil {
					t.Fatal(err)
				}
				for j, m := range ms {
					want := next + uint64(seen+j)
					if v := binary.LittleEndian.Uint64(m.Data()); v != want || m.Seq() != want || m.Topic() != "batch.a" {
						t.Fatalf("subscription %d: message holds %d seq %d topic %q, want %d", si, v, m.Seq(), m.Topic(), want)
					}
				}
				seen += len(ms)
				if si == 0 {
					for _, m := range ms {
						if err := m.Release(); err != nil {
							t.Fatal(err)
						}
					}
				} else if err := ReleaseBatch(ms); err != nil {
					t.Fatal(err)
				}
			}
			if seen != k {
				t.Fatalf("subscription %d received %d of %d", si, seen, k)
			}
		}
		next += uint64(k)
	}
	if pub.Published() != next-1 {
		t.Fatalf("published %d, want %d", pub.Published(), next-1)
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use, want 0", n)
	}
}

// Mixing batched and single forms keeps the order; a batch larger than a queue is handled
// by its policy message by message.
func TestBatchMixedAndOverflow(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	newest, _ := b.Subscribe("mix.x", WithQueueDepth(4), WithOverflow(DropNewest))
	oldest, _ := b.Subscribe("mix.x", WithQueueDepth(4), WithOverflow(DropOldest))
	pub, _ := b.Publisher("mix.x")
	var loans [MaxBatch]Loan
	sendBatch(t, pub, loans[:], 10, 1)
	var got [MaxBatch]Message
	for _, c := range []struct {
		s     *Subscription
		first uint64
	}{{newest, 1}, {oldest, 7}} {
		ms, err := c.s.ReceiveBatch(ctx, got[:])
		if err != nil || len(ms) != 4 {
			t.Fatalf("received %d, %v; want 4", len(ms), err)
		}
		for j, m := range ms {
			if v := binary.LittleEndian.Uint64(m.Data()); v != c.first+uint64(j) {
				t.Fatalf("message %d holds %d, want %d", j, v, c.first+uint64(j))
			}
		}
		ReleaseBatch(ms)
		st, _ := c.s.Stats()
		if st.DropOldest+st.DropNewest != 6 {
			t.Fatalf("dropped %d, want 6", st.DropOldest+st.DropNewest)
		}
	}
	// Single sends between batches, received by a batch.
	pub.Publish(ctx, []byte("single"))
	sendBatch(t, pub, loans[:], 2, 100)
	ms, err := oldest.ReceiveBatch(ctx, got[:])
	if err != nil || len(ms) != 3 || string(ms[0].Data()) != "single" {
		t.Fatalf("received %d, %v", len(ms), err)
	}
	ReleaseBatch(ms)
	for {
		ms, err := newest.ReceiveBatch(ctx, got[:])
		if err != nil {
			t.Fatal(err)
		}
		ReleaseBatch(ms)
		if newest.Len() == 0 {
			break
		}
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use, want 0", n)
	}
}

// A batch with a loan already ended, or another publisher's, delivers nothing and ends the
// rest; releasing a batch twice says so.
func TestBatchErrors(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	s, _ := b.Subscribe("err.x")
	pub, _ := b.Publisher("err.x")
	other, _ := b.Publisher("err.y")
	var loans [4]Loan
	ls, _ := pub.LoanBatch(loans[:], 8)
	ls[1].Discard()
	if err := pub.SendBatch(ctx, ls); !errors.Is(err, ErrLoanEnded) {
		t.Fatalf("ended loan: %v", err)
	}
	ls, _ = pub.LoanBatch(loans[:3], 8)
	ol, _ := other.Loan(8)
	ls = append(ls, ol)
	if err := pub.SendBatch(ctx, ls); !errors.Is(err, ErrLoanEnded) {
		t.Fatalf("foreign loan: %v", err)
	}
	ls[3].Discard()
	if s.Len() != 0 {
		t.Fatalf("%d messages delivered, want 0", s.Len())
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use, want 0", n)
	}
	if _, err := pub.LoanBatch(loans[:], 1<<30); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	sendBatch(t, pub, loans[:], 3, 1)
	var got [4]Message
	ms, _ := s.ReceiveBatch(ctx, got[:])
	if err := ReleaseBatch(ms); err != nil {
		t.Fatal(err)
	}
	if err := ReleaseBatch(ms); !errors.Is(err, ErrReleased) {
		t.Fatalf("second ReleaseBatch: %v", err)
	}
	s.Close()
	if _, err := s.ReceiveBatch(ctx, got[:]); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
}

// Several goroutines receiving batches from one subscription while a publisher sends batches:
// every message is received exactly once, and each goroutine sees one publisher's messages in
// order.
func TestBatchConcurrentReceivers(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	s, _ := b.Subscribe("conc.x", WithQueueDepth(64), WithOverflow(Block))
	pub, _ := b.Publisher("conc.x")
	const total = 4000
	seen := make([][]uint64, 3)
	done := make(chan error, len(seen))
	var received atomic.Int64
	all := make(chan struct{}) // closed by the receiver that counts the last message
	for g := range seen {
		go func() {
			var buf [16]Message
			for {
				ms, err := s.ReceiveBatch(ctx, buf[:])
				if err != nil {
					if errors.Is(err, ErrClosed) {
						err = nil // closed once everything was received
					}
					done <- err
					return
				}
				for _, m := range ms {
					seen[g] = append(seen[g], binary.LittleEndian.Uint64(m.Data()))
				}
				if err := ReleaseBatch(ms); err != nil {
					done <- err
					return
				}
				if received.Add(int64(len(ms))) == total {
					close(all)
				}
			}
		}()
	}
	var loans [MaxBatch]Loan
	for sent := 0; sent < total; {
		k := min(1+sent%MaxBatch, total-sent)
		sendBatch(t, pub, loans[:], k, uint64(sent+1))
		sent += k
	}
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatalf("received %d of %d", received.Load(), total)
	}
	s.Close() // the receivers still waiting get ErrClosed
	for range seen {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	got := map[uint64]bool{}
	for g, vs := range seen {
		for i, v := range vs {
			if got[v] {
				t.Fatalf("message %d received twice", v)
			}
			got[v] = true
			if i > 0 && v <= vs[i-1] {
				t.Fatalf("receiver %d: %d after %d", g, v, vs[i-1])
			}
		}
	}
	if len(got) != total {
		t.Fatalf("received %d distinct messages, want %d", len(got), total)
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use, want 0", n)
	}
}

// The batched forms allocate nothing.
func TestBatchZeroAllocs(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := context.Background()
	s1, _ := b.Subscribe("za.a")
	s2, _ := b.Subscribe("za.*")
	pub, _ := b.Publisher("za.a")
	var loans [16]Loan
	var got [16]Message
	round := func() {
		ls, err := pub.LoanBatch(loans[:], 64)
		if err != nil {
			t.Fatal(err)
		}
		for i := range ls {
			ls[i].Bytes()[0] = byte(i)
		}
		if err := pub.SendBatch(ctx, ls); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*Subscription{s1, s2} {
			for n := 0; n < len(ls); {
				ms, err := s.ReceiveBatch(ctx, got[:])
				if err != nil {
					t.Fatal(err)
				}
				n += len(ms)
				if err := ReleaseBatch(ms); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	round()
	if n := testing.AllocsPerRun(500, round); n != 0 {
		t.Fatalf("LoanBatch+SendBatch+ReceiveBatch+ReleaseBatch: %v allocations per run, want 0", n)
	}
}

// roleBatchVictim receives a batch on crash.held and keeps it, loans a batch of 8 and sends
// it on crash.batch, stopping (to be killed) just before the delivery to the second
// subscription: one subscription has the whole batch, the other none of it.
func roleBatchVictim(c *peer.Child) error {
	b, err := Open("crash", WithDir(os.Getenv("OFFQ_DIR")), WithName("batch-victim"), WithReapInterval(0))
	if err != nil {
		return err
	}
	s, err := b.Subscribe("crash.held")
	if err != nil {
		return err
	}
	c.Send("subscribed")
	var got [MaxBatch]Message
	held := 0
	for held < 5 {
		ms, err := s.ReceiveBatch(c.Context(), got[:])
		if err != nil {
			return err
		}
		held += len(ms) // kept, never released
	}
	pub, err := b.Publisher("crash.batch")
	if err != nil {
		return err
	}
	shm.SetTestHookFanOut(func(i int) {
		if i == 1 {
			c.Send("mid")
			<-c.Context().Done() // killed before this
		}
	})
	var loans [8]Loan
	ls, err := pub.LoanBatch(loans[:], 8)
	if err != nil {
		return err
	}
	for i := range ls {
		binary.LittleEndian.PutUint64(ls[i].Bytes(), uint64(i))
	}
	return pub.SendBatch(c.Context(), ls)
}

// TestBatchKilledMidBatch: a process is killed (SIGKILL) while it holds a received batch and
// half-way through the fan-out of a sent batch. After one reap the pools hold exactly what the
// live subscription was delivered: the held batch is released, the loans end, the
// subscription that was not reached has nothing, and nothing leaks once the delivered batch is
// released.
func TestBatchKilledMidBatch(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("crash", WithDir(dir), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var subs [2]*Subscription
	for i := range subs {
		if subs[i], err = b.Subscribe("crash.batch"); err != nil {
			t.Fatal(err)
		}
	}
	victim := peer.Start(t, "batch-victim", "OFFQ_DIR="+dir)
	if _, err := victim.Expect("subscribed", time.Minute); err != nil {
		t.Fatal(err)
	}
	hp, _ := b.Publisher("crash.held")
	var loans [5]Loan
	ls, _ := hp.LoanBatch(loans[:], 8)
	if err := hp.SendBatch(ctx, ls); err != nil {
		t.Fatal(err)
	}
	if _, err := victim.Expect("mid", time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := inUse(b); n != 5+8 {
		t.Fatalf("%d buffers in use before the kill, want 13 (5 held, 8 sent)", n)
	}
	victim.Kill()
	victim.Wait(time.Minute)
	rep, err := b.r.Reap()
	if err != nil || rep.Participants != 1 || rep.Loans != 8 {
		t.Fatalf("reap: %+v %v, want the victim and its 8 loans", rep, err)
	}
	if n := inUse(b); n != 8 {
		t.Fatalf("%d buffers in use after the reap, want the 8 queued for the first subscription", n)
	}
	if subs[1].Len() != 0 {
		t.Fatal("the subscription the batch never reached has messages")
	}
	var got [MaxBatch]Message
	for n := 0; n < 8; {
		ms, err := subs[0].ReceiveBatch(ctx, got[:])
		if err != nil {
			t.Fatal(err)
		}
		for j, m := range ms {
			if v := binary.LittleEndian.Uint64(m.Data()); v != uint64(n+j) {
				t.Fatalf("message %d holds %d", n+j, v)
			}
		}
		n += len(ms)
		ReleaseBatch(ms)
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use at the end, want 0", n)
	}
}

// BenchmarkBatchPublishReceive: LoanBatch, write the first byte of each, SendBatch,
// ReceiveBatch, ReleaseBatch, in one goroutine, per message: the software cost of a message
// in a batch of k (k=1 compares with BenchmarkPublishReceive).
func BenchmarkBatchPublishReceive(b *testing.B) {
	for _, k := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("batch=%d", k), func(b *testing.B) {
			bs, err := Open("bench", WithDir(b.TempDir()), WithConfig(benchConfig()))
			if err != nil {
				b.Fatal(err)
			}
			defer bs.Close()
			ctx := context.Background()
			sub, _ := bs.Subscribe("bench.x", WithQueueDepth(64))
			pub, _ := bs.Publisher("bench.x")
			loans := make([]Loan, k)
			got := make([]Message, k)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += k {
				ls, err := pub.LoanBatch(loans, 64)
				if err != nil {
					b.Fatal(err)
				}
				for j := range ls {
					ls[j].Bytes()[0] = byte(j)
				}
				if err := pub.SendBatch(ctx, ls); err != nil {
					b.Fatal(err)
				}
				for n := 0; n < len(ls); {
					ms, err := sub.ReceiveBatch(ctx, got)
					if err != nil {
						b.Fatal(err)
					}
					n += len(ms)
					ReleaseBatch(ms)
				}
			}
		})
	}
}

// BenchmarkBatchReceive: the subscriber's half of BenchmarkBatchPublishReceive alone, in one
// goroutine: a batch of 64 is published untimed, then ReceiveBatch, a read of each message's
// 16-byte header and ReleaseBatch are timed; reports ns per message (docs/performance.md, "Issue
// 15, seventh round": with every line in this core's cache, this is the floor of a batched
// subscriber's cost between processes).
func BenchmarkBatchReceive(b *testing.B) {
	bs, err := Open("bench", WithDir(b.TempDir()), WithConfig(benchConfig()))
	if err != nil {
		b.Fatal(err)
	}
	defer bs.Close()
	ctx := context.Background()
	sub, _ := bs.Subscribe("bench.x", WithQueueDepth(MaxBatch))
	pub, _ := bs.Publisher("bench.x")
	loans := make([]Loan, MaxBatch)
	got := make([]Message, MaxBatch)
	var timed time.Duration
	var sum uint64
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		ls, err := pub.LoanBatch(loans, 64)
		if err != nil {
			b.Fatal(err)
		}
		if err := pub.SendBatch(ctx, ls); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for m := 0; m < len(ls); {
			ms, err := sub.ReceiveBatch(ctx, got)
			if err != nil {
				b.Fatal(err)
			}
			for _, msg := range ms {
				d := msg.Data()
				sum += binary.LittleEndian.Uint64(d[0:]) + binary.LittleEndian.Uint64(d[8:])
			}
			m += len(ms)
			ReleaseBatch(ms)
		}
		timed += time.Since(start)
		n += len(ls)
	}
	b.ReportMetric(float64(timed.Nanoseconds())/float64(n), "ns/msg")
	if sum == 1 {
		b.Log(sum) // keep the reads
	}
}

// BenchmarkBatchStream: BenchmarkStream with batches of k on both sides (a publisher
// goroutine and a subscriber goroutine, Block policy); reports messages per second.
func BenchmarkBatchStream(b *testing.B) {
	for _, k := range []int{8, 64} {
		b.Run(fmt.Sprintf("batch=%d", k), func(b *testing.B) {
			if runtime.GOMAXPROCS(0) < 2 {
				b.Skip("needs two cores")
			}
			bs, err := Open("bench", WithDir(b.TempDir()), WithConfig(benchConfig()))
			if err != nil {
				b.Fatal(err)
			}
			defer bs.Close()
			ctx := context.Background()
			sub, _ := bs.Subscribe("bench.s", WithQueueDepth(1024), WithOverflow(Block), WithWait(BusySpin))
			pub, _ := bs.Publisher("bench.s")
			done := make(chan error, 1)
			total := (b.N + k - 1) / k * k
			go func() {
				got := make([]Message, k)
				for n := 0; n < total; {
					ms, err := sub.ReceiveBatch(ctx, got)
					if err != nil {
						done <- err
						return
					}
					n += len(ms)
					ReleaseBatch(ms)
				}
				done <- nil
			}()
			loans := make([]Loan, k)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for sent := 0; sent < total; {
				ls, err := pub.LoanBatch(loans, 64)
				if err != nil {
					b.Fatal(err)
				}
				if err := pub.SendBatch(ctx, ls); err != nil {
					b.Fatal(err)
				}
				sent += len(ls)
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(total)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkBatchFanOut: BenchmarkFanOut with batches of 64: one SendBatch delivered to N
// subscriptions, each drained with ReceiveBatch and ReleaseBatch, in one goroutine; reports
// deliveries per second.
func BenchmarkBatchFanOut(b *testing.B) {
	const k = 64
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
				subs[i], _ = bs.Subscribe("fan.>", WithQueueDepth(k))
			}
			pub, _ := bs.Publisher("fan.x")
			loans := make([]Loan, k)
			got := make([]Message, k)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			total := 0
			for total < b.N {
				ls, err := pub.LoanBatch(loans, 64)
				if err != nil {
					b.Fatal(err)
				}
				if err := pub.SendBatch(ctx, ls); err != nil {
					b.Fatal(err)
				}
				for _, s := range subs {
					for m := 0; m < len(ls); {
						ms, err := s.ReceiveBatch(ctx, got)
						if err != nil {
							b.Fatal(err)
						}
						m += len(ms)
						ReleaseBatch(ms)
					}
				}
				total += len(ls)
			}
			el := time.Since(start).Seconds()
			b.ReportMetric(float64(total*n)/el, "deliveries/s")
			b.ReportMetric(float64(total)/el, "publishes/s")
		})
	}
}

// A batch goes to every plain subscription and, whole and in order, to one member of each
// queue group (it used to skip the groups while FanOut counted them).
func TestBatchQueueGroup(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	plain, _ := b.Subscribe("batchq.a")
	var members [2]*Subscription
	for i := range members {
		members[i], _ = b.Subscribe("batchq.*", WithQueueGroup("workers"))
	}
	pub, _ := b.Publisher("batchq.a")
	var loans [MaxBatch]Loan
	var got [MaxBatch]Message
	const k = 4
	sendBatch(t, pub, loans[:], k, 1)
	if n := pub.FanOut(); n != 2 {
		t.Fatalf("FanOut %d, want 2 (the plain subscription and the group)", n)
	}
	ms, err := plain.ReceiveBatch(ctx, got[:])
	if err != nil || len(ms) != k {
		t.Fatalf("plain subscription: %d messages, %v; want %d", len(ms), err, k)
	}
	ReleaseBatch(ms)
	taken := 0
	for _, m := range members {
		if m.Len() == 0 {
			continue
		}
		ms, err := m.ReceiveBatch(ctx, got[:])
		if err != nil {
			t.Fatal(err)
		}
		for j, msg := range ms {
			if v := binary.LittleEndian.Uint64(msg.Data()); v != uint64(j+1) {
				t.Fatalf("group member: message %d holds %d, want %d (the batch whole, in order)", j, v, j+1)
			}
		}
		taken += len(ms)
		ReleaseBatch(ms)
	}
	if taken != k {
		t.Fatalf("the queue group took %d of the batch's %d messages, want all of them in one member", taken, k)
	}
}
