package shm

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Attacks on a slot ring's words by another process, found in issue 15's fourteenth round's
// review; each test failed on the code before its fix.

// A reader entry's cursor written back to the last message read (still in its slot, tag and
// all): InboxRing.ready and stalled judged the slot at the entry's cursor, in shared memory,
// while the poll reads the reader's own. ready reported a message at every call and the poll
// found none: Inbox.wait returned at its first look, before any look at ctx, and TakeInto
// spun without end, deaf to its context, until the writer published again. They now read the
// reader's copy in process memory (RingReader.pos), and a take looks at its context after
// every wait.
func TestRingForgedCursorHonoursContext(t *testing.T) {
	for _, st := range []WaitStrategy{BusySpin, Sleep} {
		t.Run(st.String(), func(t *testing.T) {
			_, me, _ := newTestRegion(t, "rv1-cursor")
			in, w := ringInbox(t, me)
			putRing(t, w, 1, 8)
			var h Held
			ctx0, cancel0 := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel0()
			if err := me.TakeInto(ctx0, &in, Waiter{Strategy: st}, &h); err != nil {
				t.Fatal(err)
			}
			h.Release()
			rr := in.ring.rd.Load()
			if rr == nil || rr.local {
				t.Fatal("the inbox reads no ring through a shared entry")
			}
			rr.entry.cursor.Store(1) // forged: message 1 is read, and is still in its slot

			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			var h2 Held
			go func() { done <- me.TakeInto(ctx, &in, Waiter{Strategy: st}, &h2) }()
			select {
			case err := <-done:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("take after a forged cursor: %v, want the context's deadline", err)
				}
				if err == nil {
					h2.Release()
				}
			case <-time.After(3 * time.Second):
				// Let the spinning take go (a message for its poll), so that the region can be
				// closed; the defect is shown.
				putRing(t, w, 2, 8)
				err := <-done
				if err == nil {
					h2.Release()
				}
				t.Errorf("TakeInto ignored its context (100ms) for 3 s after the reader's cursor was written over; released by a new message: %v", err)
			}
		})
	}
}

// A reader that starts after the last message (OpenSlotRing(t, false), and every inbox opened
// while its topic has a ring) took its cursor from the writer's count unchecked. A value
// written over the count at that moment put the cursor far ahead of anything the writer
// would publish: the reader never read another message and counted nothing, while the writer
// skipped its inbox. Now the count is believed only if its slot agrees (lastCommitted), and a
// reader ahead of the writer's count goes back (RingReader.behind).
func TestRingForgedCountAtOpen(t *testing.T) {
	_, me, _ := newTestRegion(t, "rv1-open")
	tp := ringTopic(t, me, "ring.a")
	w, err := me.CreateSlotRing(tp, testRing)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	for s := uint64(1); s <= 3; s++ {
		putRing(t, w, s, 8)
	}
	w.g.w.published.Store(1 << 40) // forged, for a moment
	rr, err := me.OpenSlotRing(tp, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Close()
	for s := uint64(4); s <= 20; s++ { // the writer stores its real count again
		putRing(t, w, s, 8)
	}
	dst := make([]byte, rr.Payload())
	got := 0
	for range 10000 {
		_, ok, err := rr.Poll(dst)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			got++
		}
	}
	if got == 0 && rr.Lost() == 0 && rr.Damaged() == 0 {
		t.Errorf("17 messages published after the open: none read, none counted lost or damaged (reader's cursor %d, writer's count %d)",
			rr.next, w.g.w.published.Load())
	}
}

// The same through a lap: a sequence word 2^40 laps ahead and a count that agrees (two words)
// moved the reader's cursor there: it added 2^43 to its lost count (and so to the inbox's
// dropped-oldest counter) and never read another of the writer's messages. A lap's messages
// are now counted lost once a message after them is read, and a reader that finds itself
// ahead of the writer goes back to where it was before the lap.
func TestRingForgedLapFarAhead(t *testing.T) {
	_, me, _ := newTestRegion(t, "rv1-lap")
	tp := ringTopic(t, me, "ring.a")
	w, rr := ringPair(t, me, tp)
	dst := make([]byte, rr.Payload())
	putRing(t, w, 1, 8)
	if _, err := pollRing(t, rr, dst); err != nil {
		t.Fatal(err)
	}
	far := 2 + uint64(testRing.Slots)<<40
	w.g.slot(2).seq.Store(far)
	w.g.w.published.Store(far - 1)
	if _, ok, err := rr.Poll(dst); ok || err != nil {
		t.Fatalf("poll over the forged lap: %v, %v", ok, err)
	}
	for s := uint64(2); s <= 20; s++ {
		putRing(t, w, s, 8)
	}
	got := 0
	for range 10000 {
		if _, ok, err := rr.Poll(dst); err != nil {
			t.Fatal(err)
		} else if ok {
			got++
		}
	}
	if rr.Lost() > 20 || got == 0 {
		t.Errorf("after a forged lap and 19 real messages: lost %d, read %d, cursor %d, writer's count %d",
			rr.Lost(), got, rr.next, w.g.w.published.Load())
	}
}

// An inbox's consumer that found no free reader entry (more subscribers than entries, 64 at
// most, or entries another process filled with junk naming live participants) keeps its
// cursor in process memory, where the writer cannot see it. A retired ring was kept until
// that subscriber closed, however long it lived (a publisher that closed and opened again
// kept one ring buffer each time). It now waits RingLinger for it.
func TestRingEntrylessReaderLingers(t *testing.T) {
	r, me, _ := newTestRegion(t, "rv1-local")
	tp := ringTopic(t, me, "ring.a")
	var ins [2]Inbox
	for i := range ins {
		in, err := me.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropOldest, Pattern: "ring.a", RingOf: &tp})
		if err != nil {
			t.Fatal(err)
		}
		ins[i] = in
	}
	w, err := me.CreateSlotRing(tp, RingShape{Slots: 8, Payload: 40, Readers: 1})
	if err != nil {
		t.Fatal(err)
	}
	putRing(t, w, 1, 8)
	for i := range ins {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var h Held
		err := me.TakeInto(ctx, &ins[i], Waiter{Strategy: BusySpin}, &h)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		h.Release()
	}
	if !ins[1].ring.rd.Load().local {
		t.Fatal("the second inbox got an entry")
	}
	targets := []Inbox{ins[0], ins[1]}
	w.Retire()
	if w.FreeFor(targets, false) {
		t.Fatal("a retired ring freed at once, while a reader without an entry may still read it")
	}
	w.retiredAt = w.retiredAt.Add(-RingLinger) // as RingLinger later
	if !w.FreeFor(targets, false) {
		t.Errorf("a retired ring whose two subscribers both read its only message is not freed after RingLinger (the one without a reader entry keeps it until it closes)")
		w.FreeFor(targets, true)
	}
	checkNoLeaks(t, r)
}

// A live ring's closed word written over by another process. Its readers left it once they
// had read it to its end and the topic named another ring, and CreateSlotRing let a second
// ring take the topic; the first writer never stored its closed word again and went on
// publishing into a ring nobody read, silently. Now the writer's RepairWord (once a second)
// puts the word back; and if another ring has taken the topic meanwhile, the first retires and
// its loans fail with ErrCorrupt, saying why, while its readers move to the other.
func TestRingForgedClosedWord(t *testing.T) {
	t.Run("alone", func(t *testing.T) {
		_, me, _ := newTestRegion(t, "hostile-closed")
		in, a := ringInbox(t, me)
		putRing(t, a, 1, 8)
		if s, err := takeRing(t, me, &in, 10*time.Second); err != nil || s != 1 {
			t.Fatalf("message 1: %d, %v", s, err)
		}
		a.g.hd.closed.Store(1) // forged
		if !a.RepairWord() || a.g.hd.closed.Load() != 0 {
			t.Fatal("RepairWord did not put the closed word back")
		}
		putRing(t, a, 2, 8)
		if s, err := takeRing(t, me, &in, 10*time.Second); err != nil || s != 2 {
			t.Errorf("message 2 after the closed word was written over and put back: %d, %v", s, err)
		}
	})
	t.Run("taken", func(t *testing.T) {
		_, me, _ := newTestRegion(t, "hostile-taken")
		in, a := ringInbox(t, me)
		putRing(t, a, 1, 8)
		if s, err := takeRing(t, me, &in, 10*time.Second); err != nil || s != 1 {
			t.Fatalf("message 1: %d, %v", s, err)
		}
		a.g.hd.closed.Store(1) // forged
		b, err := me.CreateSlotRing(in.ring.t, testRing)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close(context.Background())
		if !a.RepairWord() {
			t.Fatal("RepairWord did not see another ring in the topic's word")
		}
		if _, err := a.Loan(8); !errors.Is(err, ErrCorrupt) {
			t.Errorf("a loan of the ring another took the topic from: %v, want ErrCorrupt", err)
		}
		if a.g.word.Load() != uint64(b.g.h) {
			t.Errorf("the topic's word %#x, want the second ring's %#x", a.g.word.Load(), uint64(b.g.h))
		}
		putRing(t, b, 1, 8)
		if s, err := takeRing(t, me, &in, 10*time.Second); err != nil || s != 1 {
			t.Errorf("the second ring's message 1: %d, %v", s, err)
		}
		a.Free(true)
	})
}

// takeRing takes inbox in's next message within d and returns the ring sequence written in
// it (putRing).
func takeRing(t *testing.T, me *Participant, in *Inbox, d time.Duration) (uint64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var h Held
	if err := me.TakeInto(ctx, in, Waiter{Strategy: BusySpin}, &h); err != nil {
		return 0, err
	}
	defer h.Release()
	return checkRingMessage(h.Data())
}

// The closed word and the topic's word written over for a moment, then put back by the
// writer (RepairWord): the reader ended the ring it read and, when the word named it again,
// opened it as a new ring, from its first message, receiving again messages it had received.
// It now reads on from where it stopped (InboxRing.endedH).
func TestRingForgedClosedNoReplay(t *testing.T) {
	_, me, _ := newTestRegion(t, "rv1-replay")
	in, a := ringInbox(t, me)
	take := func(d time.Duration) (uint64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var h Held
		if err := me.TakeInto(ctx, &in, Waiter{Strategy: BusySpin}, &h); err != nil {
			return 0, err
		}
		defer h.Release()
		return checkRingMessage(h.Data())
	}
	for s := uint64(1); s <= 3; s++ {
		putRing(t, a, s, 8)
		if got, err := take(10 * time.Second); err != nil || got != s {
			t.Fatalf("message %d: %d, %v", s, got, err)
		}
	}
	a.g.hd.closed.Store(1)   // forged
	a.g.word.Store(0x123456) // forged
	if _, err := take(50 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("take with nothing published: %v", err)
	}
	if !a.RepairWord() {
		t.Fatal("the topic word was not repaired")
	}
	putRing(t, a, 4, 8)
	got, err := take(time.Second)
	if err != nil || got != 4 {
		t.Errorf("after the forged words and the word's repair, the writer's message 4: got message %d again (%v)", got, err)
	}
}

// The tag's busy value was all ones, the real tag of every message whose sequence is 2^32-1
// modulo 2^32. While such a message was written (between claim and commit; with Next/Commit
// the caller fills the slot in place, for as long as it likes), a sequence word written over
// with the value the reader expects passed both tag checks of copyOut: the reader returned a
// torn message. The busy tag is now the complement of the message's own. The same forgery
// was always refused for other sequences (the control, 2^32-3).
func TestRingBusyTagAtWrap(t *testing.T) {
	for _, at := range []uint64{1<<32 - 3, 1<<32 - 1, 3<<32 - 1} {
		_, me, _ := newTestRegion(t, "rv1-wrap")
		tp := ringTopic(t, me, "ring.a")
		w, err := me.CreateSlotRing(tp, testRing)
		if err != nil {
			t.Fatal(err)
		}
		for s := uint64(1); s <= 8; s++ { // every slot holds a message of 40 bytes
			putRing(t, w, s, 40)
		}
		// As after about 4 billion messages: the writer's next message is at-1.
		w.next = at - 1
		putRing(t, w, at-1, 40)
		rr, err := me.OpenSlotRing(tp, false) // from message at
		if err != nil {
			t.Fatal(err)
		}
		b, err := w.Next(40) // message at, being written in place
		if err != nil {
			t.Fatal(err)
		}
		b[0] = 0xAA         // part of it
		w.cur.seq.Store(at) // forged: the value the reader expects
		dst := make([]byte, rr.Payload())
		m, ok, err := rr.Poll(dst)
		if ok {
			s, cerr := checkRingMessage(dst[:m.Len])
			t.Errorf("message %#x (tag %#x): a forged sequence word over the slot being written passed: a message of %d bytes (sequence in it %d, %v)",
				at, uint32(at), m.Len, s, cerr)
		} else if err != nil {
			t.Errorf("message %#x: %v", at, err)
		}
		rr.Close()
		w.Free(true)
	}
}

// A reader of ring A that has read everything A
// published has not polled yet when A is freed (its writer closed it, or died and was
// reaped) and a new ring B of the topic takes the same pool buffer and publishes more than a
// lap. At its next poll the reader looks at its slot in what is now B's memory, takes B's
// sequence word for a later lap of A (B's published count "agrees") and counts the skipped
// messages as lost, before it finds A's buffer freed. Those phantom losses go into the
// inbox's drop-oldest count (offq_messages_dropped_total{reason="oldest"}): a subscriber
// then counts drops of messages that it reads afterwards from B (it opens B from its
// start), more drops than were ever published (seen live: 220,282 drops of a topic with
// 200,004 messages). A lap is now believed only while the ring is alive.
func TestRingReaderOfFreedRingCountsNoLaps(t *testing.T) {
	cfg := inboxConfig()
	cfg.Classes = []Class{{Size: 256, Count: 8}, {Size: 2048, Count: 1}} // one buffer that holds a ring
	r := newUnitRegion(t, cfg)
	me := attachUnit(t, r, "me")
	tp := ringTopic(t, me, "ring.a")
	a, err := me.CreateSlotRing(tp, testRing)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := me.OpenSlotRing(tp, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.Retire()
	a.Free(true) // as the reaper does for a dead writer

	b, err := me.CreateSlotRing(tp, testRing)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if b.g.h.index() != a.g.h.index() {
		t.Skip("ring B did not reuse ring A's buffer")
	}
	for s := uint64(1); s <= 20; s++ {
		putRing(t, b, s, 8)
	}
	buf := make([]byte, rd.Payload())
	for {
		_, ok, err := rd.Poll(buf)
		if err != nil {
			break
		}
		if ok {
			t.Fatal("a message of ring B returned by a reader of ring A")
		}
	}
	if rd.Lost() != 0 {
		t.Errorf("the reader of ring A, which published nothing after it opened, counts %d messages lost (ring B's)", rd.Lost())
	}
}

// A count written back below what a reader has read makes the reader look ahead of the
// writer; it must not go back and read those messages again (the interleaving checker found
// this in the first version of RingReader.behind: message 5 after 6).
func TestRingForgedCountBehindNoRepeat(t *testing.T) {
	_, me, _ := newTestRegion(t, "hostile-low")
	tp := ringTopic(t, me, "ring.a")
	w, rr := ringPair(t, me, tp)
	dst := make([]byte, rr.Payload())
	for s := uint64(1); s <= 6; s++ {
		putRing(t, w, s, 8)
		if _, err := pollRing(t, rr, dst); err != nil {
			t.Fatal(err)
		}
	}
	w.g.w.published.Store(4) // forged
	for range 1000 {
		if m, ok, err := rr.Poll(dst); ok || err != nil {
			s, _ := checkRingMessage(dst[:m.Len])
			t.Fatalf("a poll after the count was written back: message %d, %v", s, err)
		}
	}
	putRing(t, w, 7, 8)
	m, err := pollRing(t, rr, dst)
	if s, cerr := checkRingMessage(dst[:m.Len]); err != nil || cerr != nil || s != 7 {
		t.Errorf("the writer's next message: %d (%v, %v), want 7", s, err, cerr)
	}
}
