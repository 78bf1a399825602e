package shm

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/topics"
)

func topicState(r *Region, i uint32) uint64 {
	e, _ := r.topicEntry(i)
	return e.state.Load() & 0xff
}

// rolePinPublisher attaches to OFFQ_DIR/pins, looks up OFFQ_TOPIC, publishes one message on
// it and says "ready". With OFFQ_PIN set it pins the topic first and waits to be killed;
// otherwise it detaches and exits.
func rolePinPublisher(c *peer.Child) error {
	r, err := Open("pins", Options{Dir: os.Getenv("OFFQ_DIR")})
	if err != nil {
		return err
	}
	p, err := r.Attach("pin-pub")
	if err != nil {
		return err
	}
	tp, err := p.LookupTopic(os.Getenv("OFFQ_TOPIC"), true, 0)
	if err != nil {
		return err
	}
	pin := os.Getenv("OFFQ_PIN") != ""
	if pin {
		if err := p.PinTopic(tp); err != nil {
			return err
		}
	}
	l, err := p.Loan(10)
	if err != nil {
		return err
	}
	if _, err := tp.Send(c.Context(), l, 10, nil); err != nil {
		return err
	}
	c.Send("ready")
	if pin {
		<-c.Context().Done()
		return nil
	}
	if err := p.Detach(); err != nil {
		return err
	}
	return r.Close()
}

// TestReclaimMistypedTopicWhileAttached is the regression test of issue 17: this process stays
// attached while a child publishes once on a mistyped topic and exits. Reap cannot audit (we
// are attached) and so frees nothing; ReclaimTopics frees the entry, and a new name takes it.
func TestReclaimMistypedTopicWhileAttached(t *testing.T) {
	dir := t.TempDir()
	cfg := unitConfig()
	r, err := Create("pins", Options{Dir: dir, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := attachUnit(t, r, "long-lived")
	child := peer.Start(t, "pin-publisher", "OFFQ_DIR="+dir, "OFFQ_TOPIC=sensors.tmep")
	if _, err := child.Expect("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := child.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	typo, err := p.LookupTopic("sensors.tmep", false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := r.Reap(); err != nil || rep.Audited || rep.TopicsFreed != 0 {
		t.Fatalf("reap while attached: %+v %v, want no audit and nothing freed", rep, err)
	}
	n, err := r.ReclaimTopics(p, topics.MatchValid)
	if err != nil || n != 1 {
		t.Fatalf("ReclaimTopics: %d %v, want 1", n, err)
	}
	if _, err := p.LookupTopic("sensors.tmep", false, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of the freed topic: %v, want ErrNotFound", err)
	}
	if err := p.PinTopic(typo); !errors.Is(err, ErrTopicReclaimed) {
		t.Fatalf("PinTopic of a Topic kept from before: %v, want ErrTopicReclaimed", err)
	}
	// Fill the table: one of the new names takes the freed entry.
	took := false
	for _, name := range []string{"sensors.temp", "a", "b", "c"} {
		tp := lookup(t, p, name, 0)
		took = took || tp.Index() == typo.Index()
	}
	if !took {
		t.Fatalf("no new name took the freed entry %d", typo.Index())
	}
	if r.Pinners()[typo.Index()] != 0 {
		t.Fatalf("the failed pin left its bit")
	}
	checkNoLeaks(t, r)
}

// TestReclaimKeepsPinnedTopicUntilKilled: a topic a live process pins is kept; once that
// process is SIGKILLed and reaped, its pins are gone and the topic is freed.
func TestReclaimKeepsPinnedTopicUntilKilled(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("pins", Options{Dir: dir, Config: unitConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := attachUnit(t, r, "long-lived")
	child := peer.Start(t, "pin-publisher", "OFFQ_DIR="+dir, "OFFQ_TOPIC=held.open", "OFFQ_PIN=1")
	if _, err := child.Expect("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	tp, err := p.LookupTopic("held.open", false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.TopicStats(); len(got) != 1 || got[0].Publishers != 1 {
		t.Fatalf("topic stats %+v, want one topic with one publisher", got)
	}
	if n, err := r.ReclaimTopics(p, topics.MatchValid); err != nil || n != 0 {
		t.Fatalf("ReclaimTopics with a pinned topic: %d %v, want 0", n, err)
	}
	if st := topicState(r, tp.index); st != topicReady {
		t.Fatalf("kept entry in state %d, want ready", st)
	}
	child.Kill()
	child.Wait(time.Minute)
	if rep, err := r.Reap(); err != nil || rep.Participants != 1 {
		t.Fatalf("reap: %+v %v, want the dead publisher", rep, err)
	}
	if r.Pinners()[tp.Index()] != 0 {
		t.Fatalf("the reaper left the dead participant's pin")
	}
	if n, err := r.ReclaimTopics(p, topics.MatchValid); err != nil || n != 1 {
		t.Fatalf("ReclaimTopics after the kill: %d %v, want 1", n, err)
	}
	checkNoLeaks(t, r)
}

// TestReclaimKeepsUsedTopics: a topic with a message in its history, one a subscription's
// pattern matches, and one a message in flight names (held by a subscriber of a wildcard
// closed since) are kept; an unused one is freed. Emptying the uses frees the rest.
func TestReclaimKeepsUsedTopics(t *testing.T) {
	r := newUnitRegion(t, unitConfig())
	p := attachUnit(t, r, "p")
	q := attachUnit(t, r, "q")
	hist := lookup(t, q, "with.history", 1)
	sub := lookup(t, q, "subscribed.x", 0)
	free := lookup(t, q, "unused", 0)
	sendOn(t, q, hist)
	in, err := p.OpenInbox(InboxConfig{Capacity: 4, Pattern: "subscribed.*"})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := r.ReclaimTopics(p, topics.MatchValid); err != nil || n != 1 {
		t.Fatalf("ReclaimTopics: %d %v, want 1 (the unused topic)", n, err)
	}
	if st := topicState(r, free.index); st != topicReclaimed {
		t.Fatalf("unused topic: state %d, want reclaimed", st)
	}
	for _, k := range []Topic{hist, sub} {
		if st := topicState(r, k.index); st != topicReady {
			t.Fatalf("topic %s: state %d, want ready", k.Name(), st)
		}
	}
	// A message naming sub, queued in the inbox, keeps it after the inbox is gone from the
	// subscriptions' view: pretend the message outlives the pattern by naming a kept buffer.
	hist.clearHistory()
	in.close()
	l, err := q.Loan(10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Send(t.Context(), l, 10, nil); err != nil {
		t.Fatal(err)
	}
	l2, err := q.Loan(10)
	if err != nil {
		t.Fatal(err)
	}
	l2.buf.SetMeta(Meta{Len: 10, Topic: sub.index})
	l2.buf.s.state.Store(l2.buf.s.state.Load() &^ ownerMask) // a message, not a loan
	if n, err := r.ReclaimTopics(p, topics.MatchValid); err != nil || n != 1 {
		t.Fatalf("ReclaimTopics: %d %v, want 1 (the emptied history)", n, err)
	}
	if st := topicState(r, sub.index); st != topicReady {
		t.Fatalf("topic named by a message: state %d, want ready", st)
	}
	r.releaseDropped(l2.buf.h)
	if n, err := r.ReclaimTopics(p, topics.MatchValid); err != nil || n != 1 {
		t.Fatalf("ReclaimTopics: %d %v, want 1", n, err)
	}
	checkNoLeaks(t, r)
}

// TestPinRevivesCondemned: a pin taken while a reclaimer has condemned the entry (between its
// condemning and its reading of the pins) revives the entry, and the reclaimer keeps it; an
// entry left condemned by a reclaimer that detached is ready again.
func TestPinRevivesCondemned(t *testing.T) {
	r := newUnitRegion(t, unitConfig())
	p := attachUnit(t, r, "reclaimer")
	q := attachUnit(t, r, "user")
	tp := lookup(t, q, "racing", 0)
	testHookReclaimCondemned = func() {
		if st := topicState(r, tp.index); st != topicCondemned {
			t.Errorf("entry in state %d during the reclaim, want condemned", st)
		}
		if _, err := q.LookupTopic("racing", false, 0); err != nil {
			t.Errorf("lookup of a condemned entry: %v", err)
		}
		if _, err := r.Topic(tp.Index()); err != nil {
			t.Errorf("Topic of a condemned entry: %v", err)
		}
		if err := q.PinTopic(tp); err != nil {
			t.Errorf("PinTopic of a condemned entry: %v", err)
		}
	}
	defer func() { testHookReclaimCondemned = nil }()
	if n, err := r.ReclaimTopics(p, topics.MatchValid); err != nil || n != 0 {
		t.Fatalf("ReclaimTopics: %d %v, want 0", n, err)
	}
	testHookReclaimCondemned = nil
	if st := topicState(r, tp.index); st != topicReady {
		t.Fatalf("state %d after the pin revived it, want ready", st)
	}
	q.UnpinTopic(tp)
	if r.Pinners()[tp.Index()] != 0 {
		t.Fatal("pin bit still set after UnpinTopic")
	}
	// A reclaimer gone half-way: its condemned entry is ready again once it detaches.
	r2 := attachUnit(t, r, "half-way")
	e, _ := r.topicEntry(tp.index)
	e.state.Store(uint64(r2.owner)<<16 | topicCondemned)
	if err := r2.Detach(); err != nil {
		t.Fatal(err)
	}
	if st := topicState(r, tp.index); st != topicReady {
		t.Fatalf("state %d after the reclaimer detached, want ready", st)
	}
	if n, err := r.ReclaimTopics(p, topics.MatchValid); err != nil || n != 1 {
		t.Fatalf("ReclaimTopics: %d %v, want 1", n, err)
	}
}

// TestPinTopicAllocatesNothing: pinning and unpinning allocate nothing.
func TestPinTopicAllocatesNothing(t *testing.T) {
	r := newUnitRegion(t, unitConfig())
	p := attachUnit(t, r, "p")
	tp := lookup(t, p, "pinned", 0)
	if n := testing.AllocsPerRun(100, func() {
		if err := p.PinTopic(tp); err != nil {
			t.Fatal(err)
		}
		p.UnpinTopic(tp)
	}); n != 0 {
		t.Fatalf("%v allocations per pin and unpin", n)
	}
}

// roleStuckReclaimer attaches to OFFQ_DIR/pins and runs ReclaimTopics, stopping (until it is
// killed) after it condemned the candidates, once it said "condemned".
func roleStuckReclaimer(c *peer.Child) error {
	r, err := Open("pins", Options{Dir: os.Getenv("OFFQ_DIR")})
	if err != nil {
		return err
	}
	p, err := r.Attach("stuck-reclaimer")
	if err != nil {
		return err
	}
	testHookReclaimCondemned = func() {
		c.Send("condemned")
		<-c.Context().Done()
	}
	_, err = r.ReclaimTopics(p, topics.MatchValid)
	return err
}

// TestReclaimerKilledAfterCondemning: a reclaimer is SIGKILLed with two entries condemned.
// They stay usable (lookup, Topic, stats); a pin revives one, and reaping the dead reclaimer
// revives the other; nothing is freed that a live reclaimer would keep, and a live reclaimer
// then frees the unpinned one.
func TestReclaimerKilledAfterCondemning(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("pins", Options{Dir: dir, Config: unitConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := attachUnit(t, r, "user")
	a := lookup(t, p, "cond.a", 0)
	b := lookup(t, p, "cond.b", 0)
	child := peer.Start(t, "stuck-reclaimer", "OFFQ_DIR="+dir)
	if _, err := child.Expect("condemned", time.Minute); err != nil {
		t.Fatal(err)
	}
	child.Kill()
	child.Wait(time.Minute)
	for _, k := range []Topic{a, b} {
		if st := topicState(r, k.index); st != topicCondemned {
			t.Fatalf("%s: state %d, want condemned", k.Name(), st)
		}
	}
	if n := len(r.TopicStats()); n != 2 {
		t.Fatalf("%d topics in the stats, want the 2 condemned ones", n)
	}
	if got, err := p.LookupTopic("cond.a", true, 0); err != nil || got.Index() != a.Index() {
		t.Fatalf("lookup of a condemned topic: %d %v, want %d", got.Index(), err, a.Index())
	}
	if err := p.PinTopic(a); err != nil {
		t.Fatalf("PinTopic of an entry the dead reclaimer condemned: %v", err)
	}
	if st := topicState(r, a.index); st != topicReady {
		t.Fatalf("pinned entry: state %d, want ready", st)
	}
	if rep, err := r.Reap(); err != nil || rep.Participants != 1 {
		t.Fatalf("reap: %+v %v, want the dead reclaimer", rep, err)
	}
	if st := topicState(r, b.index); st != topicReady {
		t.Fatalf("entry of the reaped reclaimer: state %d, want ready", st)
	}
	if n, err := r.ReclaimTopics(p, topics.MatchValid); err != nil || n != 1 {
		t.Fatalf("ReclaimTopics: %d %v, want 1 (the unpinned one)", n, err)
	}
	if st := topicState(r, a.index); st != topicReady {
		t.Fatalf("pinned entry after a reclaim: state %d, want ready", st)
	}
	p.UnpinTopic(a)
	checkNoLeaks(t, r)
}

// roleClaimedReclaimer attaches to OFFQ_DIR/pins and runs ReclaimTopics, stopping (until it
// is killed) after it claimed an entry to free, before the entry's generation moved.
func roleClaimedReclaimer(c *peer.Child) error {
	r, err := Open("pins", Options{Dir: os.Getenv("OFFQ_DIR")})
	if err != nil {
		return err
	}
	p, err := r.Attach("claimed-reclaimer")
	if err != nil {
		return err
	}
	testHookReclaimClaimed = func() {
		c.Send("claimed")
		<-c.Context().Done()
	}
	_, err = r.ReclaimTopics(p, topics.MatchValid)
	return err
}

// TestReclaimerKilledAfterClaiming: a reclaimer is SIGKILLed holding an entry it was freeing,
// its generation not yet bumped. The reaper makes the entry reclaimed; a new name takes it and
// gets a new generation, so a Topic kept from the old name is refused (PinTopic and Send).
func TestReclaimerKilledAfterClaiming(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("pins", Options{Dir: dir, Config: unitConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := attachUnit(t, r, "user")
	old := lookup(t, p, "claimed.old", 0)
	// The old topic recorded a type and published once: a new name must inherit neither.
	if ok, err := old.SetFingerprint(0xfeedface12345678, "msgpack", "main.Old"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if l, err := p.Loan(8); err != nil {
		t.Fatal(err)
	} else if _, err := old.Send(t.Context(), l, 8, nil); err != nil {
		t.Fatal(err)
	}
	child := peer.Start(t, "claimed-reclaimer", "OFFQ_DIR="+dir)
	if _, err := child.Expect("claimed", time.Minute); err != nil {
		t.Fatal(err)
	}
	child.Kill()
	child.Wait(time.Minute)
	if err := p.PinTopic(old); !errors.Is(err, ErrTopicReclaimed) {
		t.Fatalf("PinTopic of an entry being freed: %v, want ErrTopicReclaimed", err)
	}
	if rep, err := r.Reap(); err != nil || rep.Participants != 1 || rep.Topics != 1 {
		t.Fatalf("reap: %+v %v, want the dead reclaimer and its claimed entry", rep, err)
	}
	if st := topicState(r, old.index); st != topicReclaimed {
		t.Fatalf("entry after the reap: state %d, want reclaimed", st)
	}
	took := false
	for _, name := range []string{"n.a", "n.b", "n.c", "n.d"} {
		tp := lookup(t, p, name, 0)
		if tp.Index() != old.Index() {
			continue
		}
		took = true
		if fp, codec := tp.Fingerprint(); fp != 0 || codec != "" || tp.TypeName() != "" || tp.Published() != 0 {
			t.Fatalf("%s on the reused entry inherits fingerprint %#x %q %q, %d published; want none", name, fp, codec, tp.TypeName(), tp.Published())
		}
	}
	if !took {
		t.Fatal("no new name took the entry")
	}
	if err := p.PinTopic(old); !errors.Is(err, ErrTopicReclaimed) {
		t.Fatalf("PinTopic of the old name's Topic on a reused entry: %v, want ErrTopicReclaimed", err)
	}
	l, err := p.Loan(10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Send(t.Context(), l, 10, nil); !errors.Is(err, ErrTopicReclaimed) {
		t.Fatalf("Send on the old name's Topic: %v, want ErrTopicReclaimed", err)
	}
	checkNoLeaks(t, r)
}

// TestDetachClearsPins: pins are counted per topic in the process (the bit stays until the
// last UnpinTopic), Detach clears what is left, and an UnpinTopic after it does nothing.
func TestDetachClearsPins(t *testing.T) {
	r := newUnitRegion(t, unitConfig())
	p, err := r.Attach("p")
	if err != nil {
		t.Fatal(err)
	}
	tp := lookup(t, p, "pinned", 0)
	for range 2 {
		if err := p.PinTopic(tp); err != nil {
			t.Fatal(err)
		}
	}
	p.UnpinTopic(tp)
	if got := r.Pinners()[tp.Index()]; got != 1 {
		t.Fatalf("%d pinners after 2 pins and 1 unpin, want 1", got)
	}
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	if got := r.Pinners()[tp.Index()]; got != 0 {
		t.Fatalf("%d pinners after Detach, want 0", got)
	}
	p.UnpinTopic(tp)
	if err := p.PinTopic(tp); !errors.Is(err, ErrClosed) {
		t.Fatalf("PinTopic after Detach: %v, want ErrClosed", err)
	}
}
