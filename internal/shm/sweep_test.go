package shm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// reapTwice reaps twice: a sweep frees an orphan it saw the same way at the previous sweep.
func reapTwice(t *testing.T, r *Region) ReapReport {
	t.Helper()
	var rep ReapReport
	for range 2 {
		x, err := r.Reap()
		if err != nil {
			t.Fatal(err)
		}
		rep.Add(x)
	}
	return rep
}

// TestSweepFreesOnlyOrphans: buffers with one reference recorded in each place a reference can
// be recorded (a queued cell, a held entry, a pending held entry, a history cell, a loan) are
// never swept; a buffer whose only reference is recorded nowhere is, on the second sweep that
// sees it, and one with another holder once that holder releases. A region in which someone
// used TryPop is not swept until its next audit.
func TestSweepFreesOnlyOrphans(t *testing.T) {
	r := newUnitRegion(t, reapConfig())
	sub := attachUnit(t, r, "sub")
	pub := attachUnit(t, r, "pub")
	in, err := sub.OpenInbox(InboxConfig{Capacity: 8})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	loan := func() Handle {
		t.Helper()
		b, err := pub.alloc(8)
		if err != nil {
			t.Fatal(err)
		}
		return b.Handle()
	}
	deliver := func(h Handle) {
		t.Helper()
		if err := in.deliver(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	unloan := func(h Handle) {
		t.Helper()
		if err := pub.unloan(h); err != nil {
			t.Fatal(err)
		}
	}
	pop := func() (int, Handle) {
		t.Helper()
		idx, err := sub.reserve()
		if err != nil {
			t.Fatal(err)
		}
		h, ok, err := in.tryPopInto(sub, idx)
		if err != nil || !ok {
			t.Fatalf("pop: %v %v", ok, err)
		}
		return idx, h
	}
	live := func(what string, h Handle) {
		t.Helper()
		if b, err := r.buffer(h); err != nil || b.Refs() != 1 {
			t.Fatalf("%s: %v (want allocated, one reference)", what, err)
		}
	}

	held := loan() // received: its reference is in the subscriber's held entry
	deliver(held)
	unloan(held)
	heldIdx, _ := pop()
	pending := loan() // mid-take: its reference is in a pending held entry
	deliver(pending)
	unloan(pending)
	pendingIdx, _ := pop()
	pw, _ := sub.heldWord(pendingIdx)
	pw.Store(heldPending | uint64(pending))
	queued := loan() // queued in the ring
	deliver(queued)
	unloan(queued)
	tp, err := pub.LookupTopic("kept", true, 1)
	if err != nil {
		t.Fatal(err)
	}
	kept := loan() // in the topic's history
	if err := r.addRefsHandle(kept, 1); err != nil {
		t.Fatal(err)
	}
	tp.remember(kept)
	unloan(kept)
	onLoan := loan()
	orphan := loan() // one reference, recorded nowhere
	if err := r.addRefsHandle(orphan, 1); err != nil {
		t.Fatal(err)
	}
	unloan(orphan)
	shared := loan() // queued, plus one reference recorded nowhere
	if err := r.addRefsHandle(shared, 1); err != nil {
		t.Fatal(err)
	}
	deliver(shared)
	unloan(shared)

	if rep, err := r.Reap(); err != nil || rep.Swept != 0 {
		t.Fatalf("first sweep: %+v %v, want nothing swept (an orphan must be seen twice)", rep, err)
	}
	if rep, err := r.Reap(); err != nil || rep.Swept != 1 {
		t.Fatalf("second sweep: %+v %v, want the orphan swept", rep, err)
	}
	if _, err := r.buffer(orphan); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("the orphan after the sweep: %v, want it free", err)
	}
	for _, c := range []struct {
		what string
		h    Handle
	}{{"held", held}, {"pending", pending}, {"queued", queued}, {"history", kept}, {"on loan", onLoan}} {
		live(c.what, c.h)
	}
	if n := allocated(r); n != 6 {
		t.Fatalf("%d buffers allocated, want 6", n)
	}
	if st := r.Stats(); st.Swept != 1 || st.SweepOff {
		t.Fatalf("stats: swept %d, sweep off %v", st.Swept, st.SweepOff)
	}

	// The queued copy of the shared buffer is received and released: its orphaned reference
	// is then the only one, and is swept.
	pw.Store(heldReserved)
	sub.unreserve(pendingIdx)
	for _, want := range []Handle{queued, shared} {
		idx, h := pop()
		if h != want {
			t.Fatalf("popped %v, want %v", h, want)
		}
		if err := sub.unhold(idx, h); err != nil {
			t.Fatal(err)
		}
	}
	if rep := reapTwice(t, r); rep.Swept != 2 {
		t.Fatalf("sweeps after the release: %+v, want the shared buffer and the pending one swept", rep)
	}
	if n := allocated(r); n != 3 {
		t.Fatalf("%d buffers allocated, want 3 (held, history, on loan)", n)
	}
	if err := sub.unhold(heldIdx, held); err != nil {
		t.Fatal(err)
	}
	unloan(onLoan)

	// Someone takes without recording: no more sweeping, until an audit.
	if _, ok, err := in.tryPop(); ok || err != nil {
		t.Fatalf("TryPop on an empty inbox: %v %v", ok, err)
	}
	orphan = loan()
	if err := r.addRefsHandle(orphan, 1); err != nil {
		t.Fatal(err)
	}
	unloan(orphan)
	if rep := reapTwice(t, r); rep.Swept != 0 {
		t.Fatalf("swept %d with an unrecorded consumer about", rep.Swept)
	}
	if st := r.Stats(); !st.SweepOff {
		t.Fatal("stats do not say the sweep is off")
	}
	in.close()
	sub.Detach()
	pub.Detach()
	rep, err := r.Reap()
	if err != nil || !rep.Audited || rep.Repaired != 1 {
		t.Fatalf("reap with nobody attached: %+v %v, want an audit repairing the orphan", rep, err)
	}
	if st := r.Stats(); st.SweepOff {
		t.Fatal("the audit did not turn the sweep back on")
	}
	if n := allocated(r); n != 1 {
		t.Fatalf("%d buffers allocated at the end, want the one in history", n)
	}
}

// TestSweepUnderLoad: publishers (each through its own mapping, as if another process) fan out
// to two drop-oldest subscribers and keep a history, a late joiner keeps taking the history,
// and a sweeper sweeps without pause, all at once. Every so often a publisher loses a reference
// on purpose, as a process killed in the middle of moving one would. No buffer that anyone
// records may ever be freed under them: every message a subscriber or the joiner reads is still
// the same live buffer after reading, intact, and in order. At the end the sweeps have freed
// exactly the lost references and nothing else.
func TestSweepUnderLoad(t *testing.T) {
	const publishers, perPublisher, lossEvery = 2, 4000, 97
	cfg := reapConfig()
	cfg.Classes = []Class{{Size: 64, Count: 128}}
	r := newUnitRegion(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var subs []*Participant
	var inboxes []Inbox
	for i := range 2 {
		p := attachUnit(t, r, fmt.Sprint("sub", i))
		in, err := p.OpenInbox(InboxConfig{Capacity: 8, Overflow: DropOldest})
		if err != nil {
			t.Fatal(err)
		}
		subs, inboxes = append(subs, p), append(inboxes, in)
	}
	creator := attachUnit(t, r, "creator")
	if _, err := creator.LookupTopic("load", true, 2); err != nil {
		t.Fatal(err)
	}

	var lost, received, joined, sweeps, raced atomic.Int64
	testHookReleaseSwept = func(Handle) { raced.Add(1) }
	defer func() { testHookReleaseSwept = nil }()
	var failed atomic.Bool
	fail := func(format string, args ...any) {
		if failed.CompareAndSwap(false, true) {
			t.Errorf(format, args...)
		}
		cancel()
	}
	check := func(rr *Region, h Handle) (pub, seq uint64, ok bool) {
		b, err := rr.buffer(h)
		if err != nil {
			fail("a recorded message was freed under its holder: %v", err)
			return 0, 0, false
		}
		d := b.Data()
		if len(d) != 20 || crc32.ChecksumIEEE(d[:16]) != binary.NativeEndian.Uint32(d[16:]) {
			fail("a message was overwritten under its holder: %x", d)
			return 0, 0, false
		}
		pub, seq = binary.NativeEndian.Uint64(d), binary.NativeEndian.Uint64(d[8:])
		if _, err := rr.buffer(h); err != nil { // still the same buffer after reading it
			fail("a message was freed while its holder read it: %v", err)
			return 0, 0, false
		}
		return pub, seq, true
	}

	var pubs, readers sync.WaitGroup
	for w := range publishers {
		rw, err := Open("unit", Options{Dir: filepath.Dir(r.Path())})
		if err != nil {
			t.Fatal(err)
		}
		p := attachUnit(t, rw, fmt.Sprint("pub", w))
		t.Cleanup(func() { rw.Close() }) // after p detaches
		tp, err := p.LookupTopic("load", false, 2)
		if err != nil {
			t.Fatal(err)
		}
		var outs []Inbox
		for _, in := range inboxes {
			out, err := rw.inbox(in.ID())
			if err != nil {
				t.Fatal(err)
			}
			outs = append(outs, out)
		}
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			// At least perPublisher messages, and on until the readers have had their share of
			// the two cores; then 10 more with no loss, which leave the history.
			final := uint64(0)
			for i := uint64(1); ctx.Err() == nil; i++ {
				if final == 0 && i > perPublisher && received.Load() > 1000 && joined.Load() > 100 {
					final = i + 10
				}
				if final != 0 && i > final {
					break
				}
				b, err := p.alloc(20)
				if errors.Is(err, ErrPoolExhausted) {
					i--
					runtime.Gosched() // the subscribers are behind
					continue
				}
				if err != nil {
					fail("alloc: %v", err)
					return
				}
				d := b.Bytes()[:20]
				binary.NativeEndian.PutUint64(d, uint64(w))
				binary.NativeEndian.PutUint64(d[8:], i)
				binary.NativeEndian.PutUint32(d[16:], crc32.ChecksumIEEE(d[:16]))
				h := b.Handle()
				b.SetMeta(Meta{Len: 20, Seq: i})
				for k := range outs {
					if err := outs[k].deliver(ctx, h); err != nil && !errors.Is(err, ErrFull) {
						fail("deliver: %v", err)
						return
					}
				}
				if err := rw.addRefsHandle(h, 1); err != nil {
					fail("add the history's reference: %v", err)
					return
				}
				tp.remember(h)
				if i%lossEvery == 0 && final == 0 { // displaced from the history by the end
					rw.addRefsHandle(h, 1) // a reference nobody will ever release
					lost.Add(1)
				}
				if err := p.unloan(h); err != nil {
					fail("unloan: %v", err)
					return
				}
				runtime.Gosched() // give the subscribers a chance on two cores
			}
		}()
	}
	done := make(chan struct{})
	for k, in := range inboxes {
		p := subs[k]
		readers.Add(1)
		go func() {
			defer readers.Done()
			last := make([]uint64, publishers)
			for ctx.Err() == nil {
				idx, err := p.reserve()
				if err != nil {
					fail("reserve: %v", err)
					return
				}
				h, ok, err := in.tryPopInto(p, idx)
				if err != nil {
					fail("pop: %v", err)
					return
				}
				if !ok {
					p.unreserve(idx)
					select {
					case <-done:
						return
					default:
						runtime.Gosched()
						continue
					}
				}
				pub, seq, ok := check(r, h)
				if !ok {
					return
				}
				if pub >= publishers || seq <= last[pub] {
					fail("subscriber %d: publisher %d's message %d after %d", k, pub, seq, last[pub])
					return
				}
				last[pub] = seq
				received.Add(1)
				if err := p.unhold(idx, h); err != nil {
					fail("release: %v", err)
					return
				}
			}
		}()
	}
	readers.Add(1)
	go func() { // a late joiner, again and again
		defer readers.Done()
		p := creator
		tp, _ := p.LookupTopic("load", false, 2)
		for ctx.Err() == nil {
			select {
			case <-done:
				return
			default:
			}
			err := tp.holdHistory(p, func(idx int, h Handle) {
				check(r, h)
				joined.Add(1)
				if err := p.unhold(idx, h); err != nil {
					fail("release a history message: %v", err)
				}
			})
			if err != nil {
				fail("history: %v", err)
				return
			}
		}
	}()
	var swept atomic.Int64
	readers.Add(1)
	go func() {
		defer readers.Done()
		for ctx.Err() == nil {
			select {
			case <-done:
				return
			default:
			}
			rep, err := r.Reap()
			if err != nil {
				fail("reap: %v", err)
				return
			}
			swept.Add(int64(rep.Swept))
			sweeps.Add(1)
		}
	}()
	pubs.Wait()
	close(done)
	readers.Wait()
	if failed.Load() {
		return
	}
	// Drain what is still queued, then sweep until nothing changes.
	for k, in := range inboxes {
		for {
			idx, _ := subs[k].reserve()
			h, ok, err := in.tryPopInto(subs[k], idx)
			if err != nil || !ok {
				subs[k].unreserve(idx)
				break
			}
			subs[k].unhold(idx, h)
		}
	}
	swept.Add(int64(reapTwice(t, r).Swept))
	// A sweep may also free a buffer whose last reference was on its way to a release (a
	// producer's eviction, a subscriber's release); that release then finds it free and says
	// so. Every other buffer swept must be one whose reference was lost.
	if got, want := swept.Load(), lost.Load()+raced.Load(); got != want {
		t.Errorf("the sweeps freed %d buffers; %d references were lost and %d releases raced a sweep", got, lost.Load(), raced.Load())
	}
	if n := allocated(r); n != 2 {
		t.Errorf("%d buffers allocated at the end, want the 2 in the history", n)
	}
	var dropped uint64
	for _, s := range r.InboxStats() {
		dropped += s.DropOldest
	}
	t.Logf("%d messages received, %d evicted, %d history messages joined, %d sweeps, %d buffers swept (%d lost references, %d releases raced)",
		received.Load(), dropped, joined.Load(), sweeps.Load(), swept.Load(), lost.Load(), raced.Load())
	if received.Load() == 0 || joined.Load() == 0 || sweeps.Load() < 2 {
		t.Error("the load did not run")
	}
}

// TestSweepTakeDuringSweep: a message is taken out of its ring (its reference moving from the
// cell to the consumer's held entry) while a sweep reads, after the cells and before the held
// lists. The sweep read the cell before the move and the entry after it, so it sees the
// reference once and frees nothing.
func TestSweepTakeDuringSweep(t *testing.T) {
	r := newUnitRegion(t, reapConfig())
	sub := attachUnit(t, r, "sub")
	in, err := sub.OpenInbox(InboxConfig{Capacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	b, err := sub.alloc(8)
	if err != nil {
		t.Fatal(err)
	}
	h := b.Handle()
	if err := in.deliver(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if err := sub.unloan(h); err != nil {
		t.Fatal(err)
	}
	if rep, err := r.Reap(); err != nil || rep.Swept != 0 { // the candidate is seen once
		t.Fatalf("first sweep: %+v %v", rep, err)
	}
	idx := -1
	testHookSweepCellsRead = func() {
		testHookSweepCellsRead = nil
		var err error
		if idx, err = sub.reserve(); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := in.tryPopInto(sub, idx); got != h || !ok || err != nil {
			t.Fatalf("take during the sweep: %v %v %v", got, ok, err)
		}
	}
	defer func() { testHookSweepCellsRead = nil }()
	if rep, err := r.Reap(); err != nil || rep.Swept != 0 {
		t.Fatalf("sweep during the take: %+v %v, want nothing swept", rep, err)
	}
	if idx < 0 {
		t.Fatal("the hook did not run")
	}
	if _, err := r.buffer(h); err != nil {
		t.Fatalf("the taken message after the sweep: %v", err)
	}
	if err := sub.unhold(idx, h); err != nil {
		t.Fatal(err)
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("%d buffers allocated at the end", n)
	}
}

// BenchmarkSweep: a reap of the default configuration with one subscriber holding a message
// (so every sweep has a candidate to confirm and reads every record): what each process's
// reaper spends once a second.
func BenchmarkSweep(b *testing.B) {
	r, err := Create("unit", Options{Dir: b.TempDir(), Config: DefaultConfig()})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	p, err := r.Attach("holder")
	if err != nil {
		b.Fatal(err)
	}
	defer p.Detach()
	in, err := p.OpenInbox(InboxConfig{})
	if err != nil {
		b.Fatal(err)
	}
	buf, err := p.alloc(8)
	if err != nil {
		b.Fatal(err)
	}
	if err := in.deliverBuffer(context.Background(), buf); err != nil {
		b.Fatal(err)
	}
	p.unloan(buf.Handle())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Reap(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSweepHeldReferenceMovesDuringSweep: a consumer holding a message moves its reference
// out of its held entry while a sweep reads, after the cells and before the held lists: it
// delivers the message into an inbox (or remembers it in a topic's history) and releases its
// own. The sweep read the cells and the history before the move and the held entry after it,
// so no record it read names the buffer, whose state word is the one it saw: it must still
// free nothing, and the message must stay queued (or remembered).
func TestSweepHeldReferenceMovesDuringSweep(t *testing.T) {
	for _, into := range []string{"inbox", "history"} {
		t.Run(into, func(t *testing.T) {
			r := newUnitRegion(t, reapConfig())
			sub := attachUnit(t, r, "sub")
			in, err := sub.OpenInbox(InboxConfig{Capacity: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer in.close()
			tp, err := sub.LookupTopic("moves", true, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer tp.clearHistory()
			b, err := sub.alloc(8)
			if err != nil {
				t.Fatal(err)
			}
			h := b.Handle()
			if err := in.deliver(context.Background(), h); err != nil {
				t.Fatal(err)
			}
			if err := sub.unloan(h); err != nil {
				t.Fatal(err)
			}
			idx, err := sub.reserve()
			if err != nil {
				t.Fatal(err)
			}
			if got, ok, err := in.tryPopInto(sub, idx); got != h || !ok || err != nil {
				t.Fatalf("take: %v %v %v", got, ok, err)
			}
			if rep, err := r.Reap(); err != nil || rep.Swept != 0 { // the candidate is seen once
				t.Fatalf("first sweep: %+v %v", rep, err)
			}
			ran := false
			testHookSweepCellsRead = func() {
				testHookSweepCellsRead = nil
				ran = true
				if into == "inbox" {
					if err := in.deliver(context.Background(), h); err != nil {
						t.Fatal(err)
					}
				} else {
					if err := r.addRefsHandle(h, 1); err != nil {
						t.Fatal(err)
					}
					tp.remember(h)
				}
				if err := sub.unhold(idx, h); err != nil {
					t.Fatal(err)
				}
			}
			defer func() { testHookSweepCellsRead = nil }()
			if rep, err := r.Reap(); err != nil || rep.Swept != 0 {
				t.Fatalf("sweep during the move: %+v %v, want nothing swept", rep, err)
			}
			if !ran {
				t.Fatal("the hook did not run")
			}
			if bb, err := r.buffer(h); err != nil || bb.Refs() != 1 {
				t.Fatalf("the moved message after the sweep: %v (refs %d), want its one reference", err, bb.Refs())
			}
		})
	}
}

// TestSweepFirstTryPopDuringSweep: the first TryPop in a region (whose reference no record
// names, which turns the sweep off) happens while a sweep is already past its check of that
// flag, before it reads the cells. The sweep must notice and free nothing: the popped buffer
// stays the popper's.
func TestSweepFirstTryPopDuringSweep(t *testing.T) {
	r := newUnitRegion(t, reapConfig())
	sub := attachUnit(t, r, "sub")
	in, err := sub.OpenInbox(InboxConfig{Capacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	b, err := sub.alloc(8)
	if err != nil {
		t.Fatal(err)
	}
	h := b.Handle()
	if err := in.deliver(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if err := sub.unloan(h); err != nil {
		t.Fatal(err)
	}
	if rep, err := r.Reap(); err != nil || rep.Swept != 0 { // the candidate is seen once
		t.Fatalf("first sweep: %+v %v", rep, err)
	}
	ran := false
	testHookSweepStatesRead = func() {
		testHookSweepStatesRead = nil
		ran = true
		if got, ok, err := in.tryPop(); got != h || !ok || err != nil {
			t.Fatalf("TryPop during the sweep: %v %v %v", got, ok, err)
		}
	}
	defer func() { testHookSweepStatesRead = nil }()
	if rep, err := r.Reap(); err != nil || rep.Swept != 0 {
		t.Fatalf("sweep during the first TryPop: %+v %v, want nothing swept", rep, err)
	}
	if !ran {
		t.Fatal("the hook did not run")
	}
	if err := r.release(h); err != nil {
		t.Fatalf("release of the popped message after the sweep: %v", err)
	}
}
