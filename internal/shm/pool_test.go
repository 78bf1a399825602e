package shm

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

var modelSeed = flag.Uint64("offq.seed", 0, "seed for the transport model tests (0: a fixed set plus one from the clock)")

// modelSeeds returns the seeds a model test runs with: the -offq.seed flag if given, else a
// few fixed ones and one from the clock (printed on failure).
func modelSeeds() []uint64 {
	if *modelSeed != 0 {
		return []uint64{*modelSeed}
	}
	return []uint64{1, 2, 3, 20261125, uint64(time.Now().UnixNano())}
}

// poolConfig has three small classes so that the model test fills them often.
func poolConfig() Config {
	c := unitConfig()
	c.Classes = []Class{{Size: 64, Count: 4}, {Size: 256, Count: 4}, {Size: 1024, Count: 2}}
	return c
}

// modelBuf is the model of one allocated buffer.
type modelBuf struct {
	h      Handle
	class  int
	refs   int
	loaner *Participant // nil once the loan ended
	fill   byte
}

// fillBuffer writes a pattern over the whole payload, so that overlapping slots show.
func fillBuffer(b Buffer, v byte) {
	bs := b.Bytes()
	for i := range bs {
		bs[i] = v
	}
}

func checkFill(b Buffer, v byte) error {
	for i, c := range b.Bytes() {
		if c != v {
			return fmt.Errorf("payload byte %d of %v is %#x, want %#x", i, b.Handle(), c, v)
		}
	}
	return nil
}

func TestPoolModel(t *testing.T) {
	for _, seed := range modelSeeds() {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { poolModel(t, seed, 3000) })
	}
}

func poolModel(t *testing.T, seed uint64, steps int) {
	cfg := poolConfig()
	r := newUnitRegion(t, cfg)
	ps := []*Participant{attachUnit(t, r, "a"), attachUnit(t, r, "b")}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	live := map[Handle]*modelBuf{}
	var order []Handle // live handles, for picking at random
	var dead []Handle  // handles released and never valid again
	inUse := make([]int, len(cfg.Classes))
	fails := make([]uint64, len(cfg.Classes))
	high := make([]int64, len(cfg.Classes))
	step := 0
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d step %d: %s (rerun with -offq.seed=%d)", seed, step, fmt.Sprintf(format, args...), seed)
	}
	drop := func(h Handle) {
		m := live[h]
		delete(live, h)
		for i, x := range order {
			if x == h {
				order = append(order[:i], order[i+1:]...)
				break
			}
		}
		inUse[m.class]--
		dead = append(dead, h)
	}
	pick := func() *modelBuf {
		if len(order) == 0 {
			return nil
		}
		return live[order[rng.IntN(len(order))]]
	}
	badHandle := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrBadHandle) {
			fail("%s: %v, want ErrBadHandle", what, err)
		}
	}

	for step = 0; step < steps; step++ {
		switch op := rng.IntN(100); {
		case op < 35: // Alloc
			n := rng.IntN(1100)
			if rng.IntN(20) == 0 {
				n = 1025 + rng.IntN(5000)
			}
			p := ps[rng.IntN(len(ps))]
			b, err := p.alloc(n)
			want, first := -1, -1
			for c, cl := range cfg.Classes {
				if n <= int(cl.Size) {
					if first < 0 {
						first = c
					}
					if want < 0 && inUse[c] < int(cl.Count) {
						want = c
					}
				}
			}
			var pe *PoolError
			switch {
			case first < 0:
				if !errors.Is(err, ErrTooLarge) || !errors.As(err, &pe) || pe.Size != n || pe.Largest != 1024 {
					fail("Alloc(%d): %v, want ErrTooLarge", n, err)
				}
			case want < 0:
				if !errors.Is(err, ErrPoolExhausted) || !errors.As(err, &pe) || pe.Size != n {
					fail("Alloc(%d) with classes %v in use: %v, want ErrPoolExhausted", n, inUse, err)
				}
				fails[first]++
			case err != nil:
				fail("Alloc(%d) with classes %v in use: %v", n, inUse, err)
			default:
				if b.Class() != want || b.Cap() != int(cfg.Classes[want].Size) || b.Refs() != 1 {
					fail("Alloc(%d) gave class %d cap %d refs %d, want class %d", n, b.Class(), b.Cap(), b.Refs(), want)
				}
				if _, dup := live[b.Handle()]; dup {
					fail("Alloc(%d) returned live handle %v", n, b.Handle())
				}
				m := &modelBuf{h: b.Handle(), class: want, refs: 1, loaner: p, fill: byte(rng.Uint32())}
				fillBuffer(b, m.fill)
				live[m.h] = m
				order = append(order, m.h)
				inUse[want]++
				high[want] = max(high[want], int64(inUse[want]))
			}
		case op < 50: // AddRefs
			m := pick()
			if m == nil {
				continue
			}
			k := 1 + rng.IntN(3)
			if err := r.addRefsHandle(m.h, k); err != nil {
				fail("AddRefs(%v, %d): %v", m.h, k, err)
			}
			m.refs += k
		case op < 70: // Release
			m := pick()
			if m == nil {
				continue
			}
			err := r.release(m.h)
			if m.refs == 1 && m.loaner != nil {
				badHandle("Release of a buffer held only by its loan", err)
				continue
			}
			if err != nil {
				fail("Release(%v) refs %d: %v", m.h, m.refs, err)
			}
			if m.refs--; m.refs == 0 {
				drop(m.h)
			}
		case op < 82: // Unloan
			m := pick()
			if m == nil {
				continue
			}
			p := ps[rng.IntN(len(ps))]
			err := p.unloan(m.h)
			if m.loaner != p {
				badHandle("Unloan by a participant without the loan", err)
				continue
			}
			if err != nil {
				fail("Unloan(%v): %v", m.h, err)
			}
			m.loaner = nil
			if m.refs--; m.refs == 0 {
				drop(m.h)
			}
		case op < 92: // Buffer of a live handle: the payload is intact
			m := pick()
			if m == nil {
				continue
			}
			b, err := r.buffer(m.h)
			if err != nil {
				fail("Buffer(%v): %v", m.h, err)
			}
			if b.Refs() != m.refs || b.Class() != m.class {
				fail("Buffer(%v): refs %d class %d, model %d %d", m.h, b.Refs(), b.Class(), m.refs, m.class)
			}
			if err := checkFill(b, m.fill); err != nil {
				fail("%v", err)
			}
		default: // every operation on a released handle fails and changes nothing
			if len(dead) == 0 {
				continue
			}
			h := dead[rng.IntN(len(dead))]
			_, err := r.buffer(h)
			badHandle("Buffer of a released handle", err)
			badHandle("Release of a released handle", r.release(h))
			badHandle("AddRefs of a released handle", r.addRefsHandle(h, 1))
			badHandle("Unloan of a released handle", ps[0].unloan(h))
			badHandle("Unloan of a released handle", ps[1].unloan(h))
		}

		counted := r.CountAllocated()
		stats := r.PoolStats()
		for c := range cfg.Classes {
			s := stats[c]
			if counted[c] != inUse[c] || s.InUse != int64(inUse[c]) {
				fail("class %d: CountAllocated %d, PoolStats.InUse %d, model %d", c, counted[c], s.InUse, inUse[c])
			}
			if s.AllocFails != fails[c] {
				fail("class %d: AllocFails %d, model %d", c, s.AllocFails, fails[c])
			}
			if s.HighWater != high[c] || s.LowWater != int64(cfg.Classes[c].Count)-high[c] {
				fail("class %d: HighWater %d LowWater %d, model high water %d", c, s.HighWater, s.LowWater, high[c])
			}
			if s.Class != c || s.Size != int(cfg.Classes[c].Size) || s.Capacity != int(cfg.Classes[c].Count) {
				fail("class %d: stats %+v", c, s)
			}
		}
	}

	// Give everything back: the pools end empty.
	for _, h := range append([]Handle(nil), order...) {
		m := live[h]
		for ; m.refs > 1; m.refs-- {
			if err := r.release(h); err != nil {
				fail("final Release(%v): %v", h, err)
			}
		}
		if m.loaner != nil {
			if err := m.loaner.unloan(h); err != nil {
				fail("final Unloan(%v): %v", h, err)
			}
		} else if err := r.release(h); err != nil {
			fail("final Release(%v): %v", h, err)
		}
	}
	for c, n := range r.CountAllocated() {
		if n != 0 || r.PoolStats()[c].InUse != 0 {
			fail("class %d: %d buffers allocated at the end", c, n)
		}
	}
}

func TestPoolClassFallbackAndExhaustion(t *testing.T) {
	cfg := poolConfig()
	r := newUnitRegion(t, cfg)
	p := attachUnit(t, r, "p")
	var hs []Handle
	alloc := func(n, wantClass int) {
		t.Helper()
		b, err := p.alloc(n)
		if err != nil {
			t.Fatalf("Alloc(%d): %v", n, err)
		}
		if b.Class() != wantClass {
			t.Fatalf("Alloc(%d) took class %d, want %d", n, b.Class(), wantClass)
		}
		hs = append(hs, b.Handle())
	}
	for range 4 {
		alloc(0, 0) // a zero-byte message takes the smallest class
	}
	alloc(10, 1) // smallest class full: the next one
	alloc(64, 1)
	alloc(256, 1)
	alloc(65, 1)
	alloc(1, 2) // two classes full
	alloc(1024, 2)

	_, err := p.alloc(10)
	var pe *PoolError
	if !errors.Is(err, ErrPoolExhausted) || !errors.As(err, &pe) {
		t.Fatalf("Alloc with every class full: %v, want a *PoolError wrapping ErrPoolExhausted", err)
	}
	if pe.Size != 10 || pe.Largest != 1024 || fmt.Sprint(pe.Classes) != "[64 256 1024]" || pe.Unwrap() != ErrPoolExhausted {
		t.Fatalf("PoolError %+v", pe)
	}
	if msg := err.Error(); !strings.Contains(msg, "10 bytes") || !strings.Contains(msg, "[64 256 1024]") || !strings.HasPrefix(msg, "pool exhausted") {
		t.Fatalf("message %q does not name the size and the classes tried", msg)
	}
	_, err = p.alloc(300)
	if !errors.As(err, &pe) || fmt.Sprint(pe.Classes) != "[1024]" {
		t.Fatalf("Alloc(300): %v, classes tried %v", err, pe.Classes)
	}
	// A failure is counted on the smallest class the message fits.
	stats := r.PoolStats()
	if stats[0].AllocFails != 1 || stats[1].AllocFails != 0 || stats[2].AllocFails != 1 {
		t.Fatalf("AllocFails %d %d %d, want 1 0 1", stats[0].AllocFails, stats[1].AllocFails, stats[2].AllocFails)
	}
	for c, s := range stats {
		if s.InUse != int64(cfg.Classes[c].Count) || s.HighWater != s.InUse || s.LowWater != 0 {
			t.Fatalf("class %d stats %+v", c, s)
		}
	}

	_, err = p.alloc(1025)
	if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrPoolExhausted) || !errors.As(err, &pe) || pe.Size != 1025 || pe.Largest != 1024 {
		t.Fatalf("Alloc(1025): %v, want ErrTooLarge", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "1025") || !strings.Contains(msg, "1024") {
		t.Fatalf("message %q does not name the size and the largest class", msg)
	}
	if _, err := p.alloc(-1); err == nil {
		t.Fatal("Alloc(-1) succeeded")
	}
	if r.PoolStats()[2].AllocFails != 1 {
		t.Fatal("a too-large message was counted as an allocation failure")
	}

	// Freeing one buffer of the smallest class makes it the first choice again.
	if err := p.unloan(hs[2]); err != nil {
		t.Fatal(err)
	}
	alloc(1, 0)
	hs[2] = hs[len(hs)-1]
	hs = hs[:len(hs)-1]
	for _, h := range hs {
		if err := p.unloan(h); err != nil {
			t.Fatal(err)
		}
	}
	for c, s := range r.PoolStats() {
		if s.InUse != 0 || s.HighWater != int64(cfg.Classes[c].Count) {
			t.Fatalf("class %d after freeing everything: %+v", c, s)
		}
	}
}

func TestPoolBadHandles(t *testing.T) {
	cfg := poolConfig()
	r := newUnitRegion(t, cfg)
	p := attachUnit(t, r, "p")
	q := attachUnit(t, r, "q")
	b, err := p.alloc(100)
	if err != nil {
		t.Fatal(err)
	}
	h := b.Handle()
	pl := &r.pools[b.Class()]
	last := pl.count - 1
	gen := h.gen()

	// Release of a buffer whose only reference is the loan: refused, nothing changes.
	if err := r.release(h); !errors.Is(err, ErrBadHandle) || b.Refs() != 1 {
		t.Fatalf("Release of a loan-only buffer: %v (refs %d)", err, b.Refs())
	}
	if err := q.unloan(h); !errors.Is(err, ErrBadHandle) || b.Refs() != 1 {
		t.Fatalf("Unloan by another participant: %v (refs %d)", err, b.Refs())
	}
	if err := r.addRefsHandle(h, -1); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("AddRefs(-1): %v", err)
	}
	if err := r.addRefsHandle(h, maxRefs); !errors.Is(err, ErrBadHandle) || b.Refs() != 1 {
		t.Fatalf("AddRefs overflowing the count: %v (refs %d)", err, b.Refs())
	}
	if err := r.addRefsHandle(h, maxRefs-1); err != nil || b.Refs() != maxRefs {
		t.Fatalf("AddRefs to the limit: %v (refs %d)", err, b.Refs())
	}
	if err := r.addRefsHandle(h, 1); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("AddRefs past the limit: %v", err)
	}
	for range maxRefs - 1 {
		if err := r.release(h); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		name string
		h    Handle
	}{
		{"zero", 0},
		{"bit 63", h | 1<<63},
		{"bit 62", h | 1<<62},
		{"all ones", ^Handle(0)},
		{"a class the region lacks", makeHandle(uint32(len(r.pools)), h.index(), gen)},
		{"the last class number", makeHandle(handleClassMask, h.index(), gen)},
		{"just past the last slot", makeHandle(h.class(), pl.count, gen)},
		{"largest index", makeHandle(h.class(), handleIdxMask, gen)},
		{"generation zero", makeHandle(h.class(), h.index(), 0)},
		{"stale generation", makeHandle(h.class(), h.index(), gen+1)},
		{"older generation", makeHandle(h.class(), h.index(), gen-1)},
		{"a generation 2^22 on", makeHandle(h.class(), h.index(), gen+1<<22)},
		{"free slot", makeHandle(h.class(), last, gen)},
	} {
		before := r.CountAllocated()
		if _, err := r.buffer(tc.h); !errors.Is(err, ErrBadHandle) {
			t.Errorf("%s (%v): Buffer = %v", tc.name, tc.h, err)
		}
		if err := r.release(tc.h); !errors.Is(err, ErrBadHandle) {
			t.Errorf("%s (%v): Release = %v", tc.name, tc.h, err)
		}
		if err := r.addRefsHandle(tc.h, 1); !errors.Is(err, ErrBadHandle) {
			t.Errorf("%s (%v): AddRefs = %v", tc.name, tc.h, err)
		}
		if err := p.unloan(tc.h); !errors.Is(err, ErrBadHandle) {
			t.Errorf("%s (%v): Unloan = %v", tc.name, tc.h, err)
		}
		if fmt.Sprint(before) != fmt.Sprint(r.CountAllocated()) || b.Refs() != 1 {
			t.Errorf("%s: a rejected handle changed the pools: %v -> %v", tc.name, before, r.CountAllocated())
		}
	}
	// decode does bounds only; the first and last slots are in bounds.
	for _, idx := range []uint32{0, last} {
		if _, _, _, err := r.decode(makeHandle(h.class(), idx, 1)); err != nil {
			t.Errorf("decode(slot %d): %v", idx, err)
		}
	}
	if err := p.unloan(h); err != nil {
		t.Fatal(err)
	}
}

func TestPoolDoubleReleaseAndStaleHandle(t *testing.T) {
	r := newUnitRegion(t, poolConfig())
	p := attachUnit(t, r, "p")
	b, err := p.alloc(1)
	if err != nil {
		t.Fatal(err)
	}
	old := b.Handle()
	if err := r.addRefsHandle(old, 1); err != nil {
		t.Fatal(err)
	}
	if err := p.unloan(old); err != nil {
		t.Fatal(err)
	}
	if err := p.unloan(old); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("second Unloan: %v", err)
	}
	if err := r.release(old); err != nil {
		t.Fatal(err)
	}
	if err := r.release(old); !errors.Is(err, ErrBadHandle) || !strings.Contains(err.Error(), "released twice") {
		t.Fatalf("double Release: %v", err)
	}
	// The slot is reused (a freed slot is this process's next choice) under a new generation.
	b2, err := p.alloc(1)
	if err != nil {
		t.Fatal(err)
	}
	if b2.Handle().slot() != old.slot() || b2.Handle() == old {
		t.Fatalf("reuse: old %v, new %v", old, b2.Handle())
	}
	for name, err := range map[string]error{
		"Release": r.release(old), "AddRefs": r.addRefsHandle(old, 1), "Unloan": p.unloan(old),
	} {
		if !errors.Is(err, ErrBadHandle) || !strings.Contains(err.Error(), "stale") {
			t.Errorf("%s of the stale handle: %v", name, err)
		}
	}
	if _, err := r.buffer(old); !errors.Is(err, ErrBadHandle) {
		t.Errorf("Buffer of the stale handle: %v", err)
	}
	if b2.Refs() != 1 {
		t.Fatalf("the stale handle changed the new buffer: refs %d", b2.Refs())
	}
	if err := p.unloan(b2.Handle()); err != nil {
		t.Fatal(err)
	}
}

func TestBufferMetaAndClamp(t *testing.T) {
	r := newUnitRegion(t, poolConfig())
	p := attachUnit(t, r, "p")
	b, err := p.alloc(10)
	if err != nil {
		t.Fatal(err)
	}
	defer p.unloan(b.Handle())
	b.SetMeta(Meta{Len: 10, Topic: 3, Seq: 99, Stamp: 12345})
	if m := b.Meta(); m != (Meta{Len: 10, Topic: 3, Seq: 99, Stamp: 12345}) || b.Len() != 10 || len(b.Data()) != 10 {
		t.Fatalf("Meta %+v Len %d", m, b.Len())
	}
	b.SetMeta(Meta{Len: 1 << 20})
	if b.Len() != 64 || b.Meta().Len != 64 {
		t.Fatalf("SetMeta did not clamp: %d", b.Len())
	}
	// A length scribbled by another process is clamped on read.
	b.s.length = 1 << 30
	if b.Len() != 64 || len(b.Data()) != 64 || b.Meta().Len != 64 {
		t.Fatalf("a scribbled length is not clamped: %d", b.Len())
	}
	if s := b.Handle().String(); !strings.Contains(s, "@") {
		t.Fatalf("Handle.String() = %q", s)
	}
}

// TestPoolConcurrent allocates and releases from several goroutines, handing buffers between
// them, and checks that every buffer comes back.
func TestPoolConcurrent(t *testing.T) {
	cfg := poolConfig()
	cfg.Classes = []Class{{Size: 64, Count: 16}, {Size: 256, Count: 16}, {Size: 1024, Count: 8}}
	r := newUnitRegion(t, cfg)
	ps := []*Participant{attachUnit(t, r, "a"), attachUnit(t, r, "b"), attachUnit(t, r, "c")}
	const workers, iters = 6, 3000
	handoff := make(chan Handle, 64)
	var wg sync.WaitGroup
	var received sync.WaitGroup
	received.Add(1)
	go func() { // the receiver releases what it is handed, after checking the payload
		defer received.Done()
		for h := range handoff {
			b, err := r.buffer(h)
			if err != nil {
				t.Errorf("handed-over buffer: %v", err)
				continue
			}
			if err := checkFill(b, byte(h)); err != nil {
				t.Error(err)
			}
			if err := r.release(h); err != nil {
				t.Errorf("Release of a handed-over buffer: %v", err)
			}
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := ps[w%len(ps)]
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range iters {
				b, err := p.alloc(rng.IntN(1025))
				if errors.Is(err, ErrPoolExhausted) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				h := b.Handle()
				fillBuffer(b, byte(h))
				switch rng.IntN(3) {
				case 0: // abandon the loan
				case 1: // two extra references, released here
					if err := r.addRefsHandle(h, 2); err != nil {
						t.Error(err)
						return
					}
					for range 2 {
						if err := r.release(h); err != nil {
							t.Error(err)
							return
						}
					}
				case 2: // hand one reference to the receiver
					if err := r.addRefsHandle(h, 1); err != nil {
						t.Error(err)
						return
					}
					handoff <- h
				}
				if err := checkFill(b, byte(h)); err != nil { // the loan still holds it
					t.Error(err)
				}
				if err := p.unloan(h); err != nil {
					t.Errorf("Unloan: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(handoff)
	received.Wait()
	for c, n := range r.CountAllocated() {
		if s := r.PoolStats()[c]; n != 0 || s.InUse != 0 {
			t.Errorf("class %d: %d buffers allocated, InUse %d after every goroutine gave back", c, n, s.InUse)
		}
	}
}

// TestHandleGenerationWrap: a consumer that takes a message into a held entry and releases it,
// then 2^22 messages later (2^22 - 1 allocations and one more message, all on the same slot,
// which this process reuses first, and the same held entry) releases the old value again,
// gets an error and frees nothing: the live message in that slot and entry is untouched. A
// 22-bit generation had wrapped by then, making the stale handle bit-for-bit the live one.
func TestHandleGenerationWrap(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	in, err := p.OpenInbox(InboxConfig{Capacity: 4, Pattern: "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	bg := context.Background()
	receive := func(seq uint64) (int, Handle) {
		t.Helper()
		if _, err := send(bg, r, p, &in, 0, seq); err != nil {
			t.Fatal(err)
		}
		idx, err := p.reserve()
		if err != nil {
			t.Fatal(err)
		}
		h, ok, err := in.tryPopInto(p, idx)
		if err != nil || !ok {
			t.Fatalf("TryPopInto: %v %v", ok, err)
		}
		return idx, h
	}
	idx0, h0 := receive(1)
	if err := p.unhold(idx0, h0); err != nil {
		t.Fatal(err)
	}
	for range 1<<22 - 1 {
		b, err := p.alloc(8)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.unloan(b.Handle()); err != nil {
			t.Fatal(err)
		}
	}
	idx1, h1 := receive(2)
	if idx1 != idx0 || h1.slot() != h0.slot() {
		t.Fatalf("the live message is in entry %d slot %v, the old one was in %d %v: not the same place", idx1, h1, idx0, h0)
	}
	if h1 == h0 {
		t.Fatalf("the live message's handle %v equals a released one's after 2^22 allocations of its slot", h1)
	}
	if err := p.unhold(idx0, h0); err == nil {
		t.Fatal("second Unhold of a released message succeeded")
	}
	if err := r.release(h0); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("Release of a released message's handle: %v", err)
	}
	b, err := r.buffer(h1)
	if err != nil || b.Refs() != 1 || b.Meta().Seq != 2 {
		t.Fatalf("the live message after the stale releases: %v (refs %d seq %d)", err, b.Refs(), b.Meta().Seq)
	}
	if err := p.unhold(idx1, h1); err != nil {
		t.Fatal(err)
	}
}

// exhaustedRig fills a pool of n 64-byte buffers with loans and returns the region, the
// participant and the loans. The rescan interval is set long, so that a test decides when a
// claim scans a pool its counters call exhausted.
func exhaustedRig(t *testing.T, n uint32) (*Region, *Participant, []Loan) {
	t.Helper()
	c := unitConfig()
	c.Classes = []Class{{Size: 64, Count: n}}
	r := newUnitRegion(t, c)
	p := attachUnit(t, r, "exhausted")
	old := exhaustedRescan
	exhaustedRescan = int64(time.Hour)
	t.Cleanup(func() { exhaustedRescan = old; testHookClaimFailed = nil })
	r.pools[0].scanned.Store(Now()) // as if this process had just scanned it
	loans := make([]Loan, 0, n)
	for range n {
		l, err := p.Loan(64)
		if err != nil {
			t.Fatal(err)
		}
		loans = append(loans, l)
	}
	return r, p, loans
}

// A Loan on an exhausted pool reads a few slots and the counters, not the whole pool: it used
// to read every slot, milliseconds for a pool of a million buffers, on every retry of a
// publisher waiting for one.
func TestExhaustedPoolClaimReadsAFewSlots(t *testing.T) {
	const n = 4096
	r, p, loans := exhaustedRig(t, n)
	var read []uint32
	testHookClaimFailed = func(k uint32) { read = append(read, k) }
	for range 3 {
		if _, err := p.Loan(64); !errors.Is(err, ErrPoolExhausted) {
			t.Fatalf("Loan on a full pool: %v", err)
		}
	}
	var got [MaxBatch]Loan
	if ls, err := p.LoanBatch(got[:], 64); len(ls) != 0 || !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("LoanBatch on a full pool: %d loans, %v", len(ls), err)
	}
	if len(read) == 0 {
		t.Fatal("no failed claim reported")
	}
	for _, k := range read {
		if k > claimProbe {
			t.Fatalf("failed claims read %v slots of %d; want at most %d each", read, n, claimProbe)
		}
	}
	// Room made by a counted release is found at once.
	if err := loans[n/2].Discard(); err != nil {
		t.Fatal(err)
	}
	l, err := p.Loan(64)
	if err != nil {
		t.Fatalf("Loan after a release: %v", err)
	}
	if l.buf.h.index() != n/2 {
		t.Fatalf("loaned slot %d, want the one released, %d", l.buf.h.index(), n/2)
	}
	if r.pools[0].distrust.Load() {
		t.Fatal("the counters were right, and are distrusted")
	}
}

// A free the counters never saw (a process killed between freeing a buffer and counting it,
// or scribbled counters) is found by the periodic scan, after which the process stops relying
// on the counters: a buffer is never lost for good.
func TestExhaustedPoolUncountedFree(t *testing.T) {
	const n = 256
	r, p, loans := exhaustedRig(t, n)
	pl := &r.pools[0]
	freeUncounted := func(l Loan) {
		s := l.buf.s
		s.state.Store(stateGen(s.state.Load()) << genShift) // free, no owner, not counted
	}
	freeUncounted(loans[200]) // far from the cursor (at 0 after the pool was filled)
	if _, err := p.Loan(64); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("Loan while the counters say full, before a rescan is due: %v", err)
	}
	exhaustedRescan = 0 // a rescan is due
	l, err := p.Loan(64)
	if err != nil {
		t.Fatalf("Loan with a rescan due and a buffer free: %v", err)
	}
	if l.buf.h.index() != 200 {
		t.Fatalf("loaned slot %d, want 200", l.buf.h.index())
	}
	if !pl.distrust.Load() {
		t.Fatal("the scan found a free buffer the counters missed, and they are still trusted")
	}
	exhaustedRescan = int64(time.Hour)
	freeUncounted(loans[100]) // far behind the cursor (at 201)
	if _, err := p.Loan(64); err != nil {
		t.Fatalf("Loan with the counters distrusted and a buffer free: %v", err)
	}
}

// Once a claim has found the pool exhausted, this process's claims read a slot only when the
// counters say a buffer is free: a publisher that outruns its subscribers no longer reads, at
// every failed try, the state words of the buffers its subscribers are about to release,
// taking their lines away from them (docs/performance.md, "Issue 15, fifth round"). Before,
// each failed claim read claimProbe slots from the cursor.
func TestShortPoolClaimsReadOnlyWhatIsFree(t *testing.T) {
	const n = 256
	r, p, loans := exhaustedRig(t, n)
	pl := &r.pools[0]
	var read []uint32
	testHookClaimFailed = func(k uint32) { read = append(read, k) }
	if _, err := p.Loan(64); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("Loan on a full pool: %v", err)
	}
	if !pl.short.Load() {
		t.Fatal("a claim found the pool exhausted and the pool is not marked short")
	}
	for _, i := range []int{10, 100, 200} {
		if err := loans[i].Discard(); err != nil {
			t.Fatal(err)
		}
	}
	for k := range 3 {
		if _, err := p.Loan(64); err != nil {
			t.Fatalf("Loan %d with 3 buffers free: %v", k, err)
		}
	}
	read = read[:0]
	for range 3 {
		if _, err := p.Loan(64); !errors.Is(err, ErrPoolExhausted) {
			t.Fatalf("Loan on a full pool: %v", err)
		}
	}
	if err := loans[50].Discard(); err != nil {
		t.Fatal(err)
	}
	var got [MaxBatch]Loan
	if ls, err := p.LoanBatch(got[:], 64); len(ls) != 1 || err != nil {
		t.Fatalf("LoanBatch with 1 buffer free: %d loans, %v; want 1", len(ls), err)
	}
	if ls, err := p.LoanBatch(got[:], 64); len(ls) != 0 || !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("LoanBatch on a full pool: %d loans, %v", len(ls), err)
	}
	if len(read) == 0 {
		t.Fatal("no failed claim reported")
	}
	for _, k := range read {
		if k != 0 {
			t.Fatalf("claims on a pool known to be short read %v slots; want none", read)
		}
	}
	// Plenty of room again: the process leaves short mode.
	for i := range claimProbe {
		if err := loans[128+i].Discard(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Loan(64); err != nil {
		t.Fatal(err)
	}
	if pl.short.Load() {
		t.Fatalf("the pool has %d buffers free and is still marked short", claimProbe-1)
	}
}
