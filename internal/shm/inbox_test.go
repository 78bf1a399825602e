package shm

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
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
	b, err := p.alloc(8)
	if err != nil {
		return 0, err
	}
	h := b.Handle()
	b.SetMeta(Meta{Len: 8, Topic: topic, Seq: seq})
	var perr error
	if seq%2 == 0 {
		perr = in.deliver(ctx, h)
	} else {
		if err := r.addRefsHandle(h, 1); err != nil {
			return h, err
		}
		if perr = in.pushHandle(ctx, h); perr != nil {
			if err := r.release(h); err != nil {
				return h, err
			}
		}
	}
	if err := p.unloan(h); err != nil {
		return h, err
	}
	return h, perr
}

// sendN sends messages 0..n-1 on topic 0 to in with send, failing the test on an error.
func sendN(t *testing.T, r *Region, p *Participant, in *Inbox, n int) {
	t.Helper()
	for i := range n {
		if _, err := send(context.Background(), r, p, in, 0, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// receive checks and releases a handle taken from an inbox and returns its Meta.
func receive(r *Region, h Handle) (Meta, error) {
	b, err := r.buffer(h)
	if err != nil {
		return Meta{}, err
	}
	m := b.Meta()
	return m, r.release(h)
}

func allocated(r *Region) int {
	n := 0
	for _, c := range r.CountAllocated() {
		n += c
	}
	return n
}

func statsOf(r *Region, id InboxID) (InboxStats, bool) {
	for _, s := range r.InboxStats() {
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
	for _, policy := range []Overflow{DropOldest, DropNewest, Block} {
		for _, seed := range modelSeeds() {
			t.Run(fmt.Sprintf("%v/%d", policy, seed), func(t *testing.T) { inboxModel(t, policy, seed, 2000) })
		}
	}
}

func inboxModel(t *testing.T, policy Overflow, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, uint64(policy)))
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "producer")
	q := attachUnit(t, r, "consumer")
	capacity := 2 << rng.IntN(4) // 2 to 16
	in, err := q.OpenInbox(InboxConfig{Capacity: capacity, Overflow: policy, Pattern: "model.>"})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	out, err := r.inbox(in.ID()) // the producer's own handle on the inbox
	if err != nil {
		t.Fatal(err)
	}
	if out.Capacity() != capacity || out.Overflow() != policy || in.ID() != out.ID() {
		t.Fatalf("Region.Inbox: capacity %d policy %v id %v", out.Capacity(), out.Overflow(), out.ID())
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
			h, ok, err := in.tryPop()
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
			ID: in.ID(), Owner: q.Index(), Pattern: "model.>", Overflow: policy, Capacity: capacity,
			Depth: len(model), Pushed: pushed, Popped: popped,
			DropOldest: dropOld, DropNewest: dropNew, DropTimeout: dropTimeout,
		}
		if len(s.AgeBuckets) != ageBuckets {
			fail("InboxStats has %d age buckets", len(s.AgeBuckets))
		}
		s.AgeBuckets, s.AgeSumNanos = nil, 0 // the model does not time its takes
		if !reflect.DeepEqual(s, want) {
			fail("InboxStats\n got %+v\nwant %+v", s, want)
		}
	}
	// Whatever is left is released by Close.
	if err := in.close(); err != nil {
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
	in, err := p.OpenInbox(InboxConfig{Capacity: 2, Overflow: Block, BlockLimit: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
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
	for _, policy := range []Overflow{Block, DropOldest} {
		t.Run(policy.String(), func(t *testing.T) { inboxMPSC(t, policy) })
	}
}

func inboxMPSC(t *testing.T, policy Overflow) {
	const producers, perProducer = 4, 3000
	r := newUnitRegion(t, inboxConfig())
	c := attachUnit(t, r, "consumer")
	in, err := c.OpenInbox(InboxConfig{Capacity: 8, Overflow: policy})
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
		out, err := rw.inbox(in.ID())
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
		h, err := in.pop(waitCtx, waiter)
		if errors.Is(err, context.Canceled) && ctx.Err() == nil {
			var ok bool
			if h, ok, err = in.tryPop(); err == nil && !ok {
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
	if err := in.close(); err != nil {
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
	out, err := r.inbox(in.ID())
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
	if err := in.close(); err != nil {
		t.Fatal(err)
	}
	if err := in.close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("Close left %d buffers allocated", n)
	}
	if _, ok := statsOf(r, in.ID()); ok || len(r.InboxStats()) != 0 {
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
		if _, err := r.inbox(in.ID()); !errors.Is(err, ErrClosed) {
			t.Fatalf("%s: Region.Inbox(old id): %v, want ErrClosed", when, err)
		}
		if !consumerToo {
			return
		}
		if _, _, err := in.tryPop(); !errors.Is(err, ErrClosed) {
			t.Fatalf("%s: TryPop on the old Inbox: %v, want ErrClosed", when, err)
		}
		ctx, cancel := context.WithTimeout(bg, 10*time.Second)
		defer cancel()
		if _, err := in.pop(ctx, Waiter{Strategy: Sleep}); !errors.Is(err, ErrClosed) {
			t.Fatalf("%s: Pop on the old Inbox: %v, want ErrClosed", when, err)
		}
		if n := allocated(r); n != held {
			t.Fatalf("%s: the old consumer changed the buffers allocated from %d to %d", when, held, n)
		}
	}
	checkFenced("after Close", true)

	// Someone else reopens the entry: the old handles must not reach the new ring.
	in2, err := d.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropNewest})
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
	h, ok, err := in2.tryPop()
	if err != nil || !ok {
		t.Fatalf("new inbox TryPop: %v %v", ok, err)
	}
	if m, err := receive(r, h); err != nil || m.Seq != 7 {
		t.Fatalf("new inbox got %+v, %v", m, err)
	}
	if err := in2.close(); err != nil {
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
	old, err := c.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropOldest})
	if err != nil {
		t.Fatal(err)
	}
	stale, err := r.inbox(old.ID())
	if err != nil {
		t.Fatal(err)
	}
	old.close()
	in, err := c.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
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
		h, ok, err := in.tryPop()
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
		{Overflow: Block + 1},
		{Pattern: strings.Repeat("x", patternSize+1)},
	} {
		if in, err := p.OpenInbox(c); err == nil {
			in.close()
			t.Errorf("OpenInbox(%+v) accepted", c)
		}
	}
	in, err := p.OpenInbox(InboxConfig{Pattern: strings.Repeat("x", patternSize)})
	if err != nil {
		t.Fatal(err)
	}
	if in.Capacity() != int(inboxConfig().InboxCapacity) || in.Overflow() != DropOldest {
		t.Fatalf("defaults: capacity %d policy %v", in.Capacity(), in.Overflow())
	}
	if s, _ := statsOf(r, in.ID()); s.Pattern != strings.Repeat("x", patternSize) {
		t.Fatalf("pattern %q", s.Pattern)
	}
	in.close()
	if _, err := r.inbox(InboxID(r.cfg.Inboxes)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Region.Inbox with an index out of range: %v", err)
	}
	for _, pol := range []Overflow{DropOldest, DropNewest, Block, 7} {
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
	defer in.close()
	hd := in.v.hdr
	for _, bad := range []func(){
		func() { hd.capacity = 3 },
		func() { hd.capacity = 0 },
		func() { hd.capacity = 1 << 30 },
		func() { hd.capacity = 8; hd.policy = 9 },
	} {
		bad()
		if _, err := r.inbox(in.ID()); !errors.Is(err, ErrCorrupt) {
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
			return markBit | ((in.gen+3)&cellGenMask)<<48 | pos&posMask
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
	for _, policy := range []Overflow{DropOldest, DropNewest, Block} {
		in, err := p.OpenInbox(InboxConfig{Capacity: 4, Overflow: policy, BlockLimit: time.Millisecond})
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
				h, ok, err := in.tryPop()
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
			h, ok, err := in.tryPop()
			if err != nil || !ok {
				t.Fatalf("%v: TryPop %d after recovery: %v %v", policy, i, ok, err)
			}
			if m, err := receive(r, h); err != nil || m.Seq != 3+i {
				t.Errorf("%v: after recovery got %+v, %v; want seq %d", policy, m, err, 3+i)
			}
		}
		in.close()
		if lost != 0 { // its only reference was in the overwritten cell
			if err := r.release(lost); err != nil {
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
			return markBit | ((in.gen+1)&cellGenMask)<<48 | pos&posMask
		}},
		{"handle of the wrong lap", func(in *Inbox, pos uint64) uint64 { return 0x40 | in.parity(pos+in.cap) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, policy := range []Overflow{DropOldest, DropNewest, Block} {
				in, err := p.OpenInbox(InboxConfig{Capacity: 4, Overflow: policy, BlockLimit: time.Millisecond})
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
						h, ok, err := in.tryPop()
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
				h, ok, err := in.tryPop()
				if err != nil || !ok {
					t.Fatalf("%v: TryPop after the repair: %v %v", policy, ok, err)
				}
				if m, err := receive(r, h); err != nil || m.Seq != 4 {
					t.Errorf("%v: after the repair got %+v, %v", policy, m, err)
				}
				in.close()
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
	defer in.close()
	bg := context.Background()
	probe, err := p.alloc(1) // a live buffer, to derive garbage from
	if err != nil {
		t.Fatal(err)
	}
	defer p.unloan(probe.Handle())
	real := probe.Handle()
	for _, garbage := range []Handle{
		makeHandle(5, 0, 1), // no such class
		makeHandle(real.class(), real.index(), real.gen()+1), // stale generation
		makeHandle(real.class(), handleIdxMask, 1),           // past the end
		makeHandle(0, r.pools[0].count, 1),                   // just past the pool
		makeHandle(1, 0, real.gen()+9),                       // a free slot
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
		before := r.CountAllocated()
		h, ok, err := in.tryPop()
		if err != nil || !ok || h != garbage {
			t.Fatalf("TryPop = %v %v %v, want the garbage handle %v", h, ok, err, garbage)
		}
		if _, err := r.buffer(h); !errors.Is(err, ErrBadHandle) {
			t.Errorf("Buffer(%v): %v, want ErrBadHandle", h, err)
		}
		if err := r.release(h); !errors.Is(err, ErrBadHandle) {
			t.Errorf("Release(%v): %v, want ErrBadHandle", h, err)
		}
		if fmt.Sprint(before) != fmt.Sprint(r.CountAllocated()) {
			t.Errorf("a garbage handle changed the pools: %v -> %v", before, r.CountAllocated())
		}
		// The message behind it is intact.
		h, ok, err = in.tryPop()
		if err != nil || !ok {
			t.Fatalf("TryPop after the garbage: %v %v", ok, err)
		}
		if m, err := receive(r, h); err != nil || m.Seq != 2 {
			t.Fatalf("message after the garbage: %+v %v", m, err)
		}
		if err := r.release(lost); err != nil {
			t.Fatal(err)
		}
	}
	if n := allocated(r); n != 1 {
		t.Fatalf("%d buffers allocated at the end, want only the probe", n)
	}
	// Push refuses words that are not handles at all.
	for _, h := range []Handle{0, 1 << 63, 1 << 62, ^Handle(0)} {
		if err := in.pushHandle(bg, h); !errors.Is(err, ErrBadHandle) {
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
		b, err := r.buffer(h)
		if err != nil {
			t.Fatal(err)
		}
		return b.Refs()
	}
	loan := func() Handle {
		t.Helper()
		b, err := p.alloc(8)
		if err != nil {
			t.Fatal(err)
		}
		return b.Handle()
	}

	newest, err := p.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	h := loan()
	for i := range 2 {
		if err := newest.deliver(context.Background(), h); err != nil {
			t.Fatal(err)
		}
		if n := refs(h); n != 2+i {
			t.Fatalf("after %d deliveries: %d references, want %d", i+1, n, 2+i)
		}
	}
	if err := newest.deliver(context.Background(), h); !errors.Is(err, ErrFull) {
		t.Fatalf("deliver into a full DropNewest inbox: %v, want ErrFull", err)
	}
	if n := refs(h); n != 3 {
		t.Fatalf("after a failed delivery: %d references, want 3", n)
	}

	// Waiting for room under Block: no reference is taken until there is room.
	block, err := p.OpenInbox(InboxConfig{Capacity: 2, Overflow: Block})
	if err != nil {
		t.Fatal(err)
	}
	g := loan()
	for range 2 {
		b, err := r.buffer(g)
		if err != nil {
			t.Fatal(err)
		}
		if err := block.deliverBuffer(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- block.deliver(ctx, g) }()
	for s, _ := statsOf(r, block.ID()); s.Blocked == 0; s, _ = statsOf(r, block.ID()) {
		if ctx.Err() != nil {
			t.Fatal("the producer never waited for room")
		}
		time.Sleep(100 * time.Microsecond)
	}
	if n := refs(g); n != 3 {
		t.Fatalf("while a delivery waits for room: %d references, want 3 (loan + two queued)", n)
	}
	got, ok, err := block.tryPop()
	if err != nil || !ok || got != g {
		t.Fatalf("pop: %v %v %v", got, ok, err)
	}
	if err := r.release(got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the waiting delivery: %v", err)
	}
	if n := refs(g); n != 3 {
		t.Fatalf("after the waiting delivery: %d references, want 3", n)
	}

	// A closed inbox: ErrClosed, nothing added.
	stale, err := r.inbox(newest.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := newest.close(); err != nil {
		t.Fatal(err)
	}
	if n := refs(h); n != 1 {
		t.Fatalf("after closing the inbox: %d references, want the loan's", n)
	}
	if err := stale.deliver(context.Background(), h); !errors.Is(err, ErrClosed) {
		t.Fatalf("deliver into a closed inbox: %v, want ErrClosed", err)
	}
	if n := refs(h); n != 1 {
		t.Fatalf("after delivering into a closed inbox: %d references, want 1", n)
	}
	// A handle that names no buffer.
	if err := block.deliver(context.Background(), makeHandle(h.class(), handleIdxMask, h.gen())); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("deliver a handle past its pool: %v, want ErrBadHandle", err)
	}
	for _, x := range []Handle{h, g} {
		if err := p.unloan(x); err != nil {
			t.Fatal(err)
		}
	}
	if err := block.close(); err != nil {
		t.Fatal(err)
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("%d buffers allocated at the end", n)
	}
}

// TestInboxStaleAfterManyReopenings: an Inbox kept while its entry is closed and reopened
// 16,384 times (the old 14-bit generation's period) must still fail with ErrClosed, and must
// not deliver into the ring of whoever holds the entry now (issue 14, item 8).
func TestInboxStaleAfterManyReopenings(t *testing.T) {
	cfg := inboxConfig()
	cfg.Inboxes = 1
	r := newUnitRegion(t, cfg)
	p := attachUnit(t, r, "producer")
	c := attachUnit(t, r, "consumer")
	old, err := c.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	stale, err := r.inbox(old.ID())
	if err != nil {
		t.Fatal(err)
	}
	old.close()
	const period = 1 << 14
	var in Inbox
	for i := range period {
		if in, err = c.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropNewest}); err != nil {
			t.Fatal(err)
		}
		if i < period-1 {
			in.close()
		}
	}
	defer in.close()
	if in.ID() == old.ID() {
		t.Errorf("the entry's %d-th generation has the ID %#x of the first", period, in.ID())
	}
	if _, err := r.inbox(old.ID()); !errors.Is(err, ErrClosed) {
		t.Errorf("Region.Inbox(stale ID): %v, want ErrClosed", err)
	}
	if _, err := send(context.Background(), r, p, &stale, 0, 2); !errors.Is(err, ErrClosed) {
		t.Errorf("push with a stale Inbox after %d reopenings: %v, want ErrClosed", period, err)
	}
	if n := in.Len(); n != 0 {
		t.Errorf("the stale producer delivered %d message(s) into the reopened ring", n)
	}
}

// TestBlockWakeupsDoNotCountAsTurns: a Block producer woken for room again and again, each
// time finding the room taken by another producer, must not give up as if the ring were
// wrecked: its wake-ups are someone else's progress, not turns of a loop over damaged state
// (issue 14, item 8).
func TestBlockWakeupsDoNotCountAsTurns(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	in, err := p.OpenInbox(InboxConfig{Capacity: 2, Overflow: Block})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	bg := context.Background()
	for i := range 2 {
		if _, err := send(bg, r, p, &in, 0, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	defer func(n int) { maxTurns = n }(maxTurns)
	maxTurns = 16
	const rounds = 64 // each a wake-up that finds the ring full again
	refilled := make(chan error, 1)
	n := 0
	testHookBlockWoken = func() {
		if n++; n > rounds {
			return
		}
		_, err := send(bg, r, p, &in, 1, uint64(n)) // takes the room the consumer made
		refilled <- err
	}
	defer func() { testHookBlockWoken = nil }()
	ctx, cancel := context.WithTimeout(bg, 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := send(ctx, r, p, &in, 0, 99); done <- err }()
	for i := range rounds + 1 {
		untilTrue(t, 10*time.Second, "producer waiting for room", func() bool { return waiters(in.v.hdr.spaceWaiters.Load()) != 0 || len(done) > 0 })
		if len(done) > 0 {
			t.Fatalf("round %d: the blocked push returned %v, want it still waiting", i, <-done)
		}
		h, ok, err := in.tryPop()
		if err != nil || !ok {
			t.Fatalf("round %d: TryPop: %v %v", i, ok, err)
		}
		if _, err := receive(r, h); err != nil {
			t.Fatal(err)
		}
		if i == rounds {
			break
		}
		select {
		case err := <-refilled:
			if err != nil {
				t.Fatalf("round %d: refill: %v", i, err)
			}
		case err := <-done:
			t.Fatalf("round %d: the blocked push returned %v, want it still waiting", i, err)
		case <-ctx.Done():
			t.Fatal("the blocked producer was not woken")
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("blocked push after %d wake-ups: %v", rounds, err)
		}
	case <-ctx.Done():
		t.Fatal("the blocked push did not finish")
	}
}

// stallTake performs the first steps of a take of the head message into a new held entry of
// q, as a consumer goroutine descheduled mid-take leaves it: the entry says "pending h" and
// the head cell is claimed into it; with finishing set, also the third step (the entry holds
// h). It returns the entry and what the rest of the take needs.
func stallTake(t *testing.T, in *Inbox, q *Participant, finishing bool) (idx int, h Handle, h0 uint64) {
	t.Helper()
	idx, err := q.reserve()
	if err != nil {
		t.Fatal(err)
	}
	w, _ := q.heldWord(idx)
	h0 = in.v.hdr.head.Load()
	v := in.cell(h0).Load()
	if v&markBit != 0 {
		t.Fatalf("head cell %#x holds no message", v)
	}
	h = Handle(v &^ parityBit)
	w.Store(heldPending | uint64(h))
	if !in.cell(h0).CompareAndSwap(v, in.claimed(uint64(idx), h0)) {
		t.Fatal("claim failed")
	}
	if finishing {
		w.Store(uint64(h))
	}
	return idx, h, h0
}

// resumeTake finishes a take begun by stallTake as the descheduled goroutine would: it
// reports whether the message was its own (it always is).
func resumeTake(in *Inbox, q *Participant, idx int, h Handle, h0 uint64) {
	w, _ := q.heldWord(idx)
	w.Store(uint64(h))
	if in.cell(h0).CompareAndSwap(in.claimed(uint64(idx), h0), in.empty(h0+in.cap)) {
		in.v.hdr.head.CompareAndSwap(h0, h0+1)
	}
}

// TestConcurrentTakesAreNotCorruption: a consumer goroutine that finds the head claimed by
// another goroutine of its own process, descheduled mid-take, must neither skip the claim as
// corruption nor lose a message: it waits for it (nothing to take yet) or, once the other
// goroutine holds the message, finishes that take for it and takes the next one (issue 14,
// item 4).
func TestConcurrentTakesAreNotCorruption(t *testing.T) {
	for _, finishing := range []bool{false, true} {
		t.Run(fmt.Sprintf("finishing=%v", finishing), func(t *testing.T) {
			r := newUnitRegion(t, inboxConfig())
			p := attachUnit(t, r, "p")
			q := attachUnit(t, r, "q")
			in, err := q.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropNewest})
			if err != nil {
				t.Fatal(err)
			}
			defer in.close()
			bg := context.Background()
			var sent []Handle
			for i := range 2 {
				h, err := send(bg, r, p, &in, 0, uint64(i))
				if err != nil {
					t.Fatal(err)
				}
				sent = append(sent, h)
			}
			idxA, hA, h0 := stallTake(t, &in, q, finishing)
			if hA != sent[0] {
				t.Fatalf("stalled take of %v, want %v", hA, sent[0])
			}
			idxB, err := q.reserve()
			if err != nil {
				t.Fatal(err)
			}
			hB, ok, err := in.tryPopInto(q, idxB)
			if err != nil {
				t.Fatal(err)
			}
			if !finishing {
				if ok {
					t.Fatalf("took %v while the head is being taken by another goroutine", hB)
				}
				resumeTake(&in, q, idxA, hA, h0)
				if hB, ok, err = in.tryPopInto(q, idxB); err != nil || !ok {
					t.Fatalf("after the other take finished: %v %v", ok, err)
				}
			} else {
				if !ok {
					t.Fatal("nothing taken, though the other goroutine's take needed only its last steps")
				}
				resumeTake(&in, q, idxA, hA, h0)
			}
			if hB != sent[1] {
				t.Errorf("took %v, want the second message %v", hB, sent[1])
			}
			s, _ := statsOf(r, in.ID())
			if s.Corrupt != 0 || r.hdr.corrupt.Load() != 0 {
				t.Errorf("a take in progress counted as corruption: inbox %d, region %d", s.Corrupt, r.hdr.corrupt.Load())
			}
			if s.Popped != 2 || s.Depth != 0 {
				t.Errorf("stats %+v, want 2 popped", s)
			}
			for i, h := range []Handle{hA, hB} {
				if err := q.unhold([]int{idxA, idxB}[i], h); err != nil {
					t.Fatal(err)
				}
			}
			if n := allocated(r); n != 0 {
				t.Errorf("%d buffers allocated at the end", n)
			}
		})
	}
}

// TestEvictionPastStalledTakeIsQuick: a DropOldest producer that finds the oldest message
// claimed by a consumer that does not finish (descheduled mid-take) must not wait thousands of
// yields on every Send: it finishes the take for the consumer if only the last steps are left,
// and otherwise drops the new message after a short spin (issue 14, item 5).
func TestEvictionPastStalledTakeIsQuick(t *testing.T) {
	for _, finishing := range []bool{false, true} {
		t.Run(fmt.Sprintf("finishing=%v", finishing), func(t *testing.T) {
			r := newUnitRegion(t, inboxConfig())
			p := attachUnit(t, r, "p")
			q := attachUnit(t, r, "q")
			in, err := q.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropOldest})
			if err != nil {
				t.Fatal(err)
			}
			defer in.close()
			bg := context.Background()
			sendN(t, r, p, &in, 2)
			idxA, hA, h0 := stallTake(t, &in, q, finishing)
			yields := 0
			testHookYield = func() { yields++ }
			defer func() { testHookYield = nil }()
			const sends = 20
			for i := range sends {
				_, err := send(bg, r, p, &in, 0, uint64(2+i))
				if finishing && err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
				if !finishing && !errors.Is(err, ErrFull) {
					t.Fatalf("send %d past a stalled take: %v, want ErrFull (the new message dropped)", i, err)
				}
			}
			testHookYield = nil
			if per := yields / sends; per > 64 {
				t.Errorf("%d yields per send past a stalled take, want a short bounded spin", per)
			}
			resumeTake(&in, q, idxA, hA, h0)
			if err := q.unhold(idxA, hA); err != nil {
				t.Fatal(err)
			}
			s, _ := statsOf(r, in.ID())
			if s.Corrupt != 0 {
				t.Errorf("corruption counted: %+v", s)
			}
			for {
				h, ok, err := in.tryPop()
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				if _, err := receive(r, h); err != nil {
					t.Fatal(err)
				}
			}
			if n := allocated(r); n != 0 {
				t.Errorf("%d buffers allocated at the end", n)
			}
		})
	}
}
