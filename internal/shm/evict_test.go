package shm

import (
	"context"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
)

// roleEvictor opens the region OFFQ_DIR/evict, sends one message to the inbox named by
// envInbox (full, DropOldest), and says "evicted" between taking the oldest message out and
// counting it, where it waits to be killed.
func roleEvictor(c *peer.Child) error {
	r, p, err := attachFromEnv("evictor")
	if err != nil {
		return err
	}
	defer r.Close()
	in, err := inboxFromEnv(r)
	if err != nil {
		return err
	}
	tp, err := p.LookupTopic("evict", true, 0)
	if err != nil {
		return err
	}
	l, err := p.Loan(8)
	if err != nil {
		return err
	}
	testHookEvicted = func() {
		c.Send("evicted")
		<-c.Context().Done() // killed before this
	}
	_, err = tp.Send(c.Context(), l, 8, []Inbox{in})
	return err
}

// TestProducerKilledMidEviction: a producer is killed with SIGKILL after taking the oldest
// message out of a full DropOldest inbox and before counting the drop. The message is gone
// from the ring; after the reap the inbox counts it as dropped, so a subscriber that sees the
// gap sees it counted (the chaos test found it missing once in 51 kills).
func TestProducerKilledMidEviction(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("evict", Options{Dir: dir, Config: mpConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := attachUnit(t, r, "consumer")
	in, err := p.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropOldest, Pattern: "evict"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for seq := range uint64(4) {
		if _, err := send(ctx, r, p, &in, 1, seq); err != nil {
			t.Fatal(err)
		}
	}
	ev := peer.Start(t, "evictor", envs(envDir, dir, envRegion, "evict", envInbox, uint64(in.ID()))...)
	if _, err := ev.Expect("evicted", procTimeout); err != nil {
		t.Fatal(err)
	}
	ev.Kill()
	ev.Wait(procTimeout)
	if _, err := r.Reap(); err != nil {
		t.Fatal(err)
	}
	st, ok := statsOf(r, in.ID())
	if !ok {
		t.Fatal("inbox gone")
	}
	// Three of the four messages are left; the fourth left the ring without a count.
	if st.Depth != 3 || st.DropOldest != 1 {
		t.Fatalf("after the evicting producer died: depth %d, DropOldest %d; want 3 and 1 (the evicted message counted)", st.Depth, st.DropOldest)
	}
	if n := uint64(st.Depth) + st.DropOldest; n != 4 {
		t.Fatalf("queued + dropped = %d, want the 4 messages sent", n)
	}
	for range 3 {
		if _, ok, err := in.take(nil, 0); err != nil || !ok {
			t.Fatalf("take: %v %v", ok, err)
		}
	}
}
