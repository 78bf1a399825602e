package bus

import (
	"context"
	"github.com/offq/offq/internal/shm"
	"os"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
)

// roleCrashSubscriber subscribes to crash.x, says "subscribed", receives three messages and
// keeps them, says "holding", and waits to be killed.
func roleCrashSubscriber(c *peer.Child) error {
	b, err := Open("crash", WithDir(os.Getenv("OFFQ_DIR")), WithName("doomed"), WithReapInterval(0))
	if err != nil {
		return err
	}
	s, err := b.Subscribe("crash.x", WithQueueDepth(8))
	if err != nil {
		return err
	}
	c.Send("subscribed")
	for range 3 {
		if _, err := s.Receive(c.Context()); err != nil {
			return err
		}
	}
	c.Send("holding")
	<-c.Context().Done()
	return nil
}

// TestKilledSubscriberIsReclaimed: a subscriber process is killed with SIGKILL while holding
// messages and with more queued. The publisher is never held back, and the bus reclaims every
// buffer the dead process had, by its background reaper, without anyone calling Reap.
func TestKilledSubscriberIsReclaimed(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("crash", WithDir(dir), WithReapInterval(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub := peer.Start(t, "crash-sub", "OFFQ_DIR="+dir)
	if _, err := sub.Expect("subscribed", time.Minute); err != nil {
		t.Fatal(err)
	}
	pub, _ := b.Publisher("crash.x")
	for range 6 {
		if err := pub.Publish(ctx, []byte("before")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sub.Expect("holding", time.Minute); err != nil {
		t.Fatal(err)
	}
	sub.Kill()
	sub.Wait(time.Minute)
	// The dead subscriber's queue is full; publishing goes on regardless.
	for range 100 {
		if err := pub.Publish(ctx, []byte("after")); err != nil {
			t.Fatal(err)
		}
	}
	// The background reaper notices the death and reclaims the held and queued messages.
	for inUse(b) != 0 || b.r.Stats().Reclaims != 1 {
		if ctx.Err() != nil {
			t.Fatalf("not reclaimed: %d buffers in use, %d reclaims", inUse(b), b.r.Stats().Reclaims)
		}
		time.Sleep(time.Millisecond) // polling the reaper's effect, bounded by ctx
	}
	if pub.FanOut() != 0 {
		// The publisher's target list refreshes on its next send.
		pub.Publish(ctx, []byte("x"))
		if pub.FanOut() != 0 {
			t.Fatalf("publisher still delivers to %d subscribers", pub.FanOut())
		}
	}
}

// roleFanOutVictim publishes one message on OFFQ_TOPIC and says "mid" just before the push
// to the second subscription. With OFFQ_MID=stop it stops there to be killed; otherwise it goes
// on into that push (which blocks on a full queue) and is killed while it waits. With
// OFFQ_MID=handoff (one subscription) it says "mid" and stops between handing its loan's
// reference off and committing the cell.
func roleFanOutVictim(c *peer.Child) error {
	b, err := Open("crash", WithDir(os.Getenv("OFFQ_DIR")), WithName("victim"), WithReapInterval(0))
	if err != nil {
		return err
	}
	pub, err := b.Publisher(os.Getenv("OFFQ_TOPIC"))
	if err != nil {
		return err
	}
	if os.Getenv("OFFQ_MID") == "handoff" {
		shm.SetTestHookHandedOff(func() {
			c.Send("mid")
			<-c.Context().Done() // killed before this
		})
		return pub.Publish(c.Context(), []byte("handed-off"))
	}
	stop := os.Getenv("OFFQ_MID") == "stop"
	shm.SetTestHookFanOut(func(i int) {
		if i == 1 {
			c.Send("mid")
			if stop {
				<-c.Context().Done() // killed before this
			}
		}
	})
	return pub.Publish(c.Context(), []byte("half-sent"))
}

// TestPublisherKilledMidFanOut: a publisher is killed after delivering a message to the first
// of three subscriptions, while every process but it stays attached. The reaper ends its loan,
// and that is all there is to reclaim: the subscriptions it had not reached hold no reference
// and none was counted for them, so the pools come back to exactly what the live subscribers
// hold, with no audit. The subscriber that got the message reads it intact after the reap.
func TestPublisherKilledMidFanOut(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("crash", WithDir(dir), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var subs []*Subscription
	for range 3 {
		s, err := b.Subscribe("crash.fan")
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	victim := peer.Start(t, "fanout-victim", "OFFQ_DIR="+dir, "OFFQ_TOPIC=crash.fan", "OFFQ_MID=stop")
	if _, err := victim.Expect("mid", time.Minute); err != nil {
		t.Fatal(err)
	}
	victim.Kill()
	victim.Wait(time.Minute)

	rep, err := b.r.Reap()
	if err != nil || rep.Participants != 1 || rep.Loans != 1 || rep.Audited {
		t.Fatalf("reap: %+v %v, want the victim and its loan, no audit", rep, err)
	}
	if n := inUse(b); n != 1 {
		t.Fatalf("%d buffers in use after the reap, want the one queued for the first subscriber", n)
	}
	m, err := subs[0].Receive(ctx)
	if err != nil || string(m.Data()) != "half-sent" {
		t.Fatalf("first subscriber: %q %v", m.Data(), err)
	}
	m.Release()
	if subs[1].Len() != 0 || subs[2].Len() != 0 {
		t.Fatal("undelivered subscriptions have messages")
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use once the delivered message is released, want 0", n)
	}
	// The others keep working.
	pub, _ := b.Publisher("crash.fan")
	if err := pub.Publish(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		m, err := s.Receive(ctx)
		if err != nil || string(m.Data()) != "after" {
			t.Fatalf("after the kill: %q %v", m.Data(), err)
		}
		m.Release()
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use at the end", n)
	}
}

// TestPublisherKilledWhileBlocked: a publisher delivers to a first subscription, then waits for
// room in a second one (block policy, full) and is killed while it waits. The reaper ends its
// loan; the blocked subscription never held a reference to the message, the first one reads
// it, and the pools come back to exactly what the live subscribers hold.
func TestPublisherKilledWhileBlocked(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("crash", WithDir(dir), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := b.Subscribe("crash.block")
	if err != nil {
		t.Fatal(err)
	}
	full, err := b.Subscribe("crash.block", WithQueueDepth(2), WithOverflow(Block))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := b.Publisher("crash.block")
	for range 2 {
		if err := pub.Publish(ctx, []byte("fill")); err != nil {
			t.Fatal(err)
		}
	}
	victim := peer.Start(t, "fanout-victim", "OFFQ_DIR="+dir, "OFFQ_TOPIC=crash.block")
	if _, err := victim.Expect("mid", time.Minute); err != nil {
		t.Fatal(err)
	}
	blocked := func() int {
		for _, s := range b.r.InboxStats() {
			if s.ID == full.in.ID() {
				return s.Blocked
			}
		}
		return 0
	}
	for blocked() == 0 { // polling the victim's announcement that it sleeps, bounded by ctx
		if ctx.Err() != nil {
			t.Fatal("the victim never blocked on the full subscription")
		}
		time.Sleep(100 * time.Microsecond)
	}
	victim.Kill()
	victim.Wait(time.Minute)
	rep, err := b.r.Reap()
	if err != nil || rep.Participants != 1 || rep.Loans != 1 || rep.Audited {
		t.Fatalf("reap: %+v %v, want the victim and its loan, no audit", rep, err)
	}
	if n := inUse(b); n != 3 {
		t.Fatalf("%d buffers in use after the reap, want 3 (two fills, one half-sent)", n)
	}
	for i, want := range []string{"fill", "fill", "half-sent"} {
		m, err := first.Receive(ctx)
		if err != nil || string(m.Data()) != want {
			t.Fatalf("first subscriber, message %d: %q %v, want %q", i, m.Data(), err, want)
		}
		m.Release()
	}
	for range 2 {
		m, err := full.Receive(ctx)
		if err != nil || string(m.Data()) != "fill" {
			t.Fatalf("blocked subscriber: %q %v", m.Data(), err)
		}
		m.Release()
	}
	if full.Len() != 0 {
		t.Fatal("the blocked subscription has a message the victim never delivered")
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use at the end, want 0", n)
	}
}

// TestPublisherKilledMidHandoff: a publisher sending to one subscription is killed after its
// loan's reference left the loan for the cell and before the cell committed it. The reaper
// finds no loan (the owner is cleared) and zeroes the victim's hand-off word; the reference is
// then in no record, and the sweep frees it, as two reaps run it. Nothing reaches the
// subscription, the pools come back to zero, and publishing goes on.
func TestPublisherKilledMidHandoff(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("crash", WithDir(dir), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := b.Subscribe("crash.handoff")
	if err != nil {
		t.Fatal(err)
	}
	victim := peer.Start(t, "fanout-victim", "OFFQ_DIR="+dir, "OFFQ_TOPIC=crash.handoff", "OFFQ_MID=handoff")
	if _, err := victim.Expect("mid", time.Minute); err != nil {
		t.Fatal(err)
	}
	victim.Kill()
	victim.Wait(time.Minute)

	rep, err := b.r.Reap()
	if err != nil || rep.Participants != 1 || rep.Loans != 0 || rep.Audited {
		t.Fatalf("reap: %+v %v, want the victim, no loan (it was handed off), no audit", rep, err)
	}
	if n := inUse(b); n != 1 {
		t.Fatalf("%d buffers in use after the reap, want the handed-off one", n)
	}
	rep2, err := b.r.Reap()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Swept+rep2.Swept != 1 {
		t.Fatalf("two reaps swept %d buffers, want the handed-off one", rep.Swept+rep2.Swept)
	}
	if n := inUse(b); n != 0 || sub.Len() != 0 {
		t.Fatalf("%d buffers in use, %d queued after the sweep, want 0, 0", n, sub.Len())
	}
	pub, err := b.Publisher("crash.handoff")
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.Receive(ctx)
	if err != nil || string(m.Data()) != "after" {
		t.Fatalf("after the kill: %q %v", m.Data(), err)
	}
	m.Release()
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use at the end", n)
	}
}
