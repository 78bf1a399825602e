package bus

import (
	"context"
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
	for inUse(b) != 0 || b.Region().Stats().Reclaims != 1 {
		if ctx.Err() != nil {
			t.Fatalf("not reclaimed: %d buffers in use, %d reclaims", inUse(b), b.Region().Stats().Reclaims)
		}
		time.Sleep(time.Millisecond) // polling the reaper's effect, bounded by ctx
	}
	if pub.Subscribers() != 0 {
		// The publisher's target list refreshes on its next send.
		pub.Publish(ctx, []byte("x"))
		if pub.Subscribers() != 0 {
			t.Fatalf("publisher still delivers to %d subscribers", pub.Subscribers())
		}
	}
}

// roleFanOutVictim publishes one message on crash.fan and stops in the middle of the fan-out,
// after delivering to the first subscription, saying "mid"; it is killed there.
func roleFanOutVictim(c *peer.Child) error {
	b, err := Open("crash", WithDir(os.Getenv("OFFQ_DIR")), WithName("victim"), WithReapInterval(0))
	if err != nil {
		return err
	}
	pub, err := b.Publisher("crash.fan")
	if err != nil {
		return err
	}
	testHookFanOut = func(i int) {
		if i == 1 {
			c.Send("mid")
			<-c.Context().Done() // killed before this
		}
	}
	return pub.Publish(c.Context(), []byte("half-sent"))
}

// TestPublisherKilledMidFanOut: a publisher is killed after delivering a message to one of three
// subscriptions. The subscriber that got it reads it intact; the others are not blocked; the
// loan is reclaimed at once; and the references counted for the two undelivered subscriptions
// are repaired by the audit when the bus next opens with nobody attached.
func TestPublisherKilledMidFanOut(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("crash", WithDir(dir), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
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
	victim := peer.Start(t, "fanout-victim", "OFFQ_DIR="+dir)
	if _, err := victim.Expect("mid", time.Minute); err != nil {
		t.Fatal(err)
	}
	victim.Kill()
	victim.Wait(time.Minute)

	m, err := subs[0].Receive(ctx)
	if err != nil || string(m.Data()) != "half-sent" {
		t.Fatalf("first subscriber: %q %v", m.Data(), err)
	}
	m.Release()
	if subs[1].Len() != 0 || subs[2].Len() != 0 {
		t.Fatal("undelivered subscriptions have messages")
	}
	rep, err := b.Region().Reap()
	if err != nil || rep.Participants != 1 || rep.Loans != 1 {
		t.Fatalf("reap: %+v %v, want the victim and its loan", rep, err)
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
	if n := inUse(b); n != 1 {
		t.Fatalf("%d buffers in use, want the one whose two undelivered references leaked", n)
	}
	b.Close()
	b2, err := Open("crash", WithDir(dir), WithReapInterval(0)) // nobody attached: audit
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if n := inUse(b2); n != 0 {
		t.Fatalf("%d buffers in use after the audit", n)
	}
}
