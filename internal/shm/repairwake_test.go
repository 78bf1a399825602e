package shm

import (
	"context"
	"testing"
	"time"
)

// A Block producer asleep on a full inbox is woken when a take makes room by skipping
// damage: the head moved past a scribbled cell (skip), or past a cell whose position is done
// (a lagging head helped along). Before, only a take of a message woke producers: with the
// rest of the ring scribbled the producer slept on although there was room, until something
// else woke it (about a second here).
func TestSkippedDamageWakesBlockedProducer(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	q := attachUnit(t, r, "consumer")
	p := attachUnit(t, r, "producer")
	in, err := q.OpenInbox(InboxConfig{Capacity: 2, Overflow: Block, BlockLimit: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	out, err := r.inbox(in.ID())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	send := func() (Handle, error) {
		b, err := p.alloc(8)
		if err != nil {
			return 0, err
		}
		err = out.deliverBuffer(ctx, b)
		if uerr := p.unloan(b.h); uerr != nil {
			t.Error(uerr)
		}
		return b.h, err
	}
	var queued []Handle
	for range 2 {
		h, err := send()
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, h)
	}
	done := make(chan error, 1)
	go func() { _, err := send(); done <- err }() // the ring is full: it waits for room
	untilTrue(t, 10*time.Second, "producer waiting for room", func() bool { return waiters(in.v.hdr.spaceWaiters.Load()) != 0 })
	// Both queued messages destroyed: empty markers of positions far away in both cells.
	for pos := range uint64(2) {
		in.cell(pos).Store(in.empty(pos + 6))
	}
	idx, err := q.reserve()
	if err != nil {
		t.Fatal(err)
	}
	rang := 0
	testHookWakeProducers = func() { rang++ }
	defer func() { testHookWakeProducers = nil }()
	// The take finds nothing, or, if the producer it woke was quick, the producer's message.
	h, ok, err := in.tryPopInto(q, idx)
	if err != nil || ok && (h == queued[0] || h == queued[1]) {
		t.Fatalf("take over two scribbled cells: %v %v %v, want nothing or the blocked producer's message", h, ok, err)
	}
	if ok {
		if err := q.unhold(idx, h); err != nil {
			t.Fatal(err)
		}
	}
	testHookWakeProducers = nil
	if rang == 0 {
		t.Error("the take moved the head past two damaged cells and woke no producer waiting for room")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the blocked producer: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the blocked producer never got its room")
	}
}
