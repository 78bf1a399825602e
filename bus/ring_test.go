package bus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/internal/shm"
)

// Tests of a publisher's slot ring (WithSlotRing), against the contract in WithSlotRing's doc
// comment: who reads the ring and who gets copies through their queues, lapping and its drop
// count, the one-loan-at-a-time rule, one ring per topic, closing without losing messages,
// waking sleepers, Select, ReceiveBatch, Len and Drain, other processes (a writer killed
// mid-stream included), and allocations.

// ---------------------------------------------------------------------------------------------
// Helpers

// ringConfig is a small region for the ring tests: inboxes of up to inboxCap cells, 16
// inboxes (so a ring has 16 reader entries), a 16 KiB class that holds a ring of 64 slots of
// 64 bytes and a 1 MiB class that holds one of 4096 slots of 16 bytes.
func ringConfig(inboxCap uint32) Config {
	return Config{
		Classes:       []Class{{Size: 256, Count: 512}, {Size: 16 << 10, Count: 8}, {Size: 1 << 20, Count: 2}},
		Inboxes:       16,
		InboxCapacity: inboxCap,
		Topics:        32,
		Participants:  8,
		HistoryDepth:  4,
		Held:          256,
	}
}

// openRingBus opens a bus of ringConfig(inboxCap) in a directory of its own, closed when the
// test ends. The reaper runs every 5 ms, so that retired rings are freed promptly.
func openRingBus(t *testing.T, inboxCap uint32, opts ...Option) *Bus {
	t.Helper()
	return openTest(t, t.TempDir(), append([]Option{WithConfig(ringConfig(inboxCap)), WithReapInterval(5 * time.Millisecond)}, opts...)...)
}

func mustSubscribe(t *testing.T, b *Bus, pattern string, opts ...SubscribeOption) *Subscription {
	t.Helper()
	s, err := b.Subscribe(pattern, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ringPublisher returns a publisher of topic with a slot ring of slots x size, closed when
// the test ends.
func ringPublisher(t *testing.T, b *Bus, topic string, slots, size int) *Publisher {
	t.Helper()
	p, err := b.Publisher(topic, WithSlotRing(slots, size))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// publishRing publishes messages from to to-1 (ringPayload(i, size)) through pub.
func publishRing(t *testing.T, ctx context.Context, pub *Publisher, from, to, size int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := pub.Publish(ctx, ringPayload(i, size)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
}

// ringPayload is message i's n bytes: every byte depends on i and its position, so a message
// mixed with another, cut short or moved shows.
func ringPayload(i, n int) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i*31 + j*7 + 1)
	}
	return b
}

// sendRingWay publishes data through pub in one of three ways, by way: Loan, Write, Send;
// Loan, copy into Bytes, Send; Publish.
func sendRingWay(ctx context.Context, pub *Publisher, way int, data []byte) error {
	switch way % 3 {
	case 0:
		l, err := pub.Loan(len(data))
		if err != nil {
			return err
		}
		if err := l.Write(data); err != nil {
			return err
		}
		return pub.Send(ctx, l)
	case 1:
		l, err := pub.Loan(len(data))
		if err != nil {
			return err
		}
		if len(l.Bytes()) != len(data) {
			return fmt.Errorf("loan of %d bytes has %d", len(data), len(l.Bytes()))
		}
		copy(l.Bytes(), data)
		return pub.Send(ctx, l)
	default:
		return pub.Publish(ctx, data)
	}
}

// received is what a subscriber saw of one message, copied out before its release.
type received struct {
	data  []byte
	seq   uint64
	topic string
	at    time.Time
}

// receiveN receives n messages from s, copies what it needs and releases each.
func receiveN(t *testing.T, ctx context.Context, s *Subscription, n int) []received {
	t.Helper()
	out := make([]received, 0, n)
	for range n {
		m, err := s.Receive(ctx)
		if err != nil {
			t.Fatalf("%s: receive %d of %d: %v", s.Pattern(), len(out)+1, n, err)
		}
		out = append(out, received{data: m.Clone(), seq: m.Seq(), topic: m.Topic(), at: m.Time()})
		if err := m.Release(); err != nil {
			t.Fatalf("%s: release: %v", s.Pattern(), err)
		}
	}
	return out
}

func subStats(t *testing.T, s *Subscription) SubscriptionStats {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitSleeping polls s's counters until a consumer of s is asleep on its wake word (its
// Receive, Select or handler has parked), bounded by ctx: the state is the shared counter's,
// not a guess at how long parking takes.
func waitSleeping(t *testing.T, ctx context.Context, s *Subscription) {
	t.Helper()
	for !subStats(t, s).Sleeping {
		if ctx.Err() != nil {
			t.Fatalf("%s: its consumer never went to sleep", s.Pattern())
		}
		time.Sleep(100 * time.Microsecond) // polling a counter, bounded by ctx
	}
}

// receiveAsync starts Receive on s in a goroutine; the result arrives on the channel.
func receiveAsync(ctx context.Context, s *Subscription) <-chan received {
	c := make(chan received, 1)
	go func() {
		m, err := s.Receive(ctx)
		if err != nil {
			c <- received{topic: "error: " + err.Error()}
			return
		}
		c <- received{data: m.Clone(), seq: m.Seq(), topic: m.Topic(), at: m.Time()}
		m.Release()
	}()
	return c
}

// ---------------------------------------------------------------------------------------------
// 1. Delivery

// TestRingDelivery: a subscriber to the topic's name with default options (DropOldest, a
// queue of the region's 8 cells, fewer than the ring's 16 slots) reads the ring. Every message
// sent by Loan/Write/Send, Loan/Bytes/Send and Publish, of every length from 0 to the slot
// size, arrives once, in order, intact, with the topic's next sequence number, the topic's
// name and a publish time between the send and the receive. A subscriber that keeps up drops
// nothing, and its queue is never used (it got everything from the ring).
func TestRingDelivery(t *testing.T) {
	b := openRingBus(t, 8)
	ctx := ctxT(t)
	s := mustSubscribe(t, b, "ring.deliver")
	pub := ringPublisher(t, b, "ring.deliver", 16, 64)
	const n, batch = 195, 13 // lengths 0..64 three times over; batches shorter than the ring
	var sent [][]byte
	for i := 0; i < n; i += batch {
		before := time.Now()
		for j := i; j < i+batch; j++ {
			data := ringPayload(j, j%65)
			if err := sendRingWay(ctx, pub, j, data); err != nil {
				t.Fatalf("message %d (way %d): %v", j, j%3, err)
			}
			sent = append(sent, data)
		}
		got := receiveN(t, ctx, s, batch)
		after := time.Now()
		for k, m := range got {
			j := i + k
			if string(m.data) != string(sent[j]) {
				t.Fatalf("message %d: got %x (%d bytes), want %x (%d bytes)", j, m.data, len(m.data), sent[j], len(sent[j]))
			}
			if m.seq != uint64(j+1) {
				t.Fatalf("message %d: seq %d, want %d", j, m.seq, j+1)
			}
			if m.topic != "ring.deliver" {
				t.Fatalf("message %d: topic %q", j, m.topic)
			}
			if m.at.Before(before.Add(-50*time.Millisecond)) || m.at.After(after.Add(50*time.Millisecond)) {
				t.Fatalf("message %d: publish time %v outside [%v, %v]", j, m.at, before, after)
			}
		}
	}
	st := subStats(t, s)
	if st.DropOldest != 0 || st.DropNewest != 0 || st.DropTimeout != 0 {
		t.Fatalf("a subscriber that kept up dropped messages: %+v", st)
	}
	if st.Pushed != 0 {
		t.Fatalf("the ring's reader was sent %d messages through its queue; want all from the ring", st.Pushed)
	}
	if s.Len() != 0 {
		t.Fatalf("Len %d after reading everything", s.Len())
	}
	if pub.Published() != n {
		t.Fatalf("Published %d, want %d", pub.Published(), n)
	}
	// Loan.WithTime: the ring carries the publish time given.
	at := time.Now().Add(-time.Hour).Round(time.Microsecond)
	l, err := pub.Loan(3)
	if err != nil {
		t.Fatal(err)
	}
	copy(l.Bytes(), "old")
	if err := pub.Send(ctx, l.WithTime(at)); err != nil {
		t.Fatal(err)
	}
	m := receiveN(t, ctx, s, 1)[0]
	if string(m.data) != "old" || !m.at.Equal(at) {
		t.Fatalf("WithTime: got %q at %v, want %q at %v", m.data, m.at, "old", at)
	}
}

// ---------------------------------------------------------------------------------------------
// 2. Mixed subscribers

// TestRingMixedSubscribers: beside two readers of the ring, wildcard subscribers ("mix.*",
// ">"), a Block subscriber, a DropNewest subscriber, one whose queue (16) is as deep as the
// ring (16 slots) and the one member of a queue group receive every message exactly once, in
// order, through their queues, with the same bytes, sequence number and publish time the
// ring's readers see.
func TestRingMixedSubscribers(t *testing.T) {
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	ringA := mustSubscribe(t, b, "mix.x", WithQueueDepth(8))
	ringB := mustSubscribe(t, b, "mix.x", WithQueueDepth(2), WithWait(Sleep))
	others := map[string]*Subscription{
		"wildcard":   mustSubscribe(t, b, "mix.*", WithQueueDepth(8)),
		"tail":       mustSubscribe(t, b, ">", WithQueueDepth(8)),
		"block":      mustSubscribe(t, b, "mix.x", WithOverflow(Block), WithQueueDepth(8)),
		"dropnewest": mustSubscribe(t, b, "mix.x", WithOverflow(DropNewest), WithQueueDepth(8)),
		"deep":       mustSubscribe(t, b, "mix.x", WithQueueDepth(16)),
		"group":      mustSubscribe(t, b, "mix.x", WithQueueGroup("g"), WithQueueDepth(8)),
	}
	pub := ringPublisher(t, b, "mix.x", 16, 64)
	const n, batch = 96, 8
	for i := 0; i < n; i += batch {
		var sent [][]byte
		for j := i; j < i+batch; j++ {
			data := ringPayload(j, 1+j%64)
			if err := sendRingWay(ctx, pub, j, data); err != nil {
				t.Fatalf("message %d: %v", j, err)
			}
			sent = append(sent, data)
		}
		ref := receiveN(t, ctx, ringA, batch)
		for k, m := range ref {
			if string(m.data) != string(sent[k]) || m.seq != uint64(i+k+1) {
				t.Fatalf("ring reader: message %d: got %x seq %d, want %x seq %d", i+k, m.data, m.seq, sent[k], i+k+1)
			}
		}
		check := func(name string, s *Subscription) {
			t.Helper()
			got := receiveN(t, ctx, s, batch)
			for k, m := range got {
				if string(m.data) != string(ref[k].data) || m.seq != ref[k].seq || !m.at.Equal(ref[k].at) || m.topic != "mix.x" {
					t.Fatalf("%s: message %d: got %x seq %d at %v on %q; the ring's reader got %x seq %d at %v",
						name, i+k, m.data, m.seq, m.at, m.topic, ref[k].data, ref[k].seq, ref[k].at)
				}
			}
		}
		check("second ring reader", ringB)
		for name, s := range others {
			check(name, s)
		}
	}
	for name, s := range map[string]*Subscription{"ring reader": ringA, "second ring reader": ringB} {
		if st := subStats(t, s); st.Pushed != 0 || st.DropOldest != 0 {
			t.Errorf("%s: %d messages through its queue, %d dropped; want 0 and 0 (it reads the ring)", name, st.Pushed, st.DropOldest)
		}
	}
	for name, s := range others {
		st := subStats(t, s)
		if st.Pushed != n || st.DropOldest+st.DropNewest+st.DropTimeout != 0 {
			t.Errorf("%s: %d messages through its queue, drops %d/%d/%d; want %d and none", name, st.Pushed, st.DropOldest, st.DropNewest, st.DropTimeout, n)
		}
		if s.Len() != 0 {
			t.Errorf("%s: %d messages left", name, s.Len())
		}
	}
	if n := inUse(b); n != 1 {
		t.Errorf("%d buffers in use after every release; want 1 (the ring's)", n)
	}
}

// ---------------------------------------------------------------------------------------------
// 3. Lapping

// TestRingLapped: a reader of the ring that does not receive while the publisher sends more
// than the ring's slots then gets the newest messages, in order (at least slots-1 of them,
// the last one always), and counts every message it missed as a DropOldest drop: received +
// dropped == sent. Both when it first meets the ring lapped, and when it has been reading it.
func TestRingLapped(t *testing.T) {
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	const slots = 16
	s := mustSubscribe(t, b, "lap.x", WithQueueDepth(8))
	pub := ringPublisher(t, b, "lap.x", slots, 64)
	total, receivedTotal := 0, 0
	for round, n := range []int{100, 40, slots + 1, 1000} {
		for j := total; j < total+n; j++ {
			if err := pub.Publish(ctx, ringPayload(j, 8+j%57)); err != nil {
				t.Fatal(err)
			}
		}
		total += n
		// (Round 0's reader has not opened the ring yet: TestRingLenAndDrain covers its Len.)
		if l := s.Len(); round > 0 && (l < slots-1 || l > slots) {
			t.Errorf("round %d: Len %d with the ring lapped; want %d or %d", round, l, slots-1, slots)
		}
		var got []uint64
		for {
			m, err := s.Receive(ctx)
			if err != nil {
				t.Fatalf("round %d: %v after %v", round, err, got)
			}
			j := int(m.Seq()) - 1
			if string(m.Data()) != string(ringPayload(j, 8+j%57)) {
				t.Fatalf("round %d: message seq %d is not intact: %x", round, m.Seq(), m.Data())
			}
			got = append(got, m.Seq())
			m.Release()
			if j == total-1 {
				break
			}
		}
		receivedTotal += len(got)
		for k := 1; k < len(got); k++ {
			if got[k] != got[k-1]+1 {
				t.Fatalf("round %d: received %v: not the newest messages in order", round, got)
			}
		}
		if len(got) < slots-1 {
			t.Fatalf("round %d: received %d of the newest, want at least %d: %v", round, len(got), slots-1, got)
		}
		st := subStats(t, s)
		if uint64(receivedTotal)+st.DropOldest != uint64(total) {
			t.Fatalf("round %d: received %d + dropped %d != sent %d", round, receivedTotal, st.DropOldest, total)
		}
		if s.Len() != 0 {
			t.Fatalf("round %d: Len %d after the newest message", round, s.Len())
		}
	}
}

// TestRingLapsKeepReceivedCount: a subscriber that reads a ring also gets another publisher's
// messages of the topic through its queue. The ring's laps count as drop-oldest, but they
// never moved the queue's head, so they must not come off its received count (Popped,
// offq_inbox_received_total): it stays the queue messages taken, and never goes down.
func TestRingLapsKeepReceivedCount(t *testing.T) {
	b := openRingBus(t, 4)
	ctx := ctxT(t)
	const slots, sent = 16, 40
	sub := mustSubscribe(t, b, "laps.x", WithQueueDepth(4))
	ring := ringPublisher(t, b, "laps.x", slots, 32)
	plain, err := b.Publisher("laps.x")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	queue := func(n int) {
		t.Helper()
		for i := range n {
			if err := plain.Publish(ctx, []byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
		receiveN(t, ctx, sub, n)
	}
	queue(3)
	if st := subStats(t, sub); st.Popped != 3 || st.Pushed != 3 {
		t.Fatalf("after 3 queue messages taken: delivered %d, received %d, want 3, 3", st.Pushed, st.Popped)
	}
	for i := range sent { // laps the subscriber: it reads the newest slots, the rest are lost
		if err := ring.Publish(ctx, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	receiveN(t, ctx, sub, slots)
	st := subStats(t, sub)
	if st.DropOldest != sent-slots {
		t.Fatalf("drop-oldest %d after the ring lapped the subscriber by %d", st.DropOldest, sent-slots)
	}
	if st.Popped != 3 || st.Pushed != 3 || st.Depth != 0 {
		t.Errorf("after the ring lapped the subscriber (drop-oldest %d): delivered %d, received %d, depth %d; want 3, 3, 0",
			st.DropOldest, st.Pushed, st.Popped, st.Depth)
	}
	queue(2)
	if st := subStats(t, sub); st.Popped != 5 || st.Pushed != 5 || st.DropOldest != sent-slots {
		t.Errorf("after 2 more queue messages: delivered %d, received %d, drop-oldest %d; want 5, 5, %d",
			st.Pushed, st.Popped, st.DropOldest, sent-slots)
	}
}

// ---------------------------------------------------------------------------------------------
// 4. Loan rules

// TestRingLoanRules: a ring publisher lends one message at a time. A second Loan while one is
// out fails with ErrRingLoaned, and Publish waits its turn (bounded by its ctx); after Send
// or Discard, Loan works again. Sending or discarding a loan a second time gives
// ErrLoanEnded and leaves the ring free to lend. A message over the slot size is ErrTooLarge
// (also for Publish), LoanBatch and SendBatch are refused, and a loan refused by SendBatch is
// still the caller's to send. The subscriber receives exactly the messages sent, in order.
func TestRingLoanRules(t *testing.T) {
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	s := mustSubscribe(t, b, "loan.x", WithQueueDepth(8))
	pub := ringPublisher(t, b, "loan.x", 16, 64)
	var want []string

	l1, err := pub.Loan(5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Loan(5); !errors.Is(err, ErrRingLoaned) {
		t.Fatalf("second Loan while one is out: %v, want ErrRingLoaned", err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	err = pub.Publish(short, []byte("never"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish while a loan is out, ctx expiring: %v, want DeadlineExceeded", err)
	}
	copy(l1.Bytes(), "first")
	if err := pub.Send(ctx, l1); err != nil {
		t.Fatal(err)
	}
	want = append(want, "first")

	l2, err := pub.Loan(6)
	if err != nil {
		t.Fatalf("Loan after Send: %v", err)
	}
	if err := l2.Discard(); err != nil {
		t.Fatal(err)
	}
	l3, err := pub.Loan(5)
	if err != nil {
		t.Fatalf("Loan after Discard: %v", err)
	}
	copy(l3.Bytes(), "third")
	if err := pub.Send(ctx, l3); err != nil {
		t.Fatal(err)
	}
	want = append(want, "third")

	for name, err := range map[string]error{
		"Discard of a sent loan":      l1.Discard(),
		"Send of a sent loan":         pub.Send(ctx, l1),
		"Discard of a discarded loan": l2.Discard(),
		"Send of a discarded loan":    pub.Send(ctx, l2),
	} {
		if !errors.Is(err, ErrLoanEnded) {
			t.Errorf("%s: %v, want ErrLoanEnded", name, err)
		}
	}

	// (TestRingSizeLimit checks Loan and Publish of one byte more than the slot size.)
	if l, err := pub.Loan(1000); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Loan(1000) from a ring of 64-byte slots: %v, want ErrTooLarge", err)
		if err == nil {
			l.Discard()
		}
	}
	if err := pub.Publish(ctx, make([]byte, 1000)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Publish of 1000 bytes to a ring of 64-byte slots: %v, want ErrTooLarge", err)
	}
	if l, err := pub.Loan(-1); err == nil {
		t.Errorf("Loan(-1) succeeded")
		l.Discard()
	}
	loans, err := pub.LoanBatch(make([]Loan, 4), 8)
	if err == nil || len(loans) != 0 {
		t.Errorf("LoanBatch: %d loans, %v; want none and an error", len(loans), err)
	}

	// None of the refusals above left the ring lent.
	l4, err := pub.Loan(64)
	if err != nil {
		t.Fatalf("Loan(size) after the refusals: %v", err)
	}
	copy(l4.Bytes(), ringPayload(4, 64))
	if err := pub.SendBatch(ctx, []Loan{l4}); err == nil {
		t.Errorf("SendBatch of a ring loan succeeded")
	}
	if err := pub.Send(ctx, l4); err != nil {
		t.Fatalf("Send of the loan SendBatch refused: %v", err)
	}
	want = append(want, string(ringPayload(4, 64)))

	// Publish waits for an outstanding loan, then goes after it.
	l5, err := pub.Loan(4)
	if err != nil {
		t.Fatal(err)
	}
	copy(l5.Bytes(), "fift")
	done := make(chan error, 1)
	go func() { done <- pub.Publish(ctx, []byte("waited")) }()
	if err := pub.Send(ctx, l5); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Publish that waited for a loan: %v", err)
	}
	want = append(want, "fift", "waited")

	var got []string
	for _, m := range receiveN(t, ctx, s, len(want)) {
		got = append(got, string(m.data))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("received %q, want %q", got, want)
	}
	if s.Len() != 0 {
		t.Fatalf("%d more messages: a refused or ended loan was delivered", s.Len())
	}

	// A loan out when the publisher closes is not delivered; afterwards everything is ErrClosed.
	l6, err := pub.Loan(4)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Send(ctx, l6); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}
	if _, err := pub.Loan(4); !errors.Is(err, ErrClosed) {
		t.Errorf("Loan after Close: %v, want ErrClosed", err)
	}
	if err := pub.Publish(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
}

// TestRingSizeLimit: a ring publisher's message may not exceed the size given to
// WithSlotRing: Loan(size) and Publish of size bytes work, Loan(size+1) and Publish of size+1
// bytes fail with ErrTooLarge (and leave the ring free to lend), for sizes that are and are not
// a whole number of cache lines once the slot's 32-byte header is added.
func TestRingSizeLimit(t *testing.T) {
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	for i, size := range []int{1, 10, 32, 64, 100} {
		topic := fmt.Sprintf("size.s%d", i)
		s := mustSubscribe(t, b, topic, WithQueueDepth(8))
		pub := ringPublisher(t, b, topic, 16, size)
		if l, err := pub.Loan(size + 1); !errors.Is(err, ErrTooLarge) {
			t.Errorf("WithSlotRing(16, %d): Loan(%d): %v, want ErrTooLarge", size, size+1, err)
			if err == nil {
				l.Discard()
			}
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := pub.Publish(pctx, ringPayload(1, size+1)); !errors.Is(err, ErrTooLarge) {
			t.Errorf("WithSlotRing(16, %d): Publish of %d bytes: %v, want ErrTooLarge", size, size+1, err)
			if err == nil {
				receiveN(t, ctx, s, 1) // delivered: take it out of the way
			}
		}
		cancel()
		l, err := pub.Loan(size)
		if err != nil {
			t.Fatalf("WithSlotRing(16, %d): Loan(%d): %v", size, size, err)
		}
		copy(l.Bytes(), ringPayload(0, size))
		if err := pub.Send(ctx, l); err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(ctx, ringPayload(2, size)); err != nil {
			t.Fatalf("WithSlotRing(16, %d): Publish of %d bytes: %v", size, size, err)
		}
		for k, m := range receiveN(t, ctx, s, 2) {
			if want := ringPayload(2*k, size); string(m.data) != string(want) {
				t.Fatalf("WithSlotRing(16, %d): got %x, want %x", size, m.data, want)
			}
		}
	}
}

// concPayload is message k of goroutine g: g, k, and bytes derived from both.
func concPayload(g, k int) []byte {
	b := make([]byte, 16)
	b[0] = byte(g)
	binary.LittleEndian.PutUint32(b[1:], uint32(k))
	for j := 5; j < len(b); j++ {
		b[j] = byte(g*13 + k*7 + j)
	}
	return b
}

// checkConc returns the goroutine and number of a message concPayload made, or an error if
// its bytes are not what concPayload makes for them.
func checkConc(b []byte) (g, k int, err error) {
	if len(b) != 16 {
		return 0, 0, fmt.Errorf("%d bytes", len(b))
	}
	g, k = int(b[0]), int(binary.LittleEndian.Uint32(b[1:]))
	if string(b) != string(concPayload(g, k)) {
		return g, k, fmt.Errorf("goroutine %d message %d: bytes %x, want %x", g, k, b, concPayload(g, k))
	}
	return g, k, nil
}

// concurrentRing publishes goroutines x perG messages from that many goroutines at once
// through pub; each goroutine's messages are numbered 0, 1, ... in its order. Each goroutine
// calls halfway, if not nil, before its message perG/2.
func concurrentRing(t *testing.T, ctx context.Context, pub *Publisher, goroutines, perG int, halfway func()) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for k := range perG {
				if k == perG/2 && halfway != nil {
					halfway()
				}
				if err := pub.Publish(ctx, concPayload(g, k)); err != nil {
					errs <- fmt.Errorf("goroutine %d message %d: %w", g, k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// receiveConcOrder receives goroutines*perG messages on s, a reader of the ring, and checks
// them as checkConcOrder does.
func receiveConcOrder(t *testing.T, ctx context.Context, s *Subscription, goroutines, perG int) {
	t.Helper()
	var msgs [][]byte
	for _, m := range receiveN(t, ctx, s, goroutines*perG) {
		msgs = append(msgs, m.data)
	}
	checkConcOrder(t, "ring reader", msgs, goroutines, perG)
}

// checkConcOrder checks that msgs hold every goroutine's perG messages, intact, each
// goroutine's in its order.
func checkConcOrder(t *testing.T, who string, msgs [][]byte, goroutines, perG int) {
	t.Helper()
	next := make([]int, goroutines)
	for i, b := range msgs {
		g, k, err := checkConc(b)
		if err != nil {
			t.Fatalf("%s: message %d: %v", who, i, err)
		}
		if g >= goroutines || k != next[g] {
			t.Fatalf("%s: message %d is goroutine %d's %d, want its %d", who, i, g, k, next[min(g, goroutines-1)])
		}
		next[g]++
	}
	for g, k := range next {
		if k != perG {
			t.Fatalf("%s: goroutine %d: %d messages, want %d", who, g, k, perG)
		}
	}
}

// TestRingConcurrentPublish: Publish from 4 goroutines at once (1,000 messages each) on one
// ring publisher all succeed, and a reader of the ring (4,096 slots: never lapped) receives
// all 4,000, intact, each goroutine's in its order.
func TestRingConcurrentPublish(t *testing.T) {
	const goroutines, perG = 4, 1000
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	s := mustSubscribe(t, b, "conc.x", WithQueueDepth(8))
	pub := ringPublisher(t, b, "conc.x", 4096, 16)
	concurrentRing(t, ctx, pub, goroutines, perG, nil)
	receiveConcOrder(t, ctx, s, goroutines, perG)
	if st := subStats(t, s); st.DropOldest != 0 || st.Pushed != 0 {
		t.Fatalf("ring reader: dropped %d, %d through its queue; want 0, 0", st.DropOldest, st.Pushed)
	}
}

// TestRingConcurrentPublishCopies: the same concurrent Publish with, beside the ring's reader,
// a subscriber that gets copies through its queue (Block, read as it goes). Every copy must be
// the bytes of the message it is a copy of: the copy is made from the loan's staging buffer,
// which the next goroutine's loan must not be able to overwrite while it is copied.
func TestRingConcurrentPublishCopies(t *testing.T) {
	const goroutines, perG = 4, 1000
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	s := mustSubscribe(t, b, "concq.x", WithQueueDepth(8))
	q := mustSubscribe(t, b, "concq.*", WithOverflow(Block), WithQueueDepth(64))
	pub := ringPublisher(t, b, "concq.x", 4096, 16)
	var copies [][]byte
	var qerr error
	var qwg sync.WaitGroup
	qwg.Go(func() {
		for range goroutines * perG {
			m, err := q.Receive(ctx)
			if err != nil {
				qerr = err
				return
			}
			copies = append(copies, m.Clone())
			m.Release()
		}
	})
	concurrentRing(t, ctx, pub, goroutines, perG, nil)
	qwg.Wait()
	if qerr != nil {
		t.Fatalf("queue subscriber: %v", qerr)
	}
	receiveConcOrder(t, ctx, s, goroutines, perG)
	checkConcOrder(t, "queue subscriber (copies)", copies, goroutines, perG)
}

// TestRingConcurrentPublishWhileSubscriptionsChange: concurrent Publish on one ring publisher
// while other goroutines subscribe and unsubscribe, on and off, readers of the ring and
// subscribers sent copies, and call FanOut. A send with no subscriber sent copies takes no
// lock and reads the list of the ring's readers that the holder of the ring's loan token
// keeps (commitRing); a send that finds the list stale lists them again under the send lock
// (fanRing). Under the race detector, the list must never be read as it is written; and the
// ring's steady reader gets every message, each goroutine's in its order.
func TestRingConcurrentPublishWhileSubscriptionsChange(t *testing.T) {
	const goroutines, perG = 3, 1000
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	s := mustSubscribe(t, b, "churn.x", WithQueueDepth(8))
	pub := ringPublisher(t, b, "churn.x", 4096, 16)
	// The senders wait halfway for both helpers to have run (a reader of the ring and a
	// wildcard made and closed, FanOut called): the subscription generation then moves
	// between their sends, not only before or after them.
	done, churnedTwice, listedOnce := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	stop := sync.OnceFunc(func() { close(done); wg.Wait() })
	defer stop() // also when a send fails the test
	var churned, listed atomic.Int64
	var churnErr error
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			pattern := "churn.x" // a reader of the ring
			if i%2 == 1 {
				pattern = "churn.*" // sent copies
			}
			sub, err := b.Subscribe(pattern, WithQueueDepth(4))
			if err == nil {
				err = sub.Close()
			}
			if err != nil {
				churnErr = err
				if churned.Load() < 2 {
					close(churnedTwice) // the senders go on, and the test fails with err
				}
				return
			}
			if churned.Add(1) == 2 {
				close(churnedTwice)
			}
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			pub.FanOut() // reads the lists under the send lock
			if listed.Add(1) == 1 {
				close(listedOnce)
			}
		}
	})
	concurrentRing(t, ctx, pub, goroutines, perG, func() { <-churnedTwice; <-listedOnce })
	stop()
	if churnErr != nil {
		t.Fatal(churnErr)
	}
	receiveConcOrder(t, ctx, s, goroutines, perG)
	t.Logf("%d subscriptions made and closed, %d FanOut calls during %d sends", churned.Load(), listed.Load(), goroutines*perG)
}

// TestRingSubscribersAfterSends: subscribers that arrive after a ring publisher has sent are
// served from its next Send: one sent copies (a wildcard) gets copies of the messages sent
// after it subscribed, and a reader of the ring asleep in Receive gets the next message. A
// send takes no lock while no subscriber is sent copies, on the strength of a list
// of the ring's readers made for the region's subscription generation: a list from an older
// generation must not be used.
func TestRingSubscribersAfterSends(t *testing.T) {
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	first := mustSubscribe(t, b, "late.x", WithQueueDepth(8))
	pub := ringPublisher(t, b, "late.x", 64, 16)
	publishRing(t, ctx, pub, 0, 3, 16)
	// The sends above found no subscriber sent copies: the next one may send without the lock.
	q := mustSubscribe(t, b, "late.*", WithQueueDepth(8))
	publishRing(t, ctx, pub, 3, 4, 16)
	m, err := q.Receive(ctx)
	if err != nil {
		t.Fatalf("the wildcard subscribed after three sends: %v", err)
	}
	if got := m.Clone(); string(got) != string(ringPayload(3, 16)) {
		t.Fatalf("the wildcard got %x, want message 3's copy", got)
	}
	m.Release()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	// No subscriber sent copies again: a reader of the ring that subscribes now and sleeps is
	// woken by the next message.
	publishRing(t, ctx, pub, 4, 5, 16)
	late := mustSubscribe(t, b, "late.x", WithQueueDepth(8), WithWait(Sleep))
	got := receiveAsync(ctx, late)
	waitSleeping(t, ctx, late)
	publishRing(t, ctx, pub, 5, 6, 16)
	select {
	case r := <-got:
		if string(r.data) != string(ringPayload(5, 16)) {
			t.Fatalf("the late reader got %x (%s); want message 5", r.data, r.topic)
		}
	case <-ctx.Done():
		t.Fatal("the reader of the ring that subscribed last never got the next message")
	}
	for i, r := range receiveN(t, ctx, first, 6) {
		if string(r.data) != string(ringPayload(i, 16)) {
			t.Fatalf("the first reader's message %d: %x", i, r.data)
		}
	}
}

// TestRingConcurrentReceive: two goroutines receive from one subscription that reads a ring,
// busy-spinning, while the ring's publisher sends. A Receive that finds nothing watches the
// slot holding the ring's lock (InboxRing.takeSpin); the other waits for the lock. Every
// message must reach exactly one of them, none twice, none lost.
func TestRingConcurrentReceive(t *testing.T) {
	const n = 3000
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	s := mustSubscribe(t, b, "crecv.x", WithQueueDepth(8), WithWait(BusySpin))
	pub := ringPublisher(t, b, "crecv.x", 4096, 16)
	var mu sync.Mutex
	seen := make(map[uint32]int)
	var wg sync.WaitGroup
	var errs [2]error
	var got atomic.Int64
	for g := range 2 {
		wg.Go(func() {
			for got.Load() < n {
				rctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				m, err := s.Receive(rctx)
				cancel()
				if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
					continue // the other goroutine took the last ones
				}
				if err != nil {
					errs[g] = err
					return
				}
				v := binary.LittleEndian.Uint32(m.Data())
				m.Release()
				mu.Lock()
				seen[v]++
				mu.Unlock()
				got.Add(1)
			}
		})
	}
	for i := range n {
		var buf [16]byte
		binary.LittleEndian.PutUint32(buf[:], uint32(i))
		if err := pub.Publish(ctx, buf[:]); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for g, err := range errs {
		if err != nil {
			t.Fatalf("receiver %d: %v", g, err)
		}
	}
	for i := range n {
		if c := seen[uint32(i)]; c != 1 {
			t.Fatalf("message %d received %d times, want once", i, c)
		}
	}
	if len(seen) != n {
		t.Fatalf("%d distinct messages received, want %d", len(seen), n)
	}
}

// TestRingReceiveSeesItsQueue: a Receive busy-spinning on a subscription that reads a ring,
// with nothing in the ring, returns a message that another publisher of the topic (no ring)
// sends through the subscription's queue; the ring's next message follows.
func TestRingReceiveSeesItsQueue(t *testing.T) {
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	s := mustSubscribe(t, b, "rq.x", WithQueueDepth(8), WithWait(BusySpin))
	ringPub := ringPublisher(t, b, "rq.x", 64, 16)
	plain, err := b.Publisher("rq.x")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	type result struct {
		data string
		err  error
	}
	got := make(chan result, 2)
	go func() {
		for range 2 {
			m, err := s.Receive(ctx)
			if err != nil {
				got <- result{err: err}
				return
			}
			got <- result{data: string(m.Data())}
			m.Release()
		}
	}()
	if err := plain.Publish(ctx, []byte("through the queue")); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.err != nil || r.data != "through the queue" {
		t.Fatalf("first Receive: %q, %v; want the queue's message", r.data, r.err)
	}
	if err := ringPub.Publish(ctx, []byte("through the ring")); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.err != nil || r.data != "through the ring" {
		t.Fatalf("second Receive: %q, %v; want the ring's message", r.data, r.err)
	}
}

// ---------------------------------------------------------------------------------------------
// 5. One ring per topic

// TestRingOnePerTopic: a second WithSlotRing publisher on the topic fails with ErrRingTaken
// while the first is open (a plain publisher of the topic is still allowed); once the first
// is closed a new one succeeds, and the same subscriber, kept open, reads the old ring to its
// end and then the new ring's messages, in order, with the topic's sequence numbers going on.
func TestRingOnePerTopic(t *testing.T) {
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	s := mustSubscribe(t, b, "one.x", WithQueueDepth(8))
	pub1 := ringPublisher(t, b, "one.x", 16, 64)
	if _, err := b.Publisher("one.x", WithSlotRing(16, 64)); !errors.Is(err, ErrRingTaken) {
		t.Fatalf("second ring publisher: %v, want ErrRingTaken", err)
	}
	if _, err := b.Publisher("one.x", WithSlotRing(32, 8)); !errors.Is(err, ErrRingTaken) {
		t.Fatalf("second ring publisher of another shape: %v, want ErrRingTaken", err)
	}
	for i := range 5 {
		if err := pub1.Publish(ctx, fmt.Appendf(nil, "a%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// The subscriber is reading the first ring when it closes.
	want := []string{"a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "b4"}
	got := receiveN(t, ctx, s, 1)
	if err := pub1.Close(); err != nil {
		t.Fatal(err)
	}
	pub2 := ringPublisher(t, b, "one.x", 16, 64)
	if _, err := b.Publisher("one.x", WithSlotRing(16, 64)); !errors.Is(err, ErrRingTaken) {
		t.Fatalf("third ring publisher while the second is open: %v, want ErrRingTaken", err)
	}
	for i := range 5 {
		if err := pub2.Publish(ctx, fmt.Appendf(nil, "b%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	got = append(got, receiveN(t, ctx, s, 9)...)
	for i, m := range got {
		if string(m.data) != want[i] || m.seq != uint64(i+1) {
			t.Fatalf("message %d: %q seq %d, want %q seq %d", i, m.data, m.seq, want[i], i+1)
		}
	}
	if st := subStats(t, s); st.DropOldest != 0 || st.Pushed != 0 {
		t.Fatalf("stats %+v: want no drops, nothing through the queue", st)
	}
	// The first ring, read to its end, is freed (by the Bus's reaper tick): only the second's
	// buffer stays in use.
	for inUse(b) != 1 {
		if ctx.Err() != nil {
			t.Fatalf("%d buffers in use; want 1 (the second ring): the first was never freed", inUse(b))
		}
		time.Sleep(time.Millisecond) // polling the reaper's effect, bounded by ctx
	}
}

// ---------------------------------------------------------------------------------------------
// 6. Close loses nothing, Bus.Close with rings, no leftovers

// TestRingCloseKeepsMessages: messages published just before the publisher closes are still
// received (the ring is retired, not freed, until its readers have read it), and the ring's
// buffer is freed once they have. The subscriber may have subscribed before the ring existed
// (and not yet received from it), after it (reading it since Subscribe), or be moving from a
// closed ring to the next one.
func TestRingCloseKeepsMessages(t *testing.T) {
	const n = 10
	check := func(t *testing.T, ctx context.Context, b *Bus, s *Subscription, want []string) {
		t.Helper()
		var got []string
		for len(got) < len(want) {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			m, err := s.Receive(rctx)
			cancel()
			if err != nil {
				t.Fatalf("after %d of %d messages (%q): %v: messages published before Publisher.Close were lost (Len %d, stats %+v)",
					len(got), len(want), got, err, s.Len(), subStats(t, s))
			}
			got = append(got, string(m.Data()))
			m.Release()
		}
		if !slices.Equal(got, want) {
			t.Fatalf("received %q, want %q", got, want)
		}
		for inUse(b) != 0 {
			if ctx.Err() != nil {
				t.Fatalf("%d buffers in use: the retired ring was not freed once read", inUse(b))
			}
			time.Sleep(time.Millisecond) // polling the reaper's effect, bounded by ctx
		}
	}
	msgs := func(prefix string) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s%d", prefix, i))
		}
		return out
	}
	publish := func(t *testing.T, ctx context.Context, pub *Publisher, ms []string) {
		t.Helper()
		for _, m := range ms {
			if err := pub.Publish(ctx, []byte(m)); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("subscribed-before-ring", func(t *testing.T) {
		b := openRingBus(t, 64)
		ctx := ctxT(t)
		s := mustSubscribe(t, b, "close.x", WithQueueDepth(8))
		pub := ringPublisher(t, b, "close.x", 16, 64)
		publish(t, ctx, pub, msgs("m"))
		pub.Close()
		check(t, ctx, b, s, msgs("m"))
	})
	t.Run("subscribed-after-ring", func(t *testing.T) {
		b := openRingBus(t, 64)
		ctx := ctxT(t)
		pub := ringPublisher(t, b, "close.x", 16, 64)
		s := mustSubscribe(t, b, "close.x", WithQueueDepth(8))
		publish(t, ctx, pub, msgs("m"))
		pub.Close()
		check(t, ctx, b, s, msgs("m"))
	})
	t.Run("next-ring", func(t *testing.T) {
		b := openRingBus(t, 64)
		ctx := ctxT(t)
		pub1 := ringPublisher(t, b, "close.x", 16, 64)
		s := mustSubscribe(t, b, "close.x", WithQueueDepth(8))
		publish(t, ctx, pub1, msgs("a"))
		pub1.Close()
		pub2 := ringPublisher(t, b, "close.x", 16, 64)
		publish(t, ctx, pub2, msgs("b"))
		pub2.Close()
		check(t, ctx, b, s, append(msgs("a"), msgs("b")...))
	})
}

// TestRingBusCloseUnread: Bus.Close with a ring publisher open, another closed (its ring
// retired), subscribers that have not read either ring and a ring message still held returns
// promptly, frees every buffer, leaves no participant or inbox in the region, leaves nothing
// in the directory but the region's file, and nothing new in /dev/shm.
func TestRingBusCloseUnread(t *testing.T) {
	shmBefore, _ := os.ReadDir(shm.DefaultDir)
	dir := t.TempDir()
	b, err := Open("ringclose", WithDir(dir), WithConfig(ringConfig(64)))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			b.Close()
		}
	}()
	ctx := ctxT(t)
	open := mustSubscribe(t, b, "bc.open", WithQueueDepth(8))
	retired := mustSubscribe(t, b, "bc.retired", WithQueueDepth(8))
	copies := mustSubscribe(t, b, "bc.*", WithQueueDepth(64)) // pool buffers queued at Close
	pubOpen, err := b.Publisher("bc.open", WithSlotRing(16, 64))
	if err != nil {
		t.Fatal(err)
	}
	pubRetired, err := b.Publisher("bc.retired", WithSlotRing(16, 64))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := pubOpen.Publish(ctx, ringPayload(i, 40)); err != nil {
			t.Fatal(err)
		}
		if err := pubRetired.Publish(ctx, ringPayload(i, 40)); err != nil {
			t.Fatal(err)
		}
	}
	held, err := open.Receive(ctx) // a ring message, held through Close
	if err != nil {
		t.Fatal(err)
	}
	if _, err := retired.Receive(ctx); err != nil { // reading the ring, far from its end
		t.Fatal(err)
	}
	if _, err := pubOpen.Loan(8); err != nil { // a ring loan out
		t.Fatal(err)
	}
	pubRetired.Close()
	if l := copies.Len(); l != 20 {
		t.Fatalf("wildcard subscriber: %d copies queued, want 20", l)
	}
	path := b.Path()

	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		closed = true
		if err != nil {
			t.Fatalf("Bus.Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Bus.Close with slot rings unread did not return in 10 s")
	}
	if err := held.Release(); !errors.Is(err, ErrReleased) {
		t.Errorf("Release of a held ring message after Bus.Close: %v, want ErrReleased", err)
	}
	if _, err := open.Receive(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Receive after Bus.Close: %v, want ErrClosed", err)
	}

	r, err := shm.Open("ringclose", shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range r.CountAllocated() {
		if n != 0 {
			t.Errorf("class %d: %d buffers allocated after Bus.Close", i, n)
		}
	}
	if p := r.Participants(); len(p) != 0 {
		t.Errorf("participants left: %+v", p)
	}
	if in := r.InboxStats(); len(in) != 0 {
		t.Errorf("inboxes left: %+v", in)
	}
	r.Close()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if filepath.Join(dir, e.Name()) != path {
			t.Errorf("left in the bus's directory: %s", e.Name())
		}
	}
	shmAfter, _ := os.ReadDir(shm.DefaultDir)
	seen := map[string]bool{}
	for _, e := range shmBefore {
		seen[e.Name()] = true
	}
	for _, e := range shmAfter {
		if !seen[e.Name()] {
			t.Errorf("new in %s: %s", shm.DefaultDir, e.Name())
		}
	}
}

// TestBusCloseWhilePublishWaitsForRingLoan: one goroutine holds the ring's loan; another's
// Publish waits for it (waitRingLoan), inside the Bus's use gate, with a context that never
// ends. Bus.Close begins, and the loan's Send is refused (ErrClosed), so its token never comes
// back. Bus.Close must still return, and the waiting Publish must return ErrClosed.
func TestBusCloseWhilePublishWaitsForRingLoan(t *testing.T) {
	b := openRingBus(t, 64)
	_ = mustSubscribe(t, b, "hang.x", WithQueueDepth(8))
	pub, err := b.Publisher("hang.x", WithSlotRing(16, 64))
	if err != nil {
		t.Fatal(err)
	}
	l, err := pub.Loan(4) // the holder's loan
	if err != nil {
		t.Fatal(err)
	}
	copy(l.Bytes(), "abcd")

	inGate := make(chan struct{})
	var once sync.Once
	testHookInUse = func(op string) {
		if op == "publish" {
			once.Do(func() { close(inGate) })
		}
	}
	closeWaits := make(chan struct{})
	var closeOnce sync.Once
	testHookCloseWaits = func() { closeOnce.Do(func() { close(closeWaits) }) }
	t.Cleanup(func() { testHookInUse, testHookCloseWaits = nil, nil })

	pctx, cancelPublish := context.WithCancel(context.Background()) // no deadline
	defer cancelPublish()
	published := make(chan error, 1)
	go func() { published <- pub.Publish(pctx, []byte("waits")) }()
	timeout := time.After(10 * time.Second)
	select {
	case <-inGate: // the Publish is in the gate, and the loan is out: it waits for it
	case <-timeout:
		t.Fatal("the Publish never entered the Bus's use gate")
	}

	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case <-closeWaits: // Bus.Close waits for the Publish in its use gate
	case err := <-closed: // or the Publish left before Close looked
		closed <- err
	case <-timeout:
		t.Fatal("Bus.Close neither waited for the Publish nor returned")
	}
	if err := pub.Send(context.Background(), l); !errors.Is(err, ErrClosed) {
		t.Errorf("Send of the loan during Bus.Close: %v, want ErrClosed", err)
	}

	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Bus.Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		cancelPublish() // lets the Publish go, and so Bus.Close, for the test to end
		perr := <-published
		<-closed
		t.Fatalf("Bus.Close did not return in 5 s: it waited for a Publish that waits for a ring loan whose Send the closing Bus refused (the Publish returned %v once its context was cancelled)", perr)
	}
	select {
	case err := <-published:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Publish that waited for the ring's loan across Bus.Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		cancelPublish()
		t.Fatalf("the Publish waiting for the ring's loan did not return after Bus.Close returned")
	}
}

// TestRingPublisherCloseWhileSendBlocked: Publisher.Close does not wait for the calls under
// way (its doc: a Send blocked on a full Block subscriber goes on until its context or the
// subscription lets it). A ring publisher's Send that sends its copy to a full Block
// subscriber, with a context that never ends, must not keep Close from returning; once the
// Block subscriber goes away the Send returns, and the ring is retired and freed.
func TestRingPublisherCloseWhileSendBlocked(t *testing.T) {
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	block := mustSubscribe(t, b, "blk.x", WithOverflow(Block), WithQueueDepth(2))
	reader := mustSubscribe(t, b, "blk.x", WithQueueDepth(8)) // reads the ring
	pub, err := b.Publisher("blk.x", WithSlotRing(16, 64))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // fills the Block subscriber's queue
		if err := pub.Publish(ctx, []byte("fill")); err != nil {
			t.Fatal(err)
		}
	}
	sent := make(chan error, 1)
	go func() { sent <- pub.Publish(context.Background(), []byte("blocked")) }()
	for subStats(t, block).Blocked == 0 { // the Send waits for room
		if ctx.Err() != nil {
			t.Fatal("the third Publish never blocked")
		}
		time.Sleep(100 * time.Microsecond) // polling a counter, bounded by ctx
	}
	closed := make(chan error, 1)
	go func() { closed <- pub.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		block.Close() // lets the Send go, and so Close, for the test to end
		<-sent
		<-closed
		t.Fatal("Publisher.Close of a ring publisher did not return in 5 s while a Send was blocked on a full Block subscriber; its doc says Close does not wait for such a Send")
	}
	block.Close()
	if err := <-sent; err != nil && !errors.Is(err, ErrClosed) {
		t.Errorf("the blocked Publish, once its Block subscriber closed: %v", err)
	}
	// The ring's reader reads everything the ring published, and then the ring is freed.
	receiveN(t, ctx, reader, 3)
	for inUse(b) != 0 {
		if ctx.Err() != nil {
			t.Fatalf("%d buffers in use: the ring of the closed publisher was not freed once read", inUse(b))
		}
		time.Sleep(time.Millisecond) // polling the reaper's effect, bounded by ctx
	}
}

// TestRingSendFailsBeforeCommitWhenCopyCannotBeLent: a ring publisher's message goes to the
// ring's readers and, as a copy in a pool buffer, to the topic's other subscribers. With the
// pools exhausted, the copy's buffer cannot be lent: Send must then fail having delivered to
// nobody (the ring's reader does not receive the refused message, the topic's count does not
// move), as a pool publisher's Send in the same state does, so that a retry does not deliver
// it twice. Once buffers are free again, the next message reaches both subscribers.
func TestRingSendFailsBeforeCommitWhenCopyCannotBeLent(t *testing.T) {
	b := openRingBus(t, 64, WithReapInterval(0))
	ctx := ctxT(t)
	ringSub := mustSubscribe(t, b, "part.x", WithQueueDepth(8))
	copySub := mustSubscribe(t, b, "part.*", WithQueueDepth(8))
	pub := ringPublisher(t, b, "part.x", 16, 64)
	other, err := b.Publisher("part.other")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var loans []Loan // every buffer of every class
	for {
		l, err := other.Loan(1)
		if err != nil {
			if !errors.Is(err, ErrPoolExhausted) {
				t.Fatal(err)
			}
			break
		}
		loans = append(loans, l)
	}
	discard := func() {
		for _, l := range loans {
			l.Discard()
		}
		loans = nil
	}
	defer discard()
	before := pub.Published()

	if err := pub.Publish(ctx, []byte("refused")); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("Publish with the pools exhausted and a subscriber sent copies: %v, want ErrPoolExhausted", err)
	}
	l, err := pub.Loan(8)
	if err != nil {
		t.Fatalf("Loan after the refused Publish: %v (the refusal left the ring lent)", err)
	}
	copy(l.Bytes(), "refused2")
	if err := pub.Send(ctx, l); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("Send with the pools exhausted and a subscriber sent copies: %v, want ErrPoolExhausted", err)
	}
	if err := pub.Send(ctx, l); !errors.Is(err, ErrLoanEnded) {
		t.Errorf("Send of the loan a refused Send ended: %v, want ErrLoanEnded", err)
	}
	if n := pub.Published(); n != before {
		t.Fatalf("the topic counts %d messages after two refused sends, want %d: a refused message was committed", n, before)
	}

	discard()
	if err := pub.Publish(ctx, []byte("after")); err != nil {
		t.Fatalf("Publish once buffers are free: %v", err)
	}
	for _, s := range []*Subscription{ringSub, copySub} {
		m := receiveN(t, ctx, s, 1)[0]
		if string(m.data) != "after" {
			t.Fatalf("%s received %q first, want %q: a refused message was delivered", s.Pattern(), m.data, "after")
		}
		if s.Len() != 0 {
			t.Fatalf("%s: %d more messages queued", s.Pattern(), s.Len())
		}
	}
	if st := subStats(t, ringSub); st.DropOldest != 0 {
		t.Errorf("ring reader: %d DropOldest drops, want 0", st.DropOldest)
	}
}

// A ring loan out when its publisher closes, never sent nor discarded, keeps the ring and the
// topic's ring with it (ending it at Close would cost the ring's Loan and Send a gate: 30 ns a
// message). A new ring publisher of the topic is refused with an error that says so, and
// succeeds once the loan is discarded.
func TestRingPublisherCloseWithLoanOut(t *testing.T) {
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	s := mustSubscribe(t, b, "taken.x", WithQueueDepth(8))
	pub1, err := b.Publisher("taken.x", WithSlotRing(16, 64))
	if err != nil {
		t.Fatal(err)
	}
	l, err := pub1.Loan(8)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub1.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = b.Publisher("taken.x", WithSlotRing(16, 64))
	if !errors.Is(err, shm.ErrRingTaken) || !strings.Contains(err.Error(), "neither sent nor discarded") {
		t.Fatalf("a ring publisher while a closed publisher's loan is out: %v, want ErrRingTaken saying why", err)
	}
	if err := l.Discard(); err != nil {
		t.Fatalf("Discard of the loan after Close: %v", err)
	}
	pub2, err := b.Publisher("taken.x", WithSlotRing(16, 64))
	if err != nil {
		t.Fatalf("a ring publisher once the closed publisher's loan was discarded: %v", err)
	}
	defer pub2.Close()
	if err := pub2.Publish(ctx, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if m := receiveN(t, ctx, s, 1)[0]; string(m.data) != "two" {
		t.Fatalf("received %q, want %q", m.data, "two")
	}
}

// TestRingBusCloseLetsReadersFinish: a ring publisher's process publishes, closes its
// Publisher (or not) and its Bus. The subscriber, in another attachment (two Opens of one bus
// stand for two processes), reads while Bus.Close runs: Bus.Close waits for it to read the
// ring to its last message before it frees the ring, so nothing is lost, as nothing is from a
// pool publisher's queue. A reader that does not read costs Bus.Close ringDrainWait at most.
func TestRingBusCloseLetsReadersFinish(t *testing.T) {
	const n = 5
	for _, closePub := range []bool{true, false} {
		t.Run(map[bool]string{true: "publisher-closed", false: "publisher-open"}[closePub], func(t *testing.T) {
			dir := t.TempDir()
			opts := []Option{WithConfig(ringConfig(64)), WithReapInterval(5 * time.Millisecond)}
			subBus := openTest(t, dir, opts...)
			pubBus, err := Open("test", append([]Option{WithDir(dir)}, opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t)
			s := mustSubscribe(t, subBus, "lose.x", WithQueueDepth(8))
			idle := mustSubscribe(t, subBus, "lose.x", WithQueueDepth(8)) // never reads
			defer idle.Close()
			pub, err := pubBus.Publisher("lose.x", WithSlotRing(16, 64))
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if err := pub.Publish(ctx, ringPayload(i, 8)); err != nil {
					t.Fatal(err)
				}
			}
			if closePub {
				pub.Close()
			}
			waits := make(chan struct{})
			var once sync.Once
			testHookRingsWait = func() { once.Do(func() { close(waits) }) }
			t.Cleanup(func() { testHookRingsWait = nil })

			closed := make(chan error, 1)
			start := time.Now()
			go func() { closed <- pubBus.Close() }()
			var got [][]byte
			select {
			case <-waits: // Bus.Close waits for the ring's readers: read now
				for range n {
					m, err := s.Receive(ctx)
					if err != nil {
						t.Fatalf("receive %d of %d while Bus.Close waits: %v", len(got)+1, n, err)
					}
					got = append(got, m.Clone())
					m.Release()
				}
			case err := <-closed:
				closed <- err
			case <-ctx.Done():
				t.Fatal("Bus.Close neither waited for the ring's readers nor returned")
			}
			select {
			case err := <-closed:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Bus.Close did not return in 10 s with a ring reader that does not read")
			}
			if d := time.Since(start); d > ringDrainWait+5*time.Second {
				t.Errorf("Bus.Close took %v, with a reader that does not read: want about ringDrainWait (%v)", d, ringDrainWait)
			}
			for i, m := range got {
				if string(m) != string(ringPayload(i, 8)) {
					t.Fatalf("message %d: %x, want %x", i, m, ringPayload(i, 8))
				}
			}
			if len(got) != n {
				st := subStats(t, s)
				t.Fatalf("%d of %d messages published before Bus.Close received while it closed: Bus.Close freed the ring without waiting for its reader (%d drops, %d corrupt counted)",
					len(got), n, st.DropOldest, st.Corrupt)
			}
		})
	}
}

// ---------------------------------------------------------------------------------------------
// 7. Sleep and wake

// TestRingWakesSleepers: a reader of the ring asleep in Receive, with the default wait
// (SpinThenSleep) or WithWait(Sleep), is woken by the ring's next message and gets it
// promptly (well under the dispatcher's 1 s safety re-check, which would hide a lost
// wake-up). The first round wakes readers that have not yet opened the ring (they subscribed
// before it existed); later rounds wake readers that have.
func TestRingWakesSleepers(t *testing.T) {
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	subs := map[string]*Subscription{
		"SpinThenSleep": mustSubscribe(t, b, "wake.x", WithQueueDepth(8)),
		"Sleep":         mustSubscribe(t, b, "wake.x", WithQueueDepth(8), WithWait(Sleep)),
	}
	pub := ringPublisher(t, b, "wake.x", 16, 64)
	const bound = 500 * time.Millisecond
	for round := range 5 {
		results := map[string]<-chan received{}
		for name, s := range subs {
			results[name] = receiveAsync(ctx, s)
		}
		for _, s := range subs {
			waitSleeping(t, ctx, s)
		}
		want := fmt.Sprintf("wake %d", round)
		sent := time.Now()
		if err := pub.Publish(ctx, []byte(want)); err != nil {
			t.Fatal(err)
		}
		for name, c := range results {
			select {
			case m := <-c:
				if string(m.data) != want {
					t.Fatalf("round %d, %s: got %q (%s), want %q", round, name, m.data, m.topic, want)
				}
				if d := time.Since(sent); d > bound {
					t.Errorf("round %d, %s: woken %v after the message (a lost wake-up?)", round, name, d)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d, %s: not woken by the ring's message in 10 s", round, name)
			}
		}
	}
}

// ---------------------------------------------------------------------------------------------
// 8. Select, ReceiveBatch, Len, Drain, holding

// TestRingSelect: Select over two subscriptions that each read a topic's ring returns every
// message of both, each topic's in order, naming the subscription it came from; and a Select
// asleep over both is woken by a message of either ring.
func TestRingSelect(t *testing.T) {
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	sa := mustSubscribe(t, b, "sel.a", WithQueueDepth(8))
	sb := mustSubscribe(t, b, "sel.b", WithQueueDepth(8))
	pa := ringPublisher(t, b, "sel.a", 16, 64)
	pb := ringPublisher(t, b, "sel.b", 16, 64)
	for i := range 5 {
		if err := pa.Publish(ctx, fmt.Appendf(nil, "a%d", i)); err != nil {
			t.Fatal(err)
		}
		if err := pb.Publish(ctx, fmt.Appendf(nil, "b%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	next := map[*Subscription]int{}
	prefix := map[*Subscription]string{sa: "a", sb: "b"}
	for range 10 {
		m, err := Select(ctx, sa, sb)
		if err != nil {
			t.Fatal(err)
		}
		s := m.Subscription()
		if want := fmt.Sprintf("%s%d", prefix[s], next[s]); string(m.Data()) != want || m.Topic() != "sel."+prefix[s] {
			t.Fatalf("Select: %q on %q from %s, want %q", m.Data(), m.Topic(), s.Pattern(), want)
		}
		next[s]++
		m.Release()
	}
	for round := range 2 {
		c := make(chan received, 1)
		go func() {
			m, err := Select(ctx, sa, sb)
			if err != nil {
				c <- received{topic: "error: " + err.Error()}
				return
			}
			c <- received{data: m.Clone(), topic: m.Topic()}
			m.Release()
		}()
		waitSleeping(t, ctx, sb)
		pub, want := pb, "late b"
		if round == 1 {
			pub, want = pa, "late a"
		}
		if err := pub.Publish(ctx, []byte(want)); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-c:
			if string(m.data) != want {
				t.Fatalf("sleeping Select: got %q (%s), want %q", m.data, m.topic, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a Select asleep over two rings was not woken by a ring message")
		}
	}
}

// TestRingReceiveBatch: ReceiveBatch on a subscription that reads the ring takes the ring's
// messages that are ready (up to the batch's length), in order and intact, and ReleaseBatch
// gives them back.
func TestRingReceiveBatch(t *testing.T) {
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	s := mustSubscribe(t, b, "batch.x", WithQueueDepth(8))
	pub := ringPublisher(t, b, "batch.x", 16, 64)
	for i := range 10 {
		if err := pub.Publish(ctx, ringPayload(i, 1+i)); err != nil {
			t.Fatal(err)
		}
	}
	dst := make([]Message, 8)
	var got []Message
	for len(got) < 10 {
		ms, err := s.ReceiveBatch(ctx, dst)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 && len(ms) != 8 {
			t.Errorf("first batch: %d messages with 10 ready, want 8", len(ms))
		}
		for _, m := range ms {
			i := len(got)
			if string(m.Data()) != string(ringPayload(i, 1+i)) || m.Seq() != uint64(i+1) {
				t.Fatalf("message %d: %x seq %d", i, m.Data(), m.Seq())
			}
			got = append(got, m)
		}
		if err := ReleaseBatch(ms); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 10 || s.Len() != 0 {
		t.Fatalf("%d messages, Len %d", len(got), s.Len())
	}
	if err := ReleaseBatch(got[:1]); !errors.Is(err, ErrReleased) {
		t.Fatalf("second ReleaseBatch: %v, want ErrReleased", err)
	}
}

// TestRingLenAndDrain: Len counts the ring's unread messages, and Drain returns only once
// they have been read (then the subscription is closed), with Receive or with a handler. The
// subscriber may have subscribed before the ring existed or after. (With a handler and the
// subscriber older than the ring, a Drain that ignores the ring's messages is caught only
// when Drain looks before the handler's first take has opened the ring: usually, not always.)
func TestRingLenAndDrain(t *testing.T) {
	for _, order := range []string{"subscribed-before-ring", "subscribed-after-ring"} {
		setup := func(t *testing.T) (context.Context, *Subscription, *Publisher) {
			b := openRingBus(t, 64)
			var s *Subscription
			if order == "subscribed-before-ring" {
				s = mustSubscribe(t, b, "len.x", WithQueueDepth(8))
			}
			pub := ringPublisher(t, b, "len.x", 16, 64)
			if s == nil {
				s = mustSubscribe(t, b, "len.x", WithQueueDepth(8))
			}
			return ctxT(t), s, pub
		}
		t.Run(order+"/Len", func(t *testing.T) {
			ctx, s, pub := setup(t)
			for i := range 5 {
				if err := pub.Publish(ctx, ringPayload(i, 10)); err != nil {
					t.Fatal(err)
				}
			}
			if l := s.Len(); l != 5 {
				t.Errorf("Len %d with 5 ring messages unread", l)
			}
			receiveN(t, ctx, s, 2)
			if l := s.Len(); l != 3 {
				t.Errorf("Len %d after reading 2 of 5", l)
			}
			receiveN(t, ctx, s, 3)
			if l := s.Len(); l != 0 {
				t.Errorf("Len %d after reading all", l)
			}
		})
		t.Run(order+"/Drain", func(t *testing.T) {
			ctx, s, pub := setup(t)
			for i := range 5 {
				if err := pub.Publish(ctx, ringPayload(i, 10)); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() { done <- s.Drain(ctx) }()
			select {
			case err := <-done:
				t.Fatalf("Drain returned (%v) with 5 ring messages unread", err)
			case <-time.After(50 * time.Millisecond): // Drain must still be waiting
			}
			for i, m := range receiveN(t, ctx, s, 5) {
				if string(m.data) != string(ringPayload(i, 10)) {
					t.Fatalf("message %d: %x", i, m.data)
				}
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Drain: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Drain did not return after the ring's messages were read")
			}
			if _, err := s.Receive(ctx); !errors.Is(err, ErrClosed) {
				t.Fatalf("Receive after Drain: %v, want ErrClosed", err)
			}
		})
		t.Run(order+"/DrainHandler", func(t *testing.T) {
			ctx, s, pub := setup(t)
			var mu sync.Mutex
			var got []string
			if err := s.Handle(func(m Message) {
				mu.Lock()
				got = append(got, string(m.Data()))
				mu.Unlock()
			}); err != nil {
				t.Fatal(err)
			}
			var want []string
			for i := range 10 {
				want = append(want, fmt.Sprint("h", i))
				if err := pub.Publish(ctx, []byte(want[i])); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(got, want) {
				t.Fatalf("handler got %q by the time Drain returned, want %q", got, want)
			}
		})
	}
}

// TestRingHeldCopies: a ring message is copied out at Receive, so a held message keeps its
// bytes while the writer laps the ring; a subscriber holds at most as many ring messages as
// the ring has slots (then Receive fails with ErrHeldFull, losing nothing), and releasing one
// lets it go on.
func TestRingHeldCopies(t *testing.T) {
	b := openRingBus(t, 64)
	ctx := ctxT(t)
	s := mustSubscribe(t, b, "held.x", WithQueueDepth(8))
	pub := ringPublisher(t, b, "held.x", 16, 64)
	publishRing(t, ctx, pub, 0, 16, 64)
	var held []Message
	for range 16 {
		m, err := s.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, m)
	}
	publishRing(t, ctx, pub, 16, 50, 64) // two laps over the slots the held messages came from
	for i, m := range held {
		if string(m.Data()) != string(ringPayload(i, 64)) || m.Seq() != uint64(i+1) {
			t.Fatalf("held message %d changed under its holder: %x seq %d", i, m.Data(), m.Seq())
		}
	}
	if _, err := s.Receive(ctx); !errors.Is(err, ErrHeldFull) {
		t.Fatalf("Receive while holding 16 of a 16-slot ring's messages: %v, want ErrHeldFull", err)
	}
	held[0].Release()
	m, err := s.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive after a release: %v", err)
	}
	// The reader was lapped while it held: it goes on from the newest the ring holds.
	if j := int(m.Seq()) - 1; j < 50-16 || string(m.Data()) != string(ringPayload(j, 64)) {
		t.Fatalf("after holding: seq %d %x, want one of the newest 16, intact", m.Seq(), m.Data())
	}
	m.Release()
	if err := ReleaseBatch(held[1:]); err != nil {
		t.Fatal(err)
	}
}

// TestRingOptionErrors: WithSlotRing's shape is checked (ErrInvalidOption), a ring larger than
// the bus's largest size class is ErrTooLarge, and a topic that keeps a history cannot have a
// ring (ErrInvalidOption); none of these leaves the topic's ring taken.
func TestRingOptionErrors(t *testing.T) {
	b := openRingBus(t, 64)
	for _, c := range []struct{ slots, size int }{{3, 64}, {1, 64}, {0, 64}, {1 << 17, 64}, {16, 0}, {16, -1}, {16, 1<<16 + 1}} {
		if _, err := b.Publisher("opt.x", WithSlotRing(c.slots, c.size)); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("WithSlotRing(%d, %d): %v, want ErrInvalidOption", c.slots, c.size, err)
		}
	}
	if _, err := b.Publisher("opt.x", WithSlotRing(1<<16, 1<<16)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("a ring larger than every class: %v, want ErrTooLarge", err)
	}
	hist, err := b.Publisher("opt.h", WithHistory(2))
	if err != nil {
		t.Fatal(err)
	}
	defer hist.Close()
	if _, err := b.Publisher("opt.h", WithSlotRing(16, 64)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("a ring on a topic with history: %v, want ErrInvalidOption", err)
	}
	p := ringPublisher(t, b, "opt.x", 16, 64) // the refusals left the topic's ring free
	if err := p.Publish(context.Background(), []byte("ok")); err != nil {
		t.Fatal(err)
	}
}

// TestRingWithHistoryRefusedLeavesTopicAlone: Publisher with WithHistory and WithSlotRing
// together is refused with ErrInvalidOption before the topic is touched, so the refused call
// does not create the topic with a history, and the corrected call (WithSlotRing alone)
// succeeds.
func TestRingWithHistoryRefusedLeavesTopicAlone(t *testing.T) {
	b := openRingBus(t, 64)
	if _, err := b.Publisher("hist.x", WithHistory(2), WithSlotRing(16, 64)); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("WithHistory and WithSlotRing: %v, want ErrInvalidOption", err)
	}
	p, err := b.Publisher("hist.x", WithSlotRing(16, 64))
	if err != nil {
		t.Fatalf("WithSlotRing alone, after the refused call with WithHistory: %v", err)
	}
	defer p.Close()
	if d := p.HistoryDepth(); d != 0 {
		t.Fatalf("the topic keeps a history of %d messages after the refused call, want 0", d)
	}
}

// ---------------------------------------------------------------------------------------------
// 9. Other processes

// roleRingPublisher: OFFQ_DIR, OFFQ_TOPIC, OFFQ_SLOTS, OFFQ_SIZE, OFFQ_COUNT (0: until stopped
// or killed), OFFQ_MID. Opens bus "mp", makes a publisher with a slot ring, prints "ready",
// waits for "go", publishes messages 1, 2, ... (fillPayload, publisher id 1) with Loan and
// Send, printing "mid" after message OFFQ_MID, then prints "done" and keeps the ring open
// until its stdin ends (so that its reader can read it to the end).
func roleRingPublisher(c *peer.Child) error {
	env := func(k string) int { n, _ := strconv.Atoi(os.Getenv(k)); return n }
	b, err := Open("mp", WithDir(os.Getenv("OFFQ_DIR")), WithName("ring-publisher"), WithReapInterval(0))
	if err != nil {
		return err
	}
	defer b.Close()
	size, count, mid := env("OFFQ_SIZE"), env("OFFQ_COUNT"), env("OFFQ_MID")
	pub, err := b.Publisher(os.Getenv("OFFQ_TOPIC"), WithSlotRing(env("OFFQ_SLOTS"), size))
	if err != nil {
		return err
	}
	c.Send("ready")
	if l, err := c.Recv(); err != nil || l != "go" {
		return fmt.Errorf("waiting for go: %q %v", l, err)
	}
	ctx := c.Context()
	for seq := 1; count == 0 || seq <= count; seq++ {
		if seq%1024 == 0 && ctx.Err() != nil {
			break
		}
		l, err := pub.Loan(size)
		if err != nil {
			return err
		}
		fillPayload(l.Bytes(), 1, uint64(seq))
		if err := pub.Send(ctx, l); err != nil {
			return err
		}
		if seq == mid {
			c.Send("mid")
		}
	}
	c.Send("done")
	<-ctx.Done()
	return pub.Close()
}

func startRingPub(t *testing.T, dir, topic string, slots, size, count, mid int) *peer.Proc {
	t.Helper()
	p := peer.Start(t, "ring-publisher", "OFFQ_DIR="+dir, "OFFQ_TOPIC="+topic, "OFFQ_SLOTS="+strconv.Itoa(slots),
		"OFFQ_SIZE="+strconv.Itoa(size), "OFFQ_COUNT="+strconv.Itoa(count), "OFFQ_MID="+strconv.Itoa(mid))
	if _, err := p.Expect("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	return p
}

// ringStream receives fillPayload messages of publisher 1 from s until seq last (0: while
// Len says more are ready), checking each is intact, numbered in order and carries its topic
// sequence number; it returns how many it received, the last sequence and the gaps' total.
func ringStream(t *testing.T, ctx context.Context, s *Subscription, prev, last uint64) (n int, seq, gaps uint64) {
	t.Helper()
	seq = prev
	for last == 0 && s.Len() > 0 || last != 0 && seq < last {
		m, err := s.Receive(ctx)
		if err != nil {
			t.Fatalf("after seq %d (%d received): %v", seq, n, err)
		}
		pub, got, err := checkPayload(m.Data())
		if err != nil {
			t.Fatalf("after seq %d: a damaged message: %v", seq, err)
		}
		if pub != 1 || got <= seq {
			t.Fatalf("publisher %d seq %d after seq %d: not in order", pub, got, seq)
		}
		if m.Seq() != got {
			t.Fatalf("message %d has topic seq %d", got, m.Seq())
		}
		gaps += got - seq - 1
		seq = got
		n++
		m.Release()
	}
	return n, seq, gaps
}

// TestRingMultiProcess: a peer process publishes 100,000 messages of 64 bytes through
// WithSlotRing(64, 64) while this process receives with a queue of 16 (so it reads the ring),
// pausing once long enough to be lapped: every message received is intact and in order, the
// last one arrives, and received + the DropOldest count == 100,000, the drops being exactly
// the gaps. Afterwards, with every process gone, no buffer is left allocated.
func TestRingMultiProcess(t *testing.T) {
	const n = 100_000
	dir := t.TempDir()
	b, err := Open("mp", WithDir(dir), WithConfig(ringConfig(64)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := mustSubscribe(t, b, "mp.ring", WithQueueDepth(16))
	const pause = 50_000
	p := startRingPub(t, dir, "mp.ring", 64, 64, n, pause)
	p.Send("go")
	// Read the first thousand, then stop reading until the peer has published message 50,000
	// (it never waits for us), so that it certainly laps this reader; then read on to the end.
	got, last, gaps := ringStream(t, ctx, s, 0, 1000)
	if _, err := p.Expect("mid", time.Minute); err != nil {
		t.Fatal(err)
	}
	got2, last, gaps2 := ringStream(t, ctx, s, last, n)
	got, gaps = got+got2, gaps+gaps2
	st := subStats(t, s)
	t.Logf("received %d of %d, %d dropped", got, n, st.DropOldest)
	if st.DropOldest == 0 {
		t.Errorf("no drops, although the reader stopped for %d messages of a 64-slot ring", pause-1000)
	}
	if last != n || uint64(got)+st.DropOldest != n || gaps != st.DropOldest || st.Pushed != 0 {
		t.Fatalf("received %d up to seq %d, gaps %d, DropOldest %d, through the queue %d; want received + DropOldest == %d, DropOldest == gaps, none through the queue",
			got, last, gaps, st.DropOldest, st.Pushed, n)
	}
	if _, err := p.Expect("done", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(time.Minute); err != nil {
		t.Fatal(err)
	}
	s.Close()
	b.Close()
	assertClean(t, dir)
}

// TestRingPublisherKilled: a peer publishing through a ring is killed (SIGKILL) mid-stream.
// This process's Receive does not hang (it waits only as long as its ctx), the bus's reap
// frees the dead writer's ring, the same subscription — asleep in Receive across the reap —
// gets the messages of a new ring publisher of the topic, which can now be created.
func TestRingPublisherKilled(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("mp", WithDir(dir), WithConfig(ringConfig(64)), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := mustSubscribe(t, b, "mp.kill", WithQueueDepth(16))
	p := startRingPub(t, dir, "mp.kill", 64, 64, 0, 1000)
	p.Send("go")
	if _, err := p.Expect("mid", time.Minute); err != nil {
		t.Fatal(err)
	}
	// Read until the peer is well past that: it is publishing on and on, and is killed at once.
	_, seq, _ := ringStream(t, ctx, s, 0, 20_000)
	p.Kill()
	p.Wait(time.Minute)
	_, seq, _ = ringStream(t, ctx, s, seq, 0) // what it committed before it died
	t.Logf("read up to seq %d of the dead writer", seq)

	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = s.Receive(short)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Receive from the dead writer's ring: %v, want DeadlineExceeded", err)
	}
	if early, err := b.Publisher("mp.kill", WithSlotRing(64, 64)); !errors.Is(err, ErrRingTaken) {
		t.Errorf("a ring publisher before the reap: %v, want ErrRingTaken (the dead writer's ring is not reaped yet)", err)
		if early != nil {
			early.Close()
		}
	}

	// Asleep in Receive across the reap and the new ring.
	c := receiveAsync(ctx, s)
	waitSleeping(t, ctx, s)
	rep, err := b.r.Reap()
	if err != nil || rep.Participants != 1 {
		t.Fatalf("reap: %+v %v, want the dead publisher", rep, err)
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use after the reap: the dead writer's ring was not freed", n)
	}
	pub, err := b.Publisher("mp.kill", WithSlotRing(64, 64))
	if err != nil {
		t.Fatalf("a ring publisher after the reap: %v", err)
	}
	defer pub.Close()
	for i := range 3 {
		if err := pub.Publish(ctx, fmt.Appendf(nil, "new %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case m := <-c:
		if string(m.data) != "new 0" {
			t.Fatalf("the sleeping Receive got %q (%s), want %q", m.data, m.topic, "new 0")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Receive asleep since the writer died was not woken by the new ring's message")
	}
	for i, m := range receiveN(t, ctx, s, 2) {
		if want := fmt.Sprintf("new %d", i+1); string(m.data) != want {
			t.Fatalf("got %q, want %q", m.data, want)
		}
	}
	pub.Close()
	s.Close()
	b.Close()
	assertClean(t, dir)
}

// ---------------------------------------------------------------------------------------------
// 10. Allocations

// TestRingZeroAllocs: Loan, Send, Receive and Release through a ring allocate nothing, nor do
// Publish, Receive and Release.
func TestRingZeroAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	b := openRingBus(t, 64, WithReapInterval(0))
	ctx := context.Background()
	s := mustSubscribe(t, b, "alloc.x", WithQueueDepth(8))
	pub := ringPublisher(t, b, "alloc.x", 64, 64)
	payload := make([]byte, 48)
	var failed error // the first error of a run: t.Fatal inside AllocsPerRun would allocate
	fail := func(err error) {
		if err != nil && failed == nil {
			failed = err
		}
	}
	receive := func(want byte) {
		m, err := s.Receive(ctx)
		fail(err)
		if err == nil {
			if d := m.Data(); len(d) == 0 || d[0] != want {
				fail(errors.New("wrong message"))
			}
			_ = m.Topic()
			_ = m.Seq()
			fail(m.Release())
		}
	}
	loanSend := func() {
		l, err := pub.Loan(64)
		fail(err)
		if err != nil {
			return
		}
		l.Bytes()[0] = 7
		fail(pub.Send(ctx, l))
		receive(7)
	}
	publish := func() {
		payload[0] = 9
		fail(pub.Publish(ctx, payload))
		receive(9)
	}
	loanSend() // opens the ring's reader, warms the topic-name cache and the target list
	publish()
	if n := testing.AllocsPerRun(1000, loanSend); n != 0 {
		t.Errorf("ring Loan+Send+Receive+Release: %v allocations per run, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, publish); n != 0 {
		t.Errorf("ring Publish+Receive+Release: %v allocations per run, want 0", n)
	}
	if failed != nil {
		t.Fatal(failed)
	}
}

// TestRingErrorTexts: a ring's size errors say what the limit is, once, and wrap ErrTooLarge;
// they do not send the reader to the size classes when the ring's own limit is what failed.
func TestRingErrorTexts(t *testing.T) {
	b := openRingBus(t, 64)
	p := ringPublisher(t, b, "err.x", 8, 32)
	_, err := p.Loan(33)
	if !errors.Is(err, ErrTooLarge) || err.Error() != "a message of 33 bytes: the publisher's slot ring holds messages of up to 32 (WithSlotRing)" {
		t.Errorf("Loan(33): %v", err)
	}
	_, err = b.Publisher("err.y", WithSlotRing(1<<16, 1<<16))
	if !errors.Is(err, ErrTooLarge) || strings.Count(err.Error(), "size class") != 1 || !strings.Contains(err.Error(), `publisher "err.y"`) {
		t.Errorf("a ring too large for the pools: %v", err)
	}
}
