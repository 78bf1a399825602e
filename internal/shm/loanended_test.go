package shm

import (
	"context"
	"errors"
	"testing"
)

// A loan whose buffer's state word another process scribbled on before the send fails the
// send (a batch, a reply, a discard) with an error wrapping ErrCorrupt: the corruption test's publisher
// once got ErrLoanEnded ("loan already sent or discarded") for a send it had not made, and
// stopped. A loan that did end (sent, or its buffer allocated again since) still gets
// ErrLoanEnded.
func TestScribbledLoanIsCorruptNotEnded(t *testing.T) {
	g := newBatchRig(t, inboxConfig(), 1, 16, DropOldest)
	ctx := context.Background()
	scribble := func(l Loan) {
		v := l.buf.s.state.Load()
		l.buf.s.state.Store(v ^ 0x5a5a5a5a5a5a5a5a) // another generation and owner
		if endedState(l.buf.s.state.Load(), l.buf.h) {
			t.Fatal("the scribble looks like an ended loan: pick another")
		}
	}
	wantCorrupt := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrLoanEnded) {
			t.Fatalf("%s of a scribbled loan: %v, want an error wrapping ErrCorrupt", what, err)
		}
	}

	l, err := g.p.Loan(8)
	if err != nil {
		t.Fatal(err)
	}
	scribble(l)
	_, err = g.t.Send(ctx, l, 8, g.outs)
	wantCorrupt("Send", err)

	l, err = g.p.Loan(8)
	if err != nil {
		t.Fatal(err)
	}
	scribble(l)
	wantCorrupt("Discard", l.Discard())

	var loans [2]Loan
	ls, err := g.p.LoanBatch(loans[:], 8)
	if err != nil || len(ls) != 2 {
		t.Fatal(len(ls), err)
	}
	scribble(ls[1])
	_, err = g.t.SendBatch(ctx, ls, []int{8, 8}, g.outs)
	wantCorrupt("SendBatch", err)
	if n := g.ins[0].Len(); n != 0 {
		t.Fatalf("%d messages delivered, want 0", n)
	}

	reply, err := g.p.OpenReplyInbox(4)
	if err != nil {
		t.Fatal(err)
	}
	defer reply.close()
	l, err = g.p.Loan(8)
	if err != nil {
		t.Fatal(err)
	}
	scribble(l)
	wantCorrupt("Reply", g.p.Reply(ctx, l, 8, reply.ID(), 1, 0))

	// Ended, then its slot allocated again: ErrLoanEnded, as before.
	l, err = g.p.Loan(8)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Discard(); err != nil {
		t.Fatal(err)
	}
	again, err := g.p.Loan(8)
	if err != nil {
		t.Fatal(err)
	}
	if again.buf.s != l.buf.s {
		t.Fatal("the next loan took another slot: the test needs the same one")
	}
	if _, err := g.t.Send(ctx, l, 8, g.outs); !errors.Is(err, ErrLoanEnded) {
		t.Fatalf("Send of a loan discarded and its slot lent again: %v, want ErrLoanEnded", err)
	}
	if err := l.Discard(); !errors.Is(err, ErrLoanEnded) {
		t.Fatalf("Discard of a loan discarded before: %v, want ErrLoanEnded", err)
	}
	if err := again.Discard(); err != nil {
		t.Fatal(err)
	}
}

func TestEndedState(t *testing.T) {
	h := makeHandle(0, 3, 1000)
	st := func(gen uint64, owner, refs uint32) uint64 {
		return gen<<genShift | uint64(owner)<<ownerShift | uint64(refs)
	}
	for _, c := range []struct {
		v     uint64
		ended bool
		what  string
	}{
		{st(1000, 0, 1), true, "sent: the target's reference, no owner"},
		{st(1000, 0, 0), true, "discarded or released: free"},
		{st(1001, 7, 1), true, "lent again to another participant"},
		{st(1000+loanEndedAhead, 0, 0), true, "lent again 2^32 times"},
		{st(1000, 7, 1), false, "another owner in the loan's own generation"},
		{st(1000, 5, 0), false, "an owner with no reference"},
		{st(999, 0, 0), false, "an older generation"},
		{st(1001+loanEndedAhead, 0, 0), false, "too far ahead"},
	} {
		if got := endedState(c.v, h); got != c.ended {
			t.Errorf("%s: endedState = %v, want %v", c.what, got, c.ended)
		}
	}
}
