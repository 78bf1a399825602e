package shm

import (
	"errors"
	"testing"
)

// A loan out when Retire comes holds the ring open until it ends, and its commit is the ring's
// last message (SlotRing.Retire). CommitLoan refused it (claim's check of the closed flag),
// after it had taken the topic's sequence number: a number no message had, and a message the
// doc promised lost.
func TestRingLoanOutAtRetireCommits(t *testing.T) {
	_, me, _ := newTestRegion(t, "retire-loan")
	tp := ringTopic(t, me, "ring.a")
	w, rr := ringPair(t, me, tp)
	l, err := w.Loan(8)
	if err != nil {
		t.Fatal(err)
	}
	copy(l.Bytes(), "last one")
	before := tp.e.seq.Load()
	w.Retire()
	seq, err := w.CommitLoan(l, 8)
	w.EndLoan()
	if err != nil {
		t.Fatalf("the commit of a loan out at Retire: %v", err)
	}
	if seq != before+1 || tp.e.seq.Load() != before+1 {
		t.Errorf("topic sequence %d (counter %d), want %d", seq, tp.e.seq.Load(), before+1)
	}
	dst := make([]byte, rr.Payload())
	m, err := pollRing(t, rr, dst)
	if err != nil || string(dst[:m.Len]) != "last one" {
		t.Fatalf("the reader's last message: %q, %v", dst[:m.Len], err)
	}
	if _, err := w.Loan(8); !errors.Is(err, ErrClosed) {
		t.Errorf("a loan after the retirement: %v, want ErrClosed", err)
	}
	if !w.Free(false) { // its only reader has read everything
		t.Error("the retired ring is not freed once its reader has read its last message")
		w.Free(true)
	}
	if _, ok, err := rr.Poll(dst); ok || !errors.Is(err, ErrRingEnded) {
		t.Errorf("after the last message and the free: %v, %v, want ErrRingEnded", ok, err)
	}
}
