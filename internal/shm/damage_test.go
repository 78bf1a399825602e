package shm

// A subscriber whose inbox positions are scribbled must not go deaf (issue 14, items 9 and 12).

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestDamagedPositionsRepaired scribbles the head or the tail of an inbox whose consumer is
// asleep in Pop, far from where they belong. Producers go on pushing; the consumer must receive
// their messages again within a bounded time (the ring is repaired), the damage must be counted
// a few times, not once per encounter, and nobody may loop.
func TestDamagedPositionsRepaired(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(hd *inboxHeader)
	}{
		{"head far ahead", func(hd *inboxHeader) { hd.head.Add(1 << 40) }},
		{"tail far ahead", func(hd *inboxHeader) { hd.tail.Add(1 << 40) }},
		{"tail far behind", func(hd *inboxHeader) { hd.tail.Store(hd.tail.Load() - 1<<30) }},
		{"head far behind", func(hd *inboxHeader) { hd.head.Store(hd.head.Load() - 1<<30) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newUnitRegion(t, inboxConfig())
			p := attachUnit(t, r, "p")
			q := attachUnit(t, r, "q")
			in, err := q.OpenInbox(InboxConfig{Capacity: 8, Overflow: DropOldest})
			if err != nil {
				t.Fatal(err)
			}
			defer in.close()
			bg := context.Background()
			passThrough(t, r, p, &in, 20) // positions and cells away from their start
			ctx, cancel := context.WithTimeout(bg, 10*time.Second)
			defer cancel()
			type got struct {
				m   Meta
				err error
			}
			recv := make(chan got, 1)
			var corruptErrs int     // written by the consumer goroutine, read after recv
			want := 3 * int(in.cap) // messages pushed after the damage: the ring works on, lap after lap
			go func() {
				n := 0
				for {
					h, err := in.pop(ctx, Waiter{Strategy: Sleep})
					if errors.Is(err, ErrCorrupt) && ctx.Err() == nil {
						corruptErrs++ // the consumer was told; it goes on
						continue
					}
					if err != nil {
						recv <- got{err: err}
						return
					}
					m, err := receive(r, h)
					if err == nil && m.Topic == 1 {
						if n++; n == want {
							recv <- got{m: m}
							return
						}
					}
				}
			}()
			untilTrue(t, 10*time.Second, "consumer asleep", func() bool { return waiters(in.v.hdr.sleepers.Load()) != 0 })
			start := time.Now()
			tc.damage(in.v.hdr)
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			var pushErrs int
			for seq := uint64(0); ; seq++ {
				if _, err := send(bg, r, p, &in, 1, seq); err != nil {
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("push after the damage: %v", err)
					}
					pushErrs++
				}
				select {
				case g := <-recv:
					if g.err != nil {
						t.Fatalf("the consumer heard nothing for %v after the damage (%d corrupt errors to it, %d to producers): %v",
							time.Since(start).Round(time.Millisecond), corruptErrs, pushErrs, g.err)
					}
					t.Logf("%d messages arrived within %v after the damage (%d corrupt errors to the consumer, %d to producers)",
						want, time.Since(start).Round(time.Millisecond), corruptErrs, pushErrs)
					if d := time.Since(start); d > 5*time.Second {
						t.Errorf("the consumer was deaf for %v", d)
					}
					s, _ := statsOf(r, in.ID())
					if s.Corrupt == 0 || s.Corrupt > 2*uint64(in.cap)+4 {
						t.Errorf("one damaged word counted %d times (inbox), want a few", s.Corrupt)
					}
					return
				case <-tick.C:
				case <-ctx.Done():
					// The consumer reports it (above).
				}
			}
		})
	}
}

// TestDamagedCellCountedOnce: a scribbled cell that a DropNewest producer meets on every push
// (the consumer has not reached it yet) is one damaged word: it is counted once, however many
// pushes fail on it (issue 14, item 12).
func TestDamagedCellCountedOnce(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	q := attachUnit(t, r, "q")
	in, err := q.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	bg := context.Background()
	for i := range 4 {
		if _, err := send(bg, r, p, &in, 0, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The cell of the oldest message now holds a bad handle with the parity of the next lap:
	// the message is destroyed, and the cell looks filled for the tail position.
	tail := in.v.hdr.tail.Load()
	old := in.cell(tail).Swap(7<<20 | 0x40 | in.parity(tail)) // class 7: no such pool
	const pushes = 50
	for i := range pushes {
		if _, err := send(bg, r, p, &in, 1, uint64(i)); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrFull) {
			t.Fatalf("push %d into a full ring with a damaged cell: %v", i, err)
		}
	}
	if s, _ := statsOf(r, in.ID()); s.Corrupt != 1 || r.Corrupt() != 1 {
		t.Errorf("one damaged cell met by %d pushes counted %d times in the inbox, %d in the region; want 1",
			pushes, s.Corrupt, r.Corrupt())
	}
	if err := r.release(Handle(old &^ parityBit)); err != nil { // the destroyed message's reference
		t.Fatal(err)
	}
}

// TestScribbledCountersClamped: counters that live in scribbled memory are shown clamped to
// 2^53-1 (exact in a float64, never negative as an int64) by every stats reader (issue 14,
// item 12).
func TestScribbledCountersClamped(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	q := attachUnit(t, r, "q")
	in, err := q.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	const junk = 0xd6fc_7a3e_1b2c_4d5e // -2955402966732013406 as an int64
	hd := in.v.hdr
	for _, c := range []*atomic.Uint64{&hd.dropOldest, &hd.dropNewest, &hd.dropTimeout, &hd.corrupt, &hd.skipped,
		&r.hdr.corrupt, &r.hdr.reclaims, &r.hdr.swept} {
		c.Store(junk)
	}
	hd.base = junk
	const limit = 1<<53 - 1
	s, _ := statsOf(r, in.ID())
	for name, v := range map[string]uint64{"DropOldest": s.DropOldest, "DropNewest": s.DropNewest,
		"DropTimeout": s.DropTimeout, "Corrupt": s.Corrupt, "Pushed": s.Pushed, "Popped": s.Popped} {
		if v > limit {
			t.Errorf("InboxStats.%s = %d (as int64 %d), want at most 2^53-1", name, v, int64(v))
		}
	}
	rs := r.Stats()
	for name, v := range map[string]uint64{"Corrupt": rs.Corrupt, "Reclaims": rs.Reclaims, "Swept": rs.Swept,
		"Region.Corrupt()": r.Corrupt()} {
		if v > limit {
			t.Errorf("Stats.%s = %d (as int64 %d), want at most 2^53-1", name, v, int64(v))
		}
	}
}

// TestScribbledHeadCellFoundByWaitingTake: a Take whose first look finds the head's cell empty
// does not read the tail (a quick take, see takeAs); the wait after it must still find a message hidden by a
// cell scribbled "empty" (the tail says it is there), and the take after the wait must skip the
// destroyed one and return the next, in every wait strategy, instead of going round between a
// quick take that sees nothing and a wait that sees something.
func TestScribbledHeadCellFoundByWaitingTake(t *testing.T) {
	takes := []struct {
		name string
		take func(ctx context.Context, q *Participant, in *Inbox, w Waiter) (Held, error)
	}{
		{"Take", func(ctx context.Context, q *Participant, in *Inbox, w Waiter) (Held, error) {
			return q.Take(ctx, in, w)
		}},
		{"TakeAny", func(ctx context.Context, q *Participant, in *Inbox, w Waiter) (Held, error) {
			m, _, err := q.TakeAny(ctx, []*Inbox{in}, w)
			return m, err
		}},
	}
	for _, tk := range takes {
		for _, st := range []WaitStrategy{BusySpin, SpinThenSleep, Sleep} {
			t.Run(tk.name+"/"+st.String(), func(t *testing.T) {
				r := newUnitRegion(t, inboxConfig())
				p := attachUnit(t, r, "p")
				q := attachUnit(t, r, "q")
				in, err := q.OpenInbox(InboxConfig{Capacity: 8, Overflow: DropNewest})
				if err != nil {
					t.Fatal(err)
				}
				defer in.close()
				sendN(t, r, p, &in, 2)
				head := in.v.hdr.head.Load()
				old := in.cell(head).Swap(in.empty(head)) // message 0 is destroyed
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				type took struct {
					m   Held
					err error
				}
				done := make(chan took, 1)
				go func() {
					m, err := tk.take(ctx, q, &in, Waiter{Strategy: st, Spin: time.Microsecond})
					done <- took{m, err}
				}()
				var m Held
				select {
				case g := <-done:
					if g.err != nil {
						t.Fatalf("take past a head cell scribbled empty: %v", g.err)
					}
					m = g.m
				case <-time.After(15 * time.Second):
					// A take that goes round without end does not look at ctx either.
					t.Fatal("take past a head cell scribbled empty did not return in 15s")
				}
				if got := m.Meta().Seq; got != 1 {
					t.Errorf("took message %d, want 1 (0 was destroyed)", got)
				}
				if err := m.Release(); err != nil {
					t.Fatal(err)
				}
				if s, _ := statsOf(r, in.ID()); s.Corrupt != 1 {
					t.Errorf("the scribbled cell counted %d times, want 1", s.Corrupt)
				}
				if err := r.release(Handle(old &^ parityBit)); err != nil { // the destroyed message's reference
					t.Fatal(err)
				}
			})
		}
	}
}

// TestHeadRepairedForwardKeepsTheLastPositions: with the head scribbled far behind the tail,
// the repair moves the head forward, but capacity short of the tail: the messages the ring
// holds are all in the last capacity positions before it, and are still received. The repair
// used to move the head to the tail itself, which stranded them behind it; the interleaving
// checker found the same with messages committed right after another process had repaired
// the tail (seed 1, `*/batch-scribble-positions`): a head put back by a repairer that had read
// the tail before that repair, then moved forward to the tail, left them behind.
func TestHeadRepairedForwardKeepsTheLastPositions(t *testing.T) {
	r, p, in := unitInbox(t, InboxConfig{Capacity: 4, Overflow: DropNewest})
	bg := context.Background()
	passThrough(t, r, p, in, 21) // positions away from their start, every cell written
	for seq := range uint64(2) {
		if _, err := send(bg, r, p, in, 1, seq); err != nil {
			t.Fatal(err)
		}
	}
	// Head at 0, tail at 23: the cell of position 0 reads "empty for 24" (position 20 is
	// done), which agrees with neither, so the repair moves the head forward.
	in.v.hdr.head.Store(0)
	receiveAfterRepair(t, r, in, 2)
}

// A head scribbled back by an odd number of laps and one position, onto the cell of the
// newest message of a full ring, finds there a message of its own lap's parity: that one cell
// agrees with the bad head. The repair judged by it alone, kept the head, put the tail back to
// it, and the four queued messages were lost (the checker found this with seed 3 in
// */batch-scribble-positions: the head moved back by 2^20 + 5). The other three cells hold
// messages of the other parity for the head's positions, and every cell fits the tail's, so
// the repair keeps the tail now.
func TestHeadScribbledOntoAMessageOfItsParity(t *testing.T) {
	r, p, in := unitInbox(t, InboxConfig{Capacity: 4, Overflow: DropNewest})
	bg := context.Background()
	passThrough(t, r, p, in, 20)
	for seq := range uint64(4) {
		if _, err := send(bg, r, p, in, 1, seq); err != nil {
			t.Fatal(err)
		}
	}
	// Head 20, tail 24, positions 20-23 hold the messages (lap 5, parity 1). Head 7 = 20 -
	// (3 laps + 1) shares its cell with 23 and its lap's parity: (7>>2)&1 == (23>>2)&1.
	in.v.hdr.head.Store(7)
	// A send finds the cell at the tail full and the positions apart: it repairs them, and
	// the ring is full.
	if _, err := send(bg, r, p, in, 1, 4); !errors.Is(err, ErrFull) {
		t.Fatalf("send into the repaired ring: %v, want ErrFull (head %d, tail %d)", err, in.v.hdr.head.Load(), in.v.hdr.tail.Load())
	}
	receiveAfterRepair(t, r, in, 4)
}

// receiveAfterRepair receives the n messages of topic 1 (sequence numbers 0 to n-1) that a
// ring held when its head was scribbled, in order, and checks that nothing stays allocated and
// that the damage was counted.
func receiveAfterRepair(t *testing.T, r *Region, in *Inbox, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for seq := range uint64(n) {
		h, err := in.pop(ctx, Waiter{Strategy: Sleep})
		if err != nil {
			t.Fatalf("message %d of the %d in the ring when the head was scribbled: %v (head %d, tail %d)",
				seq, n, err, in.v.hdr.head.Load(), in.v.hdr.tail.Load())
		}
		m, err := receive(r, h)
		if err != nil || m.Topic != 1 || m.Seq != seq {
			t.Fatalf("received %+v, %v; want topic 1, seq %d", m, err, seq)
		}
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("%d buffers allocated at the end", n)
	}
	if s, _ := statsOf(r, in.ID()); s.Corrupt == 0 {
		t.Fatal("the damaged head was not counted")
	}
}

// unitInbox opens an inbox of participant q of a new unit region, with p to publish into it;
// the inbox is closed at the end of the test.
func unitInbox(t *testing.T, c InboxConfig) (*Region, *Participant, *Inbox) {
	t.Helper()
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	q := attachUnit(t, r, "q")
	in, err := q.OpenInbox(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.close() })
	return r, p, &in
}

// passThrough sends n messages through in and receives each at once.
func passThrough(t *testing.T, r *Region, p *Participant, in *Inbox, n int) {
	t.Helper()
	bg := context.Background()
	for i := range n {
		if _, err := send(bg, r, p, in, 0, uint64(i)); err != nil {
			t.Fatal(err)
		}
		h, err := in.pop(bg, Waiter{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := receive(r, h); err != nil {
			t.Fatal(err)
		}
	}
}
