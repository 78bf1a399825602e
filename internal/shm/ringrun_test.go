package shm

import (
	"context"
	"testing"
)

// runState pushes n messages into a fresh inbox of capacity 16 and takes the first k of them
// as a batch does between two moves of the head (takeNext), leaving the head at 0. The
// consumer is detached when the test ends if detach is set (not in a test that kills it).
func runState(t *testing.T, n, k int, detach bool) (*Region, *Participant, *Participant, *Inbox, []Handle) {
	t.Helper()
	r := newUnitRegion(t, reapConfig())
	pub := attachUnit(t, r, "pub")
	con, err := r.Attach("consumer")
	if err != nil {
		t.Fatal(err)
	}
	if detach {
		t.Cleanup(func() { con.Detach() })
	}
	in, err := con.OpenInbox(InboxConfig{Capacity: 16})
	if err != nil {
		t.Fatal(err)
	}
	var hs []Handle
	for i := range n {
		h, err := send(context.Background(), r, pub, &in, 0, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	for pos := range k {
		idx, err := con.reserve()
		if err != nil {
			t.Fatal(err)
		}
		h, ok := in.takeNext(con.held.word(uint32(idx)), uint64(idx), uint64(pos))
		if !ok || h != hs[pos] {
			t.Fatalf("takeNext at %d: %v, %v; want %v", pos, h, ok, hs[pos])
		}
	}
	if got := in.v.hdr.head.Load(); got != 0 {
		t.Fatalf("head %d after takeNext; want it left at 0", got)
	}
	return r, pub, con, &in, hs
}

// TestPushHelpsATailBehindABatchsTake: a batch has taken positions 0 and 1 without moving the
// head, and the tail still says 1 (the producer of position 1 has not moved it yet). The next
// push finds position 1's cell taken with the head short of it. It must help the tail on and
// fill position 2; before pushes allowed for a batch's lag, it took the cell for a scribble,
// counted corruption, and filled position 1 again, behind where the batch moves the head: the
// message was lost.
func TestPushHelpsATailBehindABatchsTake(t *testing.T) {
	r, pub, con, in, _ := runState(t, 2, 2, true)
	in.v.hdr.tail.Store(1)
	h, err := send(context.Background(), r, pub, in, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	in.advanceHead(2) // the batch ends
	idx, _ := con.reserve()
	got, ok, err := in.take(con.held.word(uint32(idx)), uint64(idx))
	if err != nil || !ok || got != h {
		t.Fatalf("take after the batch: %v, %v, %v; want the third message %v", got, ok, err, h)
	}
	if s, _ := statsOf(r, in.ID()); s.Corrupt != 0 {
		t.Fatalf("%d corrupt counted; a batch's lag is not damage", s.Corrupt)
	}
}

// TestReapTakeHalfDoneInARun: a consumer dies in a batch, having taken position 0 without
// moving the head and claimed position 1 (its held entry pending). The reaper must finish the
// take it finds past the head and release both messages; when it looked at the head's cell
// only, the claimed message was in no record it read, and stayed allocated.
func TestReapTakeHalfDoneInARun(t *testing.T) {
	r, _, con, in, hs := runState(t, 3, 1, false)
	idx, _ := con.reserve()
	w := con.held.word(uint32(idx))
	w.Store(heldPending | uint64(hs[1]))
	in.cell(1).Store(in.claimed(uint64(idx), 1))
	reapDeadConsumer(t, r, con, "a take half done past the head")
}

// TestMisfitsAllowABatchsLag: a head that a batch has left behind its taken cells fits the
// ring as well as one it has moved.
func TestMisfitsAllowABatchsLag(t *testing.T) {
	_, _, _, in, _ := runState(t, 6, 3, true)
	if m := in.misfits(0, true); m != 0 {
		t.Fatalf("the head a batch left behind three taken cells: %d misfits; want 0", m)
	}
	if m := in.misfits(3, true); m != 0 {
		t.Fatalf("the head moved past them: %d misfits; want 0", m)
	}
}

// TestPushRepairsACellABatchMayHaveTaken: a batch has taken position 0 without moving the head
// and is taking position 1 (its claim in the cell) when the cell is scribbled with a handle of
// the wrong lap, and the tail still says 1. A producer that repairs the cell must mark position
// 1 done, as it does with the head at 1: the batch may have taken it (it had), and moves the
// head past it. Found by the checker (oldest/takebatch-scribble-wrong-lap-handle, seed 2): the
// producer made the cell ready for position 1 and filled it again, behind where the batch then
// moved the head, and the message was lost.
func TestPushRepairsACellABatchMayHaveTaken(t *testing.T) {
	r, pub, con, in, hs := runState(t, 2, 1, true)
	idx, _ := con.reserve()
	w := con.held.word(uint32(idx))
	w.Store(heldPending | uint64(hs[1])) // the batch's take of position 1, half done
	in.cell(1).Store(in.claimed(uint64(idx), 1))
	in.cell(1).Store(0x40 | in.parity(1+in.cap)) // the scribble
	in.v.hdr.tail.Store(1)
	h, err := send(context.Background(), r, pub, in, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	w.Store(uint64(hs[1])) // the take goes on: the message of position 1 is the batch's
	in.advanceHead(2)      // and the batch ends
	idx2, _ := con.reserve()
	got, ok, err := in.take(con.held.word(uint32(idx2)), uint64(idx2))
	if err != nil || !ok || got != h {
		t.Fatalf("take after the batch: %v, %v, %v; want the third message %v", got, ok, err, h)
	}
}
