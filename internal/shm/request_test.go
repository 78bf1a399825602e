package shm

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A reply goes only into an open reply inbox of the generation named: a forged or stale
// address (a plain subscription, a closed reply inbox, an index out of range) is refused and
// the reply's buffer goes back to its pool.
func TestReplyRefusesOtherInboxes(t *testing.T) {
	r, me, _ := newTestRegion(t, "reply-refuse")
	ctx := context.Background()
	plain, err := me.OpenInbox(InboxConfig{Capacity: 4, Pattern: "a.b"})
	if err != nil {
		t.Fatal(err)
	}
	reply, err := me.OpenReplyInbox(4)
	if err != nil {
		t.Fatal(err)
	}
	stale := reply.ID()
	if err := me.CloseInbox(&reply); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		to   InboxID
		want error
	}{
		{plain.ID(), ErrNotReplyInbox},
		{stale, ErrClosed},
		{InboxID(1<<16 | 0xfff0), ErrCorrupt},
	} {
		l, err := me.Loan(8)
		if err != nil {
			t.Fatal(err)
		}
		if err := me.Reply(ctx, l, 8, c.to, 1, 0); !errors.Is(err, c.want) {
			t.Errorf("reply to %#x: %v, want %v", uint64(c.to), err, c.want)
		}
	}
	if plain.Len() != 0 {
		t.Fatal("a reply landed in a plain subscription")
	}
	for i, n := range r.CountAllocated() {
		if n != 0 {
			t.Errorf("class %d: %d buffers left allocated", i, n)
		}
	}
}

// AwaitReply takes the reply with its correlation id, dropping others, and a taker named in
// the awaiting word is checked: a ReplyCheck error ends the wait.
func TestAwaitReplyMatchesCorr(t *testing.T) {
	r, me, _ := newTestRegion(t, "reply-corr")
	ctx := context.Background()
	in, err := me.OpenReplyInbox(4)
	if err != nil {
		t.Fatal(err)
	}
	for _, corr := range []uint64{6, 7} {
		l, _ := me.Loan(8)
		l.Bytes()[0] = byte(corr)
		if err := me.Reply(ctx, l, 1, in.ID(), corr, 0); err != nil {
			t.Fatal(err)
		}
	}
	h, err := me.AwaitReply(ctx, &in, Waiter{}, 7, nil, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if h.Data()[0] != 7 || h.Corr() != 7 {
		t.Fatalf("took %d", h.Data()[0])
	}
	h.Release()
	dead := errors.New("gone")
	_, err = me.AwaitReply(ctx, &in, Waiter{Strategy: Sleep}, 8, func() error { return dead }, time.Millisecond)
	if !errors.Is(err, dead) {
		t.Fatalf("AwaitReply with a failing check: %v", err)
	}
	for i, n := range r.CountAllocated() {
		if n != 0 {
			t.Errorf("class %d: %d buffers left allocated", i, n)
		}
	}
}

// FuzzReplyAddress: a reply to any address (an InboxID read from a request's header, which
// another process may have scribbled) either lands in the one open reply inbox it names or
// is refused; nothing panics and no buffer is left allocated.
func FuzzReplyAddress(f *testing.F) {
	f.Add(uint64(0), uint64(1))
	f.Add(uint64(1<<16|1), uint64(7))
	f.Add(^uint64(0), uint64(0))
	r, err := Create("reply-fuzz", Options{Dir: f.TempDir(), Config: mpConfig()})
	if err != nil {
		f.Fatal(err)
	}
	me, err := r.Attach("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { me.Detach(); r.Close() })
	f.Fuzz(func(t *testing.T, id, corr uint64) {
		in, err := me.OpenReplyInbox(2)
		if err != nil {
			t.Fatal(err)
		}
		defer me.CloseInbox(&in)
		l, err := me.Loan(8)
		if err != nil {
			t.Fatal(err)
		}
		err = me.Reply(context.Background(), l, 8, InboxID(id), corr, uint32(id>>40))
		if err == nil && InboxID(id) != in.ID() {
			t.Fatalf("a reply to %#x landed; the only reply inbox is %#x", id, uint64(in.ID()))
		}
		me.CloseInbox(&in)
		for i, n := range r.CountAllocated() {
			if n != 0 {
				t.Fatalf("class %d: %d buffers left allocated", i, n)
			}
		}
	})
}
