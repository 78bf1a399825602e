package shm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"
)

// batchRig is a participant, a topic and inboxes for the batched forms.
type batchRig struct {
	r    *Region
	p    *Participant
	t    Topic
	ins  []Inbox // as the owner holds them
	outs []Inbox // as a publisher holds them
}

func newBatchRig(tb testing.TB, cfg Config, inboxes, capacity int, pol Overflow) *batchRig {
	tb.Helper()
	r := newUnitRegion(tb, cfg)
	p := attachUnit(tb, r, "batch")
	tp, err := p.LookupTopic("batch.t", true, 0)
	if err != nil {
		tb.Fatal(err)
	}
	g := &batchRig{r: r, p: p, t: tp}
	for range inboxes {
		in, err := p.OpenInbox(InboxConfig{Capacity: capacity, Overflow: pol})
		if err != nil {
			tb.Fatal(err)
		}
		out, err := r.inbox(in.ID())
		if err != nil {
			tb.Fatal(err)
		}
		g.ins = append(g.ins, in)
		g.outs = append(g.outs, out)
	}
	tb.Cleanup(func() {
		for i := range g.ins {
			g.ins[i].close()
		}
	})
	return g
}

// send loans k buffers, writes first+i into each and sends them as one batch.
func (g *batchRig) send(tb testing.TB, loans []Loan, lens []int, k int, first uint64) {
	ls, err := g.p.LoanBatch(loans[:k], 8)
	if err != nil || len(ls) != k {
		tb.Fatalf("LoanBatch: %d loans, %v", len(ls), err)
	}
	for i := range ls {
		binary.NativeEndian.PutUint64(ls[i].Bytes(), first+uint64(i))
		lens[i] = 8
	}
	if _, err := g.t.SendBatch(context.Background(), ls, lens[:k], g.outs); err != nil {
		tb.Fatalf("SendBatch: %v", err)
	}
}

func TestBatchRoundTrip(t *testing.T) {
	g := newBatchRig(t, inboxConfig(), 3, 16, DropOldest)
	var loans [MaxBatch]Loan
	var lens [MaxBatch]int
	var held [MaxBatch]Held
	bg := context.Background()
	next := uint64(1)
	for _, k := range []int{1, 5, 16, 3} {
		g.send(t, loans[:], lens[:], k, next)
		for i := range g.ins {
			got, err := g.p.TakeBatch(bg, &g.ins[i], Waiter{Strategy: BusySpin}, held[:])
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != k {
				t.Fatalf("batch of %d, inbox %d: took %d", k, i, len(got))
			}
			for j, m := range got {
				if v := binary.NativeEndian.Uint64(m.Data()); v != next+uint64(j) {
					t.Fatalf("message %d holds %d, want %d", j, v, next+uint64(j))
				}
				if m.Meta().Seq != next+uint64(j) || m.Meta().Len != 8 {
					t.Fatalf("message %d: meta %+v", j, m.Meta())
				}
			}
			if err := ReleaseBatch(got); err != nil {
				t.Fatal(err)
			}
			if err := ReleaseBatch(got[:1]); !errors.Is(err, ErrReleased) {
				t.Fatalf("second release: %v, want ErrReleased", err)
			}
		}
		next += uint64(k)
	}
	if n := g.t.Published(); n != next-1 {
		t.Fatalf("published %d, want %d", n, next-1)
	}
	assertNoneAllocated(t, g.r)
}

// assertNoneAllocated checks that every buffer is free and the pools' counters say so.
func assertNoneAllocated(t *testing.T, r *Region) {
	t.Helper()
	for c, n := range r.CountAllocated() {
		if n != 0 {
			t.Errorf("class %d: %d buffers allocated, want 0", c, n)
		}
	}
	for _, ps := range r.PoolStats() {
		if ps.InUse != 0 {
			t.Errorf("class %d: in use %d by the counters, want 0", ps.Class, ps.InUse)
		}
	}
}

// A batch larger than the free room in a ring: the run stops at the full cell and the single
// push applies the policy to the rest, message by message, counting each drop.
func TestBatchOverflow(t *testing.T) {
	for _, pol := range []Overflow{DropOldest, DropNewest} {
		t.Run(pol.String(), func(t *testing.T) {
			g := newBatchRig(t, inboxConfig(), 1, 4, pol)
			var loans [MaxBatch]Loan
			var lens [MaxBatch]int
			var held [MaxBatch]Held
			g.send(t, loans[:], lens[:], 10, 1)
			got, err := g.p.TakeBatch(context.Background(), &g.ins[0], Waiter{Strategy: BusySpin}, held[:])
			if err != nil {
				t.Fatal(err)
			}
			first := uint64(1) // DropNewest keeps the first four
			if pol == DropOldest {
				first = 7 // and DropOldest the last four
			}
			if len(got) != 4 {
				t.Fatalf("took %d, want 4", len(got))
			}
			for j, m := range got {
				if v := binary.NativeEndian.Uint64(m.Data()); v != first+uint64(j) {
					t.Fatalf("message %d holds %d, want %d", j, v, first+uint64(j))
				}
			}
			ReleaseBatch(got)
			st := g.r.inboxStats()[g.ins[0].v.index]
			if d := st.DropOldest + st.DropNewest; d != 6 {
				t.Fatalf("dropped %d, want 6 (%+v)", d, st)
			}
			assertNoneAllocated(t, g.r)
		})
	}
}

// Loans already ended make the whole batch fail, deliver nothing and end the rest.
func TestBatchLoanEnded(t *testing.T) {
	g := newBatchRig(t, inboxConfig(), 1, 16, DropOldest)
	var loans [4]Loan
	ls, err := g.p.LoanBatch(loans[:], 8)
	if err != nil || len(ls) != 4 {
		t.Fatal(len(ls), err)
	}
	if err := ls[2].Discard(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.t.SendBatch(context.Background(), ls, []int{8, 8, 8, 8}, g.outs); !errors.Is(err, ErrLoanEnded) {
		t.Fatalf("SendBatch with an ended loan: %v, want ErrLoanEnded", err)
	}
	if n := g.ins[0].Len(); n != 0 {
		t.Fatalf("%d messages delivered, want 0", n)
	}
	assertNoneAllocated(t, g.r)
}

// The same loan twice in one batch is a loan sent twice: nothing is delivered, ErrLoanEnded.
func TestBatchSameLoanTwice(t *testing.T) {
	g := newBatchRig(t, inboxConfig(), 1, 16, DropOldest)
	var loans [3]Loan
	ls, _ := g.p.LoanBatch(loans[:2], 8)
	ls = append(ls, ls[0])
	if _, err := g.t.SendBatch(context.Background(), ls, []int{8, 8, 8}, g.outs); !errors.Is(err, ErrLoanEnded) {
		t.Fatalf("SendBatch with a loan twice: %v, want ErrLoanEnded", err)
	}
	if n := g.ins[0].Len(); n != 0 {
		t.Fatalf("%d messages delivered, want 0", n)
	}
	assertNoneAllocated(t, g.r)
	var s handleSet
	for i := range 2 * MaxBatch {
		if !s.add(Handle(i + 1)) {
			t.Fatalf("handle %d reported twice", i+1)
		}
	}
}

// A batch to a closed inbox delivers nothing there and says so; the loans end.
func TestBatchClosedTarget(t *testing.T) {
	g := newBatchRig(t, inboxConfig(), 2, 16, DropOldest)
	g.ins[0].close()
	var loans [MaxBatch]Loan
	ls, _ := g.p.LoanBatch(loans[:3], 8)
	res, err := g.t.SendBatch(context.Background(), ls, []int{8, 8, 8}, g.outs)
	if err != nil || res.Closed != 1 {
		t.Fatalf("SendBatch: %+v, %v; want one closed target", res, err)
	}
	var held [MaxBatch]Held
	got, err := g.p.TakeBatch(context.Background(), &g.ins[1], Waiter{Strategy: BusySpin}, held[:])
	if err != nil || len(got) != 3 {
		t.Fatal(len(got), err)
	}
	ReleaseBatch(got)
	assertNoneAllocated(t, g.r)
}

// LoanBatch takes what the pools have, counts it, and fails only with nothing to lend.
func TestLoanBatchExhausted(t *testing.T) {
	cfg := inboxConfig()
	g := newBatchRig(t, cfg, 1, 16, DropOldest)
	var loans [MaxBatch]Loan
	total := 0
	for _, c := range cfg.Classes {
		total += int(c.Count)
	}
	var all []Loan
	for {
		ls, err := g.p.LoanBatch(loans[:], 8)
		if err != nil {
			if !errors.Is(err, ErrPoolExhausted) {
				t.Fatal(err)
			}
			break
		}
		all = append(all, ls...)
	}
	if len(all) != total {
		t.Fatalf("lent %d, want every buffer (%d)", len(all), total)
	}
	var inUse int64
	for _, ps := range g.r.PoolStats() {
		inUse += ps.InUse
	}
	if inUse != int64(total) {
		t.Fatalf("counters say %d in use, want %d", inUse, total)
	}
	for _, l := range all {
		if err := l.Discard(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.p.LoanBatch(loans[:], int(g.r.maxSize)+1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	assertNoneAllocated(t, g.r)
}

func TestNoAllocsBatch(t *testing.T) {
	g := newBatchRig(t, inboxConfig(), 2, 64, DropOldest)
	var loans [16]Loan
	var lens [16]int
	var held [16]Held
	bg := context.Background()
	checkNoAllocs(t, "LoanBatch+SendBatch+TakeBatch+ReleaseBatch", func() {
		ls, err := g.p.LoanBatch(loans[:], 8)
		if err != nil {
			panic(err)
		}
		if _, err := g.t.SendBatch(bg, ls, lens[:len(ls)], g.outs); err != nil {
			panic(err)
		}
		for i := range g.ins {
			got, err := g.p.TakeBatch(bg, &g.ins[i], Waiter{Strategy: BusySpin}, held[:])
			if err != nil {
				panic(err)
			}
			if err := ReleaseBatch(got); err != nil {
				panic(err)
			}
		}
	})
	assertNoneAllocated(t, g.r)
}

// batchBenchConfig is benchConfig with room for a whole batch in the held list and the pool.
func batchBenchConfig() Config {
	c := benchConfig()
	c.Classes = []Class{{Size: 64, Count: 4 * MaxBatch}}
	c.Held = 2 * MaxBatch
	return c
}

// BenchmarkBatchPublishRelease: the life of k 64-byte messages in one goroutine, batched
// (LoanBatch, SendBatch, TakeBatch, ReleaseBatch), per message. Every batch is lent whole
// and received whole (nothing dropped). Compare with BenchmarkSendTake (the single forms on
// the same rig).
func BenchmarkBatchPublishRelease(b *testing.B) {
	for _, k := range []int{1, 8, 64} {
		b.Run(fmt.Sprint("batch=", k), func(b *testing.B) {
			g := newBatchRig(b, batchBenchConfig(), 1, 1024, DropNewest)
			loans := make([]Loan, k)
			lens := make([]int, k)
			held := make([]Held, k)
			bg := context.Background()
			b.ReportAllocs()
			for i := 0; i < b.N; i += k {
				ls, err := g.p.LoanBatch(loans, 64)
				if err != nil || len(ls) != k {
					b.Fatalf("LoanBatch: %d of %d, %v", len(ls), k, err)
				}
				for j := range ls {
					lens[j] = 64
				}
				if _, err := g.t.SendBatch(bg, ls, lens, g.outs); err != nil {
					b.Fatal(err)
				}
				got, err := g.p.TakeBatch(bg, &g.ins[0], Waiter{Strategy: BusySpin}, held)
				if err != nil || len(got) != k {
					b.Fatalf("TakeBatch: %d of %d, %v", len(got), k, err)
				}
				ReleaseBatch(got)
			}
		})
	}
}

// BenchmarkSendTake: the single forms of the door (Loan, Send, Take, Release) on the same rig,
// the baseline for BenchmarkBatchPublishRelease.
func BenchmarkSendTake(b *testing.B) {
	g := newBatchRig(b, batchBenchConfig(), 1, 1024, DropNewest)
	bg := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l, err := g.p.Loan(64)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := g.t.Send(bg, l, 64, g.outs); err != nil {
			b.Fatal(err)
		}
		m, err := g.p.Take(bg, &g.ins[0], Waiter{Strategy: BusySpin})
		if err != nil {
			b.Fatal(err)
		}
		m.Release()
	}
}

// A participant whose only loans came from LoanBatch and that detaches with them outstanding
// gets them ended by Detach like single loans (Detach walks the lent slots only for a
// participant that ever loaned, and LoanBatch must say so).
func TestDetachEndsBatchLoans(t *testing.T) {
	r, err := Create("batchdetach", Options{Dir: t.TempDir(), Config: inboxConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p, err := r.Attach("batcher")
	if err != nil {
		t.Fatal(err)
	}
	var loans [8]Loan
	if ls, err := p.LoanBatch(loans[:], 8); err != nil || len(ls) != 8 {
		t.Fatal(len(ls), err)
	}
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("%d buffers still allocated after Detach ended its batch loans", n)
	}
}

// A buffer whose header still names a reply inbox and correlation id (it last carried a
// request) goes out by SendBatch as a plain message: the batch clears both, as Send does, so
// no taker mistakes it for a request and replies to a stale address.
func TestBatchClearsReplyAddress(t *testing.T) {
	g := newBatchRig(t, inboxConfig(), 1, 16, DropOldest)
	var loans [2]Loan
	ls, err := g.p.LoanBatch(loans[:], 8)
	if err != nil || len(ls) != 2 {
		t.Fatal(len(ls), err)
	}
	for i := range ls {
		ls[i].buf.setAddress(g.ins[0].ID(), 7) // as a request left it
	}
	if _, err := g.t.SendBatch(context.Background(), ls, []int{8, 8}, g.outs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var held [2]Held
	got, err := g.p.TakeBatch(ctx, &g.ins[0], Waiter{Strategy: BusySpin}, held[:])
	if err != nil || len(got) != 2 {
		t.Fatal(len(got), err)
	}
	for _, h := range got {
		if to, corr := h.ReplyTo(); to != 0 || corr != 0 {
			t.Fatalf("a batched message carries reply address %v, corr %d; want none", to, corr)
		}
		h.Release()
	}
}
