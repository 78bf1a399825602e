package shm

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// inboxConfig has room for the inbox tests' messages in the smallest class.
func inboxConfig() Config {
	c := unitConfig()
	c.Classes = []Class{{Size: 64, Count: 256}, {Size: 256, Count: 8}}
	c.InboxCapacity = 64
	c.Participants = 8
	return c
}

// send loans a buffer, records seq and topic in it, pushes one reference to in and ends the
// loan: the publisher's side of a delivery. On a failed push the reference is given back, so
// the buffer is free again unless the push succeeded. Odd sequence numbers go through Push
// (with a reference added beforehand), even ones through Deliver (which adds it itself), so
// that every test built on send exercises both.
func send(ctx context.Context, r *Region, p *Participant, in *Inbox, topic uint32, seq uint64) (Handle, error) {
	b, err := p.Alloc(8)
	if err != nil {
		return 0, err
	}
	h := b.Handle()
	b.SetMeta(Meta{Len: 8, Topic: topic, Seq: seq})
	var perr error
	if seq%2 == 0 {
		perr = in.Deliver(ctx, h)
	} else {
		if err := r.AddRefs(h, 1); err != nil {
			return h, err
		}
		if perr = in.Push(ctx, h); perr != nil {
			if err := r.Release(h); err != nil {
				return h, err
			}
		}
	}
	if err := p.Unloan(h); err != nil {
		return h, err
	}
	return h, perr
}

// receive checks and releases a handle taken from an inbox and returns its Meta.
func receive(r *Region, h Handle) (Meta, error) {
	b, err := r.Buffer(h)
	if err != nil {
		return Meta{}, err
	}
	m := b.Meta()
	return m, r.Release(h)
}

func allocated(r *Region) int {
	n := 0
	for _, c := range must(r.CountAllocated()) {
		n += c
	}
	return n
}

func statsOf(r *Region, id InboxID) (InboxStats, bool) {
	for _, s := range must(r.InboxStats()) {
		if s.ID == id {
			return s, true
		}
	}
	return InboxStats{}, false
}

func expiredContext() context.Context {
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	cancel()
	return ctx
}

func TestInboxModel(t *testing.T) {
	for _, policy := range []Policy{DropOldest, DropNewest, Block} {
		for _, seed := range modelSeeds() {
			t.Run(fmt.Sprintf("%v/%d", policy, seed), func(t *testing.T) { inboxModel(t, policy, seed, 2000) })
		}
	}
}

func inboxModel(t *testing.T, policy Policy, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, uint64(policy)))
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "producer")
	q := attachUnit(t, r, "consumer")
	capacity := 2 << rng.IntN(4) // 2 to 16
	in, err := q.OpenInbox(InboxConfig{Capacity: capacity, Policy: policy, Pattern: "model.>"})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := r.Inbox(in.ID()) // the producer's own handle on the inbox
	if err != nil {
		t.Fatal(err)
	}
	if out.Capacity() != capacity || out.Policy() != policy || in.ID() != out.ID() {
		t.Fatalf("Region.Inbox: capacity %d policy %v id %v", out.Capacity(), out.Policy(), out.ID())
	}

	var (
		model                         []uint64 // sequence numbers waiting, oldest first
		seq, pushed, popped           uint64
		dropOld, dropNew, dropTimeout uint64
		step                          int
		ctxBackground, ctxExpired     = context.Background(), expiredContext()
		fail                          = func(format string, args ...any) {
			t.Helper()
			t.Fatalf("policy %v capacity %d seed %d step %d: %s (rerun with -offq.seed=%d)",
				policy, capacity, seed, step, fmt.Sprintf(format, args...), seed)
		}
	)
	for step = 0; step < steps; step++ {
		if rng.IntN(100) < 55 { // push
			seq++
			ctx := ctxBackground
			if policy == Block {
				ctx = ctxExpired // a full Block inbox must time out at once, not wait
			}
			_, err := send(ctx, r, p, &out, 1, seq)
			full := len(model) == capacity
			switch {
			case !full && err != nil:
				fail("push %d into %d/%d: %v", seq, len(model), capacity, err)
			case !full:
				model = append(model, seq)
				pushed++
			case policy == DropOldest:
				if err != nil {
					fail("push %d into a full DropOldest inbox: %v", seq, err)
				}
				model = append(model[1:], seq)
				pushed++
				dropOld++
			case policy == DropNewest:
				if !errors.Is(err, ErrFull) {
					fail("push %d into a full DropNewest inbox: %v, want ErrFull", seq, err)
				}
				dropNew++
			case policy == Block:
				if !errors.Is(err, ErrTimeout) {
					fail("push %d into a full Block inbox with an expired context: %v, want ErrTimeout", seq, err)
				}
				dropTimeout++
			}
		} else { // pop
			h, ok, err := in.TryPop()
			if err != nil {
				fail("TryPop: %v", err)
			}
			if ok != (len(model) > 0) {
				fail("TryPop ok=%v with %d messages waiting", ok, len(model))
			}
			if ok {
				m, err := receive(r, h)
				if err != nil {
					fail("received handle %v: %v", h, err)
				}
				if m.Seq != model[0] || m.Topic != 1 || m.Len != 8 {
					fail("popped seq %d, model says %d", m.Seq, model[0])
				}
				model = model[1:]
				popped++
			}
		}

		if in.Len() != len(model) || out.Len() != len(model) {
			fail("Len %d/%d, model %d", in.Len(), out.Len(), len(model))
		}
		if n := allocated(r); n != len(model) {
			fail("%d buffers allocated, %d messages waiting", n, len(model))
		}
		s, ok := statsOf(r, in.ID())
		if !ok {
			fail("InboxStats does not list the inbox")
		}
		want := InboxStats{
			ID: in.ID(), Owner: q.Index(), Pattern: "model.>", Policy: policy, Capacity: capacity,
			Depth: len(model), Pushed: pushed, Popped: popped,
			DropOldest: dropOld, DropNewest: dropNew, DropTimeout: dropTimeout,
		}
		if s != want {
			fail("InboxStats\n got %+v\nwant %+v", s, want)
		}
	}
	// Whatever is left is released by Close.
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if n := allocated(r); n != 0 {
		fail("%d buffers allocated after Close", n)
	}
}

// TestInboxBlockLimit: under Block a full inbox makes the producer wait at most BlockLimit.
func TestInboxBlockLimit(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	in, err := p.OpenInbox(InboxConfig{Capacity: 2, Policy: Block, BlockLimit: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	for i := range 2 {
		if _, err := send(context.Background(), r, p, &in, 0, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	_, err = send(context.Background(), r, p, &in, 0, 2)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("push into a full Block inbox: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d < 20*time.Millisecond || d > 10*time.Second {
		t.Fatalf("Push gave up after %v; BlockLimit is 20ms", d)
	}
	// A context deadline shorter than the limit wins.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if _, err := send(ctx, r, p, &in, 0, 3); !errors.Is(err, ErrTimeout) {
		t.Fatalf("push with a short context deadline: %v, want ErrTimeout", err)
	}
	if s, _ := statsOf(r, in.ID()); s.DropTimeout != 2 || s.Depth != 2 {
		t.Fatalf("stats %+v", s)
	}
	if n := allocated(r); n != 2 {
		t.Fatalf("%d buffers allocated, want the 2 waiting", n)
	}
}

// TestInboxMPSC: four producers, each through its own mapping of the region as if it were
// another process, push into one inbox; the consumer must see every message exactly once and
// each producer's messages in order.
func TestInboxMPSC(t *testing.T) {
	for _, policy := range []Policy{Block, DropOldest} {
		t.Run(policy.String(), func(t *testing.T) { inboxMPSC(t, policy) })
	}
}

func inboxMPSC(t *testing.T, policy Policy) {
	const producers, perProducer = 4, 3000
	r := newUnitRegion(t, inboxConfig())
	c := attachUnit(t, r, "consumer")
	in, err := c.OpenInbox(InboxConfig{Capacity: 8, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: no producer outlives the test
	defer cancel()
	for w := range producers {
		rw, err := Open("unit", Options{Dir: filepath.Dir(r.Path())})
		if err != nil {
			t.Fatal(err)
		}
		p := attachUnit(t, rw, fmt.Sprint("producer", w))
		t.Cleanup(func() { rw.Close() }) // after p detaches (cleanups run last-in first-out)
		out, err := rw.Inbox(in.ID())
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perProducer {
				for {
					_, err := send(ctx, rw, p, &out, uint32(w), uint64(i+1))
					if errors.Is(err, ErrPoolExhausted) && ctx.Err() == nil {
						continue // the consumer is behind; its releases free buffers
					}
					if err != nil {
						t.Errorf("producer %d push %d: %v", w, i, err)
						return
					}
					break
				}
			}
		}()
	}

	last := make([]uint64, producers)
	seen := make([]int, producers)
	total := 0
	// waitCtx ends when the last producer returns, so that a Pop on the drained ring gives up.
	waitCtx, producersDone := context.WithCancel(ctx)
	go func() { wg.Wait(); producersDone() }()
	waiter := Waiter{Strategy: SpinThenSleep, Spin: 20 * time.Microsecond}
	for {
		h, err := in.Pop(waitCtx, waiter)
		if errors.Is(err, context.Canceled) && ctx.Err() == nil {
			var ok bool
			if h, ok, err = in.TryPop(); err == nil && !ok {
				break // every producer is done and the ring is empty
			}
		}
		if err != nil {
			t.Fatalf("consumer after %d messages: %v", total, err)
		}
		m, err := receive(r, h)
		if err != nil {
			t.Fatalf("consumer: %v", err)
		}
		w := m.Topic
		if w >= producers || m.Seq <= last[w] {
			t.Fatalf("producer %d: message %d after %d", w, m.Seq, last[w])
		}
		if policy == Block && m.Seq != last[w]+1 {
			t.Fatalf("producer %d: message %d after %d: lost or reordered", w, m.Seq, last[w])
		}
		last[w] = m.Seq
		seen[w]++
		total++
	}
	s, _ := statsOf(r, in.ID())
	if policy == Block && (total != producers*perProducer || s.DropTimeout != 0) {
		t.Fatalf("received %d of %d; stats %+v", total, producers*perProducer, s)
	}
	if uint64(total)+s.DropOldest != producers*perProducer || s.Popped != uint64(total) || s.Pushed != producers*perProducer {
		t.Fatalf("received %d + dropped %d != sent %d; stats %+v", total, s.DropOldest, producers*perProducer, s)
	}
	for w := range producers {
		if policy == Block && last[w] != perProducer {
			t.Errorf("producer %d: last message received %d, want %d", w, last[w], perProducer)
		}
	}
	t.Logf("%v: received %d, per producer %v, dropped %d", policy, total, seen, s.DropOldest)
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("%d buffers allocated at the end", n)
	}
}

func TestInboxCloseReleasesAndFencesOldHandles(t *testing.T) {
	cfg := inboxConfig()
	cfg.Inboxes = 1 // so that reopening takes the same entry
	r := newUnitRegion(t, cfg)
	p := attachUnit(t, r, "producer")
	c := attachUnit(t, r, "consumer")
	d := attachUnit(t, r, "next consumer")
	bg := context.Background()

	in, err := c.OpenInbox(InboxConfig{Capacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.OpenInbox(InboxConfig{}); !errors.Is(err, ErrTableFull) {
		t.Fatalf("OpenInbox on a full table: %v, want ErrTableFull", err)
	}
	out, err := r.Inbox(in.ID())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := send(bg, r, p, &out, 0, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := allocated(r); n != 3 {
		t.Fatalf("%d allocated before Close", n)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if err := in.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("Close left %d buffers allocated", n)
	}
	if _, ok := statsOf(r, in.ID()); ok || len(must(r.InboxStats())) != 0 {
		t.Fatal("a closed inbox is listed in InboxStats")
	}
	checkFenced := func(when string, consumerToo bool) {
		t.Helper()
		held := allocated(r)
		if _, err := send(bg, r, p, &out, 0, 99); !errors.Is(err, ErrClosed) {
			t.Fatalf("%s: Push with the old Inbox: %v, want ErrClosed", when, err)
		}
		if n := allocated(r); n != held {
			t.Fatalf("%s: a refused push changed the buffers allocated from %d to %d", when, held, n)
		}
		if _, err := r.Inbox(in.ID()); !errors.Is(err, ErrClosed) {
			t.Fatalf("%s: Region.Inbox(old id): %v, want ErrClosed", when, err)
		}
		if !consumerToo {
			return
		}
		if _, _, err := in.TryPop(); !errors.Is(err, ErrClosed) {
			t.Fatalf("%s: TryPop on the old Inbox: %v, want ErrClosed", when, err)
		}
		ctx, cancel := context.WithTimeout(bg, 10*time.Second)
		defer cancel()
		if _, err := in.Pop(ctx, Waiter{Strategy: Sleep}); !errors.Is(err, ErrClosed) {
			t.Fatalf("%s: Pop on the old Inbox: %v, want ErrClosed", when, err)
		}
		if n := allocated(r); n != held {
			t.Fatalf("%s: the old consumer changed the buffers allocated from %d to %d", when, held, n)
		}
	}
	checkFenced("after Close", true)

	// Someone else reopens the entry: the old handles must not reach the new ring.
	in2, err := d.OpenInbox(InboxConfig{Capacity: 4, Policy: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	if in2.ID().Index() != in.ID().Index() || in2.ID() == in.ID() {
		t.Fatalf("reopened entry: old id %#x, new id %#x", in.ID(), in2.ID())
	}
	checkFenced("after the entry was reopened", true)
	if _, err := send(bg, r, p, &in2, 0, 7); err != nil {
		t.Fatal(err)
	}
	checkFenced("after the entry was reopened and used", true)
	h, ok, err := in2.TryPop()
	if err != nil || !ok {
		t.Fatalf("new inbox TryPop: %v %v", ok, err)
	}
	if m, err := receive(r, h); err != nil || m.Seq != 7 {
		t.Fatalf("new inbox got %+v, %v", m, err)
	}
	if err := in2.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestInboxStaleProducerCannotEvict: a producer holding an Inbox of a closed generation must
// not evict messages of whoever reopened the entry, even when the new ring is full.
// (Its eviction must not run on the new ring, leave a marker of the old generation there and
// then deliver into it.)
func TestInboxStaleProducerCannotEvict(t *testing.T) {
	cfg := inboxConfig()
	cfg.Inboxes = 1
	r := newUnitRegion(t, cfg)
	p := attachUnit(t, r, "producer")
	c := attachUnit(t, r, "consumer")
	bg := context.Background()
	old, err := c.OpenInbox(InboxConfig{Capacity: 4, Policy: DropOldest})
	if err != nil {
		t.Fatal(err)
	}
	stale, err := r.Inbox(old.ID())
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	in, err := c.OpenInbox(InboxConfig{Capacity: 4, Policy: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	for i := range 4 {
		if _, err := send(bg, r, p, &in, 0, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := send(bg, r, p, &stale, 0, 99); !errors.Is(err, ErrClosed) {
		t.Errorf("Push with a stale DropOldest Inbox into a full reopened ring: %v, want ErrClosed", err)
	}
	s, _ := statsOf(r, in.ID())
	if s.Depth != 4 || s.DropOldest != 0 {
		t.Errorf("the stale producer changed the new ring: %+v", s)
	}
	for i := range 4 {
		h, ok, err := in.TryPop()
		if err != nil || !ok {
			t.Fatalf("TryPop %d: %v %v", i, ok, err)
		}
		if m, err := receive(r, h); err != nil || m.Seq != uint64(i) {
			t.Errorf("message %d: %+v %v", i, m, err)
		}
	}
}

func TestOpenInboxErrors(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	for _, c := range []InboxConfig{
		{Capacity: 3},
		{Capacity: 1},
		{Capacity: -2},
		{Capacity: 128}, // above the region's InboxCapacity
		{Policy: Block + 1},
		{Pattern: strings.Repeat("x", patternSize+1)},
	} {
		if in, err := p.OpenInbox(c); err == nil {
			in.Close()
			t.Errorf("OpenInbox(%+v) accepted", c)
		}
	}
	in, err := p.OpenInbox(InboxConfig{Pattern: strings.Repeat("x", patternSize)})
	if err != nil {
		t.Fatal(err)
	}
	if in.Capacity() != int(inboxConfig().InboxCapacity) || in.Policy() != DropOldest {
		t.Fatalf("defaults: capacity %d policy %v", in.Capacity(), in.Policy())
	}
	if s, _ := statsOf(r, in.ID()); s.Pattern != strings.Repeat("x", patternSize) {
		t.Fatalf("pattern %q", s.Pattern)
	}
	in.Close()
	if _, err := r.Inbox(InboxID(r.cfg.Inboxes)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Region.Inbox with an index out of range: %v", err)
	}
	for _, pol := range []Policy{DropOldest, DropNewest, Block, 7} {
		if pol.String() == "" || (pol == 7 && pol.String() != "Policy(7)") {
			t.Errorf("Policy(%d).String() = %q", uint32(pol), pol.String())
		}
	}
}

// TestInboxScribbledHeader: a capacity or policy another process scribbled over is refused by
// Region.Inbox and counted, never used to index the cells.
func TestInboxScribbledHeader(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	in, err := p.OpenInbox(InboxConfig{Capacity: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	hd := in.v.hdr
	for _, bad := range []func(){
		func() { hd.capacity = 3 },
		func() { hd.capacity = 0 },
		func() { hd.capacity = 1 << 30 },
		func() { hd.capacity = 8; hd.policy = 9 },
	} {
		bad()
		if _, err := r.Inbox(in.ID()); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Region.Inbox with capacity %d policy %d: %v", hd.capacity, hd.policy, err)
		}
	}
	if hd.corrupt.Load() != 4 {
		t.Errorf("corrupt counter %d, want 4", hd.corrupt.Load())
	}
	hd.capacity, hd.policy = 8, uint32(DropOldest)
}

// TestInboxCorruptCell: a cell overwritten with a value no producer or consumer writes is
// counted and skipped; the next valid message still arrives.
func TestInboxCorruptCell(t *testing.T) {
	for _, tc := range []struct {
		name    string
		garbage func(in *Inbox, pos uint64) uint64
	}{
		{"marker for another position", func(in *Inbox, pos uint64) uint64 { return in.empty(pos + 5) }},
		{"marker for a past lap", func(in *Inbox, pos uint64) uint64 { return in.empty(pos - in.cap) }},
		{"marker for the position after", func(in *Inbox, pos uint64) uint64 { return in.empty(pos + 1) }},
		{"reserved marker", func(in *Inbox, pos uint64) uint64 { return markBit | parityBit | 12345 }},
		{"all ones", func(*Inbox, uint64) uint64 { return ^uint64(0) }},
		// Must not be taken for the inbox having been closed.
		{"marker of another generation", func(in *Inbox, pos uint64) uint64 {
			return markBit | ((in.gen+3)&inboxGenMask)<<48 | pos&posMask
		}},
		// Must not be taken for a head that lags (which moved the head past the tail, after
		// which Push looped forever or failed with ErrFull).
		{"handle of the wrong lap", func(in *Inbox, pos uint64) uint64 { return 0x40 | in.parity(pos+in.cap) }},
		// The consumer must not take the ring for empty while the tail is past the head.
		{"own empty marker over a message", func(in *Inbox, pos uint64) uint64 { return in.empty(pos) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, filled := range []bool{false, true} {
				if !filled && strings.HasPrefix(tc.name, "own empty marker") {
					continue // over an empty cell it is no change at all
				}
				t.Run(fmt.Sprintf("ring-with-messages=%v", filled), func(t *testing.T) {
					corruptCell(t, filled, tc.garbage)
				})
			}
		})
	}
}

func corruptCell(t *testing.T, filled bool, garbage func(in *Inbox, pos uint64) uint64) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	bg := context.Background()
	for _, policy := range []Policy{DropOldest, DropNewest, Block} {
		in, err := p.OpenInbox(InboxConfig{Capacity: 4, Policy: policy, BlockLimit: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var lost Handle // the message whose cell is overwritten
		head := in.v.hdr.head.Load()
		if filled {
			if lost, err = send(bg, r, p, &in, 0, 1); err != nil {
				t.Fatal(err)
			}
			if _, err := send(bg, r, p, &in, 0, 2); err != nil {
				t.Fatal(err)
			}
		}
		in.cell(head).Store(garbage(&in, head))
		before := in.v.hdr.corrupt.Load()
		regionBefore := r.hdr.corrupt.Load()

		var got []uint64
		var popErr error
		within(t, r, 10*time.Second, policy.String()+": TryPop after a corrupt cell", func() {
			for range 4 * in.cap {
				h, ok, err := in.TryPop()
				if err != nil {
					popErr = err
					return
				}
				if !ok {
					return
				}
				m, err := receive(r, h)
				if err != nil {
					popErr = fmt.Errorf("received %v: %w", h, err)
					return
				}
				got = append(got, m.Seq)
			}
		})
		if popErr != nil {
			t.Fatalf("%v: %v", policy, popErr)
		}
		want := "[]"
		if filled {
			want = "[2]" // message 1 was destroyed by the scribble
		}
		if fmt.Sprint(got) != want {
			t.Errorf("%v: received %v, want %v", policy, got, want)
		}
		if in.v.hdr.corrupt.Load() <= before || r.hdr.corrupt.Load() <= regionBefore {
			t.Errorf("%v: the corrupt cell was not counted (inbox %d, region %d)", policy, in.v.hdr.corrupt.Load(), r.hdr.corrupt.Load())
		}
		if s, _ := statsOf(r, in.ID()); s.Corrupt == 0 {
			t.Errorf("%v: InboxStats.Corrupt = 0", policy)
		}
		// The ring works again: new messages go through, in order.
		var pushErr error
		within(t, r, 10*time.Second, policy.String()+": Push after a corrupt cell", func() {
			for i := range in.cap {
				if _, pushErr = send(bg, r, p, &in, 0, 3+i); pushErr != nil {
					return
				}
			}
		})
		if pushErr != nil {
			t.Fatalf("%v: push after recovery: %v", policy, pushErr)
		}
		for i := range in.cap {
			h, ok, err := in.TryPop()
			if err != nil || !ok {
				t.Fatalf("%v: TryPop %d after recovery: %v %v", policy, i, ok, err)
			}
			if m, err := receive(r, h); err != nil || m.Seq != 3+i {
				t.Errorf("%v: after recovery got %+v, %v; want seq %d", policy, m, err, 3+i)
			}
		}
		in.Close()
		if lost != 0 { // its only reference was in the overwritten cell
			if err := r.Release(lost); err != nil {
				t.Fatal(err)
			}
		}
		if n := allocated(r); n != 0 {
			t.Fatalf("%v: %d buffers allocated at the end", policy, n)
		}
	}
}

// TestInboxCorruptCellBeforeProducer: the scribbled cell is the one the next producer fills.
// The producer must not hang and must not report the inbox closed; whether it repairs the
// cell and delivers, or refuses, every message it delivered arrives, in order, and the ring
// goes on.
func TestInboxCorruptCellBeforeProducer(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	bg := context.Background()
	for _, tc := range []struct {
		name    string
		garbage func(in *Inbox, pos uint64) uint64
	}{
		{"marker for another position", func(in *Inbox, pos uint64) uint64 { return in.empty(pos + 3) }},
		{"marker for a past lap", func(in *Inbox, pos uint64) uint64 { return in.empty(pos - in.cap) }},
		{"marker for the next lap", func(in *Inbox, pos uint64) uint64 { return in.empty(pos + in.cap) }},
		{"reserved marker", func(*Inbox, uint64) uint64 { return markBit | parityBit | 1 }},
		{"marker of another generation", func(in *Inbox, pos uint64) uint64 {
			return markBit | ((in.gen+1)&inboxGenMask)<<48 | pos&posMask
		}},
		{"handle of the wrong lap", func(in *Inbox, pos uint64) uint64 { return 0x40 | in.parity(pos+in.cap) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, policy := range []Policy{DropOldest, DropNewest, Block} {
				in, err := p.OpenInbox(InboxConfig{Capacity: 4, Policy: policy, BlockLimit: time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := send(bg, r, p, &in, 0, 1); err != nil {
					t.Fatal(err)
				}
				tail := in.v.hdr.tail.Load()
				in.cell(tail).Store(tc.garbage(&in, tail))
				var pushErr error
				within(t, r, 10*time.Second, policy.String()+": Push into a scribbled cell", func() {
					_, pushErr = send(bg, r, p, &in, 0, 2)
				})
				if errors.Is(pushErr, ErrClosed) {
					t.Errorf("%v: push into a scribbled cell of an open inbox: %v", policy, pushErr)
				}
				want := []uint64{1, 2}
				if pushErr != nil {
					want = want[:1]
				}
				// More messages, then the consumer takes everything.
				var err2 error
				within(t, r, 10*time.Second, policy.String()+": Push after the scribble", func() {
					_, err2 = send(bg, r, p, &in, 0, 3)
				})
				if err2 == nil {
					want = append(want, 3)
				}
				var got []uint64
				within(t, r, 10*time.Second, policy.String()+": TryPop past a scribbled cell", func() {
					for range 8 {
						h, ok, err := in.TryPop()
						if err != nil || !ok {
							return
						}
						if m, err := receive(r, h); err == nil {
							got = append(got, m.Seq)
						}
					}
				})
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%v: received %v, want %v (push errors %v, %v)", policy, got, want, pushErr, err2)
				}
				if pushErr == nil && err2 == nil && in.v.hdr.corrupt.Load() == 0 {
					t.Errorf("%v: the scribbled cell was repaired without being counted", policy)
				}
				// The ring is whole again.
				if _, err := send(bg, r, p, &in, 0, 4); err != nil {
					t.Fatalf("%v: push after the repair: %v", policy, err)
				}
				h, ok, err := in.TryPop()
				if err != nil || !ok {
					t.Fatalf("%v: TryPop after the repair: %v %v", policy, ok, err)
				}
				if m, err := receive(r, h); err != nil || m.Seq != 4 {
					t.Errorf("%v: after the repair got %+v, %v", policy, m, err)
				}
				in.Close()
				if n := allocated(r); n != 0 {
					t.Fatalf("%v: %d buffers allocated at the end", policy, n)
				}
			}
		})
	}
}

// TestInboxGarbageHandle: a handle-shaped word in a cell is returned by TryPop (the ring
// cannot tell it from a real handle) and then refused by Region.Buffer and Release.
func TestInboxGarbageHandle(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	in, err := p.OpenInbox(InboxConfig{Capacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	bg := context.Background()
	probe, err := p.Alloc(1) // a live buffer, to derive garbage from
	if err != nil {
		t.Fatal(err)
	}
	defer p.Unloan(probe.Handle())
	real := probe.Handle()
	for _, garbage := range []Handle{
		makeHandle(8, 1),                           // inside the header
		makeHandle(real.offset()+8, real.gen()),    // misaligned
		makeHandle(real.offset(), real.gen()+1),    // stale generation
		makeHandle(uint64(r.Size())+64, 1),         // past the end
		makeHandle(r.pools[0].slots+64*1000, 1),    // past the pool
		makeHandle(r.pools[1].slots, real.gen()+9), // a free slot
	} {
		// A message whose cell is then overwritten: its reference is lost with the cell.
		lost, err := send(bg, r, p, &in, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := send(bg, r, p, &in, 0, 2); err != nil {
			t.Fatal(err)
		}
		head := in.v.hdr.head.Load()
		in.cell(head).Store(uint64(garbage) | in.parity(head))
		before := must(r.CountAllocated())
		h, ok, err := in.TryPop()
		if err != nil || !ok || h != garbage {
			t.Fatalf("TryPop = %v %v %v, want the garbage handle %v", h, ok, err, garbage)
		}
		if _, err := r.Buffer(h); !errors.Is(err, ErrBadHandle) {
			t.Errorf("Buffer(%v): %v, want ErrBadHandle", h, err)
		}
		if err := r.Release(h); !errors.Is(err, ErrBadHandle) {
			t.Errorf("Release(%v): %v, want ErrBadHandle", h, err)
		}
		if fmt.Sprint(before) != fmt.Sprint(must(r.CountAllocated())) {
			t.Errorf("a garbage handle changed the pools: %v -> %v", before, must(r.CountAllocated()))
		}
		// The message behind it is intact.
		h, ok, err = in.TryPop()
		if err != nil || !ok {
			t.Fatalf("TryPop after the garbage: %v %v", ok, err)
		}
		if m, err := receive(r, h); err != nil || m.Seq != 2 {
			t.Fatalf("message after the garbage: %+v %v", m, err)
		}
		if err := r.Release(lost); err != nil {
			t.Fatal(err)
		}
	}
	if n := allocated(r); n != 1 {
		t.Fatalf("%d buffers allocated at the end, want only the probe", n)
	}
	// Push refuses words that are not handles at all.
	for _, h := range []Handle{0, 1 << 63, 1 << 62, ^Handle(0)} {
		if err := in.Push(bg, h); !errors.Is(err, ErrBadHandle) {
			t.Errorf("Push(%#x): %v, want ErrBadHandle", uint64(h), err)
		}
	}
}

// TestDeliverReferences: Deliver adds the inbox's reference only when the message is in the
// ring. A delivery that fails (full, closed) or is still waiting for room under Block leaves
// the count at the caller's own reference, so a publisher killed there leaves nothing behind
// but its loan.
func TestDeliverReferences(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	refs := func(h Handle) int {
		t.Helper()
		b, err := r.Buffer(h)
		if err != nil {
			t.Fatal(err)
		}
		return b.Refs()
	}
	loan := func() Handle {
		t.Helper()
		b, err := p.Alloc(8)
		if err != nil {
			t.Fatal(err)
		}
		return b.Handle()
	}

	newest, err := p.OpenInbox(InboxConfig{Capacity: 2, Policy: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	h := loan()
	for i := range 2 {
		if err := newest.Deliver(context.Background(), h); err != nil {
			t.Fatal(err)
		}
		if n := refs(h); n != 2+i {
			t.Fatalf("after %d deliveries: %d references, want %d", i+1, n, 2+i)
		}
	}
	if err := newest.Deliver(context.Background(), h); !errors.Is(err, ErrFull) {
		t.Fatalf("deliver into a full DropNewest inbox: %v, want ErrFull", err)
	}
	if n := refs(h); n != 3 {
		t.Fatalf("after a failed delivery: %d references, want 3", n)
	}

	// Waiting for room under Block: no reference is taken until there is room.
	block, err := p.OpenInbox(InboxConfig{Capacity: 2, Policy: Block})
	if err != nil {
		t.Fatal(err)
	}
	g := loan()
	for range 2 {
		b, err := r.Buffer(g)
		if err != nil {
			t.Fatal(err)
		}
		if err := block.DeliverBuffer(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- block.Deliver(ctx, g) }()
	for s, _ := statsOf(r, block.ID()); s.Blocked == 0; s, _ = statsOf(r, block.ID()) {
		if ctx.Err() != nil {
			t.Fatal("the producer never waited for room")
		}
		time.Sleep(100 * time.Microsecond)
	}
	if n := refs(g); n != 3 {
		t.Fatalf("while a delivery waits for room: %d references, want 3 (loan + two queued)", n)
	}
	got, ok, err := block.TryPop()
	if err != nil || !ok || got != g {
		t.Fatalf("pop: %v %v %v", got, ok, err)
	}
	if err := r.Release(got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the waiting delivery: %v", err)
	}
	if n := refs(g); n != 3 {
		t.Fatalf("after the waiting delivery: %d references, want 3", n)
	}

	// A closed inbox: ErrClosed, nothing added.
	stale, err := r.Inbox(newest.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := newest.Close(); err != nil {
		t.Fatal(err)
	}
	if n := refs(h); n != 1 {
		t.Fatalf("after closing the inbox: %d references, want the loan's", n)
	}
	if err := stale.Deliver(context.Background(), h); !errors.Is(err, ErrClosed) {
		t.Fatalf("deliver into a closed inbox: %v, want ErrClosed", err)
	}
	if n := refs(h); n != 1 {
		t.Fatalf("after delivering into a closed inbox: %d references, want 1", n)
	}
	// A handle that names no buffer.
	if err := block.Deliver(context.Background(), h+1); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("deliver a misaligned handle: %v, want ErrBadHandle", err)
	}
	for _, x := range []Handle{h, g} {
		if err := p.Unloan(x); err != nil {
			t.Fatal(err)
		}
	}
	if err := block.Close(); err != nil {
		t.Fatal(err)
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("%d buffers allocated at the end", n)
	}
}
