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
