package bus

import "testing"

// A subscriber's local copies of ring messages are made for the first ring it reads
// (min(slots, 64) of them). They were kept for a later ring of the topic with the same
// payload, however many slots that had: after a 4-slot ring, a subscriber of a 1024-slot
// ring got ErrHeldFull holding 4 messages, where ErrHeldFull's doc promises 64.
func TestRingCopiesFollowTheRing(t *testing.T) {
	b := openRingBus(t, 2)
	ctx := ctxT(t)
	s := mustSubscribe(t, b, "copies.x", WithQueueDepth(2))
	pub1, err := b.Publisher("copies.x", WithSlotRing(4, 64))
	if err != nil {
		t.Fatal(err)
	}
	if err := pub1.Publish(ctx, []byte("first ring")); err != nil {
		t.Fatal(err)
	}
	m := receiveN(t, ctx, s, 1)[0]
	if string(m.data) != "first ring" {
		t.Fatalf("got %q", m.data)
	}
	pub1.Close()
	pub2, err := b.Publisher("copies.x", WithSlotRing(1024, 64))
	if err != nil {
		t.Fatal(err)
	}
	defer pub2.Close()
	const n = 16
	for i := range n {
		if err := pub2.Publish(ctx, ringPayload(i, 8)); err != nil {
			t.Fatal(err)
		}
	}
	var held []Message
	defer func() {
		for _, m := range held {
			m.Release()
		}
	}()
	for i := range n {
		m, err := s.Receive(ctx)
		if err != nil {
			t.Fatalf("Receive %d of %d messages of a 1024-slot ring, holding %d: %v (want room for min(1024, 64) = 64)", i+1, n, len(held), err)
		}
		held = append(held, m)
	}
}
