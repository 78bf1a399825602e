package shm

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
)

// setHandedOff sets testHookHandedOff for the test.
func setHandedOff(t *testing.T, fn func(h Handle)) {
	testHookHandedOff = fn
	t.Cleanup(func() { testHookHandedOff = nil })
}

// A send to one inbox hands the loan's reference to the cell: between the hand-off and the
// cell's commit the buffer is on loan to nobody and in no ring, and only the sender's hand-off
// word names it. Two sweeps there (a sender stalled across them) must not free it; without
// the word in the sweep's reads they do, and the subscriber then takes a freed buffer.
func TestHandoffWordSparesTheBufferFromTheSweep(t *testing.T) {
	for _, batch := range []bool{false, true} {
		name := map[bool]string{false: "send", true: "batch"}[batch]
		t.Run(name, func(t *testing.T) {
			g := newBatchRig(t, inboxConfig(), 1, 16, DropNewest)
			hooked := 0
			setHandedOff(t, func(h Handle) {
				hooked++
				b, err := g.r.buffer(h)
				if err != nil {
					t.Fatalf("handed-off buffer: %v", err)
				}
				if v := b.s.state.Load(); stateOwner(v) != 0 || stateRefs(v) != 1 {
					t.Fatalf("after the hand-off: owner %d, %d references; want no owner, 1", stateOwner(v), stateRefs(v))
				}
				if n := g.r.sweep() + g.r.sweep(); n != 0 {
					t.Fatalf("the sweep freed %d buffers in the middle of a hand-off", n)
				}
			})
			const k = 5
			if batch {
				var loans [MaxBatch]Loan
				var lens [MaxBatch]int
				g.send(t, loans[:], lens[:], k, 1)
			} else {
				for i := range k {
					l, err := g.p.Loan(8)
					if err != nil {
						t.Fatal(err)
					}
					binary.NativeEndian.PutUint64(l.Bytes(), uint64(i+1))
					if _, err := g.t.Send(context.Background(), l, 8, g.outs); err != nil {
						t.Fatal(err)
					}
				}
			}
			if hooked != k {
				t.Fatalf("%d hand-offs for %d messages to one inbox", hooked, k)
			}
			for k := range handoffWords {
				if w := g.r.handoffWord(g.p.idx, k).Load(); w != 0 {
					t.Fatalf("hand-off word %d still names %v after the send", k, Handle(w))
				}
			}
			var held [MaxBatch]Held
			got, err := g.p.TakeBatch(context.Background(), &g.ins[0], Waiter{Strategy: BusySpin}, held[:])
			if err != nil || len(got) != k {
				t.Fatalf("took %d, %v; want %d", len(got), err, k)
			}
			for j, m := range got {
				if v := binary.NativeEndian.Uint64(m.Data()); v != uint64(j+1) {
					t.Fatalf("message %d holds %d, want %d", j, v, j+1)
				}
			}
			if err := ReleaseBatch(got); err != nil {
				t.Fatal(err)
			}
			assertNoneAllocated(t, g.r)
		})
	}
}

// A hand-off whose cell is taken by another producer before its commit takes the reference
// back into the loan and tries again; when the ring is then full, the policy applies to a loan
// the sender still owns, and Send ends it: nothing leaks and nothing is freed twice.
func TestHandoffLostCellTakesTheLoanBack(t *testing.T) {
	for _, fill := range []int{1, 2} { // other messages pushed into the cell's place: 1 leaves room, 2 fill the ring
		g := newBatchRig(t, inboxConfig(), 1, 2, DropNewest)
		other := attachUnit(t, g.r, "other")
		hooked := 0
		setHandedOff(t, func(h Handle) {
			if hooked++; hooked > 1 {
				return
			}
			for range fill {
				b, err := other.alloc(8)
				if err != nil {
					t.Fatal(err)
				}
				if err := g.outs[0].deliverBuffer(context.Background(), b); err != nil {
					t.Fatal(err)
				}
				if err := other.unloan(b.h); err != nil {
					t.Fatal(err)
				}
			}
		})
		l, err := g.p.Loan(8)
		if err != nil {
			t.Fatal(err)
		}
		binary.NativeEndian.PutUint64(l.Bytes(), 42)
		if _, err := g.t.Send(context.Background(), l, 8, g.outs); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(l.Discard(), ErrLoanEnded) {
			t.Fatalf("fill %d: the loan is still live after Send", fill)
		}
		st := g.r.inboxStats()[g.ins[0].v.index]
		wantHooks, wantDrops, wantLen := 2, uint64(0), 2
		if fill == 2 {
			wantHooks, wantDrops = 1, 1
		}
		if hooked != wantHooks || st.DropNewest != wantDrops {
			t.Fatalf("fill %d: %d hand-offs, %d dropped; want %d, %d", fill, hooked, st.DropNewest, wantHooks, wantDrops)
		}
		var held [MaxBatch]Held
		got, err := g.p.TakeBatch(context.Background(), &g.ins[0], Waiter{Strategy: BusySpin}, held[:])
		if err != nil || len(got) != wantLen {
			t.Fatalf("fill %d: took %d, %v; want %d", fill, len(got), err, wantLen)
		}
		if fill == 1 {
			if v := binary.NativeEndian.Uint64(got[1].Data()); v != 42 {
				t.Fatalf("the handed-off message holds %d, want 42", v)
			}
		}
		ReleaseBatch(got)
		assertNoneAllocated(t, g.r)
	}
}

// With every hand-off word of the participant taken (as many sends at once in one process),
// a send to one inbox takes the classic path: a reference added for the cell, the loan ended
// after it.
func TestHandoffWordsAllTaken(t *testing.T) {
	g := newBatchRig(t, inboxConfig(), 1, 16, DropNewest)
	setHandedOff(t, func(Handle) { t.Fatal("a hand-off with no hand-off word free") })
	for k := range handoffWords {
		if w := g.p.takeHandoff(Handle(k + 1)); w == nil {
			t.Fatalf("hand-off word %d not free", k)
		}
	}
	l, err := g.p.Loan(8)
	if err != nil {
		t.Fatal(err)
	}
	binary.NativeEndian.PutUint64(l.Bytes(), 7)
	if _, err := g.t.Send(context.Background(), l, 8, g.outs); err != nil {
		t.Fatal(err)
	}
	m, err := g.p.Take(context.Background(), &g.ins[0], Waiter{Strategy: BusySpin})
	if err != nil || binary.NativeEndian.Uint64(m.Data()) != 7 {
		t.Fatalf("take: %v", err)
	}
	m.Release()
	g.r.clearHandoff(g.p.idx)
	assertNoneAllocated(t, g.r)
}

// A hand-off word left set (only a scribble can leave one: sends give theirs back, Detach and
// reapers zero them) would stay taken for good; the next participant of the slot starts with
// its words zero.
func TestHandoffWordsZeroForANewParticipant(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "first")
	idx := p.idx
	r.handoffWord(idx, 3).Store(0xdead)
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	q := attachUnit(t, r, "second")
	if q.idx != idx {
		t.Fatalf("the second participant took slot %d, not the freed %d", q.idx, idx)
	}
	for k := range handoffWords {
		if w := r.handoffWord(idx, k).Load(); w != 0 {
			t.Fatalf("hand-off word %d of the new participant is %#x", k, w)
		}
	}
}
