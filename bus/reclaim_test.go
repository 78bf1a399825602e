package bus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/internal/shm"
)

// reclaimConfig is a small bus: 4 topics, history depth 2.
func reclaimConfig() Config {
	c := DefaultConfig()
	c.Inboxes, c.InboxCapacity, c.Topics, c.Participants, c.HistoryDepth, c.Held = 8, 64, 4, 8, 2, 64
	return c
}

// roleOncePublisher: opens OFFQ_DIR/test, publishes one message on OFFQ_TOPIC and says
// "ready". With OFFQ_HOLD set it keeps its Publisher open until killed; otherwise it closes
// the bus and exits.
func roleOncePublisher(c *peer.Child) error {
	b, err := Open("test", WithDir(os.Getenv("OFFQ_DIR")), WithName("once"))
	if err != nil {
		return err
	}
	pub, err := b.Publisher(os.Getenv("OFFQ_TOPIC"))
	if err != nil {
		return err
	}
	if err := pub.Publish(c.Context(), []byte("21.5")); err != nil {
		return err
	}
	c.Send("ready")
	if os.Getenv("OFFQ_HOLD") != "" {
		<-c.Context().Done()
	}
	return b.Close()
}

func topicNames(t *testing.T, b *Bus) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, ts := range b.r.TopicStats() {
		out[ts.Name] = ts.Index
	}
	return out
}

// TestReclaimMistypedTopicWhileAttached: this process stays attached while a child publishes
// once on a mistyped topic and exits. The reaper cannot audit (we are attached); on main the
// entry was held for the life of the bus. ReclaimTopics frees it, and a new name takes it.
func TestReclaimMistypedTopicWhileAttached(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, WithConfig(reclaimConfig()))
	child := peer.Start(t, "once-publisher", "OFFQ_DIR="+dir, "OFFQ_TOPIC=sensors.tmep")
	if _, err := child.Expect("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := child.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	idx, ok := topicNames(t, b)["sensors.tmep"]
	if !ok {
		t.Fatal("the child's topic is not in the table")
	}
	if rep, err := b.r.Reap(); err != nil || rep.TopicsFreed != 0 {
		t.Fatalf("reap while attached: %+v %v, want nothing freed", rep, err)
	}
	if n, err := b.ReclaimTopics(); err != nil || n != 1 {
		t.Fatalf("ReclaimTopics: %d %v, want 1", n, err)
	}
	if _, ok := topicNames(t, b)["sensors.tmep"]; ok {
		t.Fatal("the mistyped topic is still in the table")
	}
	taken := false
	for _, name := range []string{"sensors.temp", "a", "b", "c"} {
		p, err := b.Publisher(name)
		if err != nil {
			t.Fatal(err)
		}
		taken = taken || topicNames(t, b)[name] == idx
		p.Close()
	}
	if !taken {
		t.Fatalf("no new name took the freed entry %d", idx)
	}
}

// TestReclaimKeepsOtherProcessPublisher: a topic another process has a Publisher of is kept,
// however often ReclaimTopics runs; once that process is SIGKILLed and reaped, it is freed.
func TestReclaimKeepsOtherProcessPublisher(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, WithConfig(reclaimConfig()), WithReapInterval(time.Hour))
	child := peer.Start(t, "once-publisher", "OFFQ_DIR="+dir, "OFFQ_TOPIC=plant.pressure", "OFFQ_HOLD=1")
	if _, err := child.Expect("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if n, err := b.ReclaimTopics(); err != nil || n != 0 {
			t.Fatalf("ReclaimTopics with a live publisher: %d %v, want 0", n, err)
		}
	}
	if ts := b.r.TopicStats(); len(ts) != 1 || ts[0].Publishers != 1 {
		t.Fatalf("topic stats %+v, want one topic with one publisher", ts)
	}
	child.Kill()
	child.Wait(time.Minute)
	if rep, err := b.r.Reap(); err != nil || rep.Participants != 1 {
		t.Fatalf("reap: %+v %v, want the killed publisher", rep, err)
	}
	if n, err := b.ReclaimTopics(); err != nil || n != 1 {
		t.Fatalf("ReclaimTopics after the kill: %d %v, want 1", n, err)
	}
}

// TestReclaimKeepsSubscribedAndHistory: a topic a subscription's pattern matches, and one
// whose history holds a message, are kept; a Publisher closed on a third lets it go.
func TestReclaimKeepsSubscribedAndHistory(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, WithConfig(reclaimConfig()))
	ctx := ctxT(t)
	sub, err := b.Subscribe("watched.*")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		name string
		hist int
	}{{"watched.x", 0}, {"kept.history", 1}, {"gone", 0}} {
		p, err := b.Publisher(k.name, WithHistory(k.hist))
		if err != nil {
			t.Fatal(err)
		}
		if k.name != "watched.x" {
			if err := p.Publish(ctx, []byte("m")); err != nil {
				t.Fatal(err)
			}
		}
		p.Close()
	}
	if n, err := b.ReclaimTopics(); err != nil || n != 1 {
		t.Fatalf("ReclaimTopics: %d %v, want 1 (gone)", n, err)
	}
	names := topicNames(t, b)
	if _, ok := names["gone"]; ok || len(names) != 2 {
		t.Fatalf("topics after reclaiming: %v, want watched.x and kept.history", names)
	}
	sub.Close()
	if n, err := b.ReclaimTopics(); err != nil || n != 1 {
		t.Fatalf("ReclaimTopics after unsubscribing: %d %v, want 1 (watched.x)", n, err)
	}
}

// TestTopicTableFullReclaims: with every entry held by a topic nobody uses any more, a new
// Publisher still gets one: the full table makes the bus reclaim once and retry. With every
// topic in use, the table is full.
func TestTopicTableFullReclaims(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, WithConfig(reclaimConfig()))
	var open []*Publisher
	for i := range 4 {
		p, err := b.Publisher(fmt.Sprintf("old.%d", i))
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, p)
	}
	if _, err := b.Publisher("new.0"); !errors.Is(err, shm.ErrTableFull) {
		t.Fatalf("fifth topic with four publishers open: %v, want ErrTableFull", err)
	}
	for _, p := range open {
		p.Close()
	}
	p, err := b.Publisher("new.0")
	if err != nil {
		t.Fatalf("publisher once the old topics are unused: %v", err)
	}
	if err := p.Publish(ctxT(t), []byte("x")); err != nil {
		t.Fatal(err)
	}
	// A cached Topic of a reclaimed name is looked up again, transparently.
	if _, err := b.Publisher("old.1"); err != nil {
		t.Fatalf("publisher of a reclaimed, cached name: %v", err)
	}
}

// TestReclaimRacesPublishers: goroutines open and close Publishers and publish on a few
// names while another loops ReclaimTopics, and subscriptions come and go on the names (a
// closed one lets its topic be freed, and taken by another name, while publishers churn).
// Every message received names the topic it was published on, and no Send fails: none goes
// into a reclaimed entry.
func TestReclaimRacesPublishers(t *testing.T) {
	dir := t.TempDir()
	c := reclaimConfig()
	c.Topics = 6
	b := openTest(t, dir, WithConfig(c))
	ctx := ctxT(t)
	names := []string{"race.a", "race.b", "race.c", "race.d", "race.e"}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var reclaimed atomic.Int64
	errs := make(chan error, 64)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			n, err := b.ReclaimTopics()
			if err != nil {
				report(err)
				return
			}
			reclaimed.Add(int64(n))
		}
	}()
	// Subscribers: each subscribes to one name for a few messages, then closes and starts
	// again, checking each message's topic.
	for _, name := range names[:3] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				s, err := b.Subscribe(name, WithQueueDepth(64), WithOverflow(DropOldest))
				if err != nil {
					report(err)
					return
				}
				for range 4 {
					rctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
					m, err := s.Receive(rctx)
					cancel()
					if err != nil {
						break // no publisher on the name just now
					}
					if got, want := m.Topic(), string(m.Data()); got != want {
						report(fmt.Errorf("message published on %q received as %q", want, got))
					}
					m.Release()
				}
				s.Close()
			}
		}()
	}
	const rounds = 300
	var pubs sync.WaitGroup
	for g, name := range names {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			// Go on past rounds until the reclaimer has freed something: on a loaded
			// machine it may not have run at all in the first rounds.
			for i := 0; i < rounds || (reclaimed.Load() == 0 && i < 100*rounds); i++ {
				p, err := b.Publisher(name)
				if err != nil {
					report(fmt.Errorf("publisher %d round %d: %w", g, i, err))
					return
				}
				for range 3 {
					if err := p.Publish(ctx, []byte(name)); err != nil {
						report(fmt.Errorf("publisher %d round %d: %w", g, i, err))
						p.Close()
						return
					}
				}
				p.Close()
			}
		}()
	}
	pubs.Wait()
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if reclaimed.Load() == 0 {
		t.Error("the reclaimer freed nothing: the test did not race reclaiming with publishing")
	}
}

// TestTopicNameCacheFollowsReuse: a message's topic name is cached per table index; once the
// entry is reclaimed and taken by another name, messages of the new topic show the new name.
func TestTopicNameCacheFollowsReuse(t *testing.T) {
	dir := t.TempDir()
	c := reclaimConfig()
	c.Topics = 1
	b := openTest(t, dir, WithConfig(c))
	ctx := ctxT(t)
	sub, err := b.Subscribe(">")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(name string) {
		p, err := b.Publisher(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(ctx, []byte(name)); err != nil {
			t.Fatal(err)
		}
		p.Close()
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Topic() != name {
			t.Fatalf("message on %q received as %q", name, m.Topic())
		}
		m.Release()
	}
	publish("first")
	// ">" matches every name: close it to let "first" go, then subscribe again.
	sub.Close()
	if n, err := b.ReclaimTopics(); err != nil || n != 1 {
		t.Fatalf("ReclaimTopics: %d %v, want 1", n, err)
	}
	if sub, err = b.Subscribe(">"); err != nil {
		t.Fatal(err)
	}
	publish("second")
}

// TestPublisherCloseDoesNotWaitForBlockedSend: Close returns while a Send of the publisher is
// blocked on a full Block subscription (it used to wait for the Send, with no bound but the
// Send's context), and the topic stays pinned until that Send has returned.
func TestPublisherCloseDoesNotWaitForBlockedSend(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := b.Subscribe("close.block", WithQueueDepth(2), WithOverflow(Block))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	pub, err := b.Publisher("close.block")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := pub.Publish(ctx, []byte("fill")); err != nil {
			t.Fatal(err)
		}
	}
	sent := make(chan error, 1)
	go func() { sent <- pub.Publish(context.Background(), []byte("blocked")) }()
	for blockedOn(b, sub) == 0 { // the Send's announcement that it sleeps, bounded by ctx
		if ctx.Err() != nil {
			t.Fatal("the Send never blocked on the full subscription")
		}
		time.Sleep(100 * time.Microsecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- pub.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Publisher.Close waited for a Send blocked on a full subscription")
	}
	if n := publishersOf(b, "close.block"); n != 1 {
		t.Fatalf("%d publishers pin the topic while the Send is under way, want 1", n)
	}
	m, err := sub.Receive(ctx) // room: the Send goes on
	if err != nil {
		t.Fatal(err)
	}
	m.Release()
	if err := <-sent; err != nil {
		t.Fatalf("the Send that entered before Close: %v", err)
	}
	if n := publishersOf(b, "close.block"); n != 0 {
		t.Fatalf("%d publishers pin the topic after the last Send returned, want 0", n)
	}
}

func blockedOn(b *Bus, s *Subscription) int {
	for _, st := range b.r.InboxStats() {
		if st.ID == s.in.ID() {
			return st.Blocked
		}
	}
	return 0
}

func publishersOf(b *Bus, topic string) int {
	for _, ts := range b.r.TopicStats() {
		if ts.Name == topic {
			return ts.Publishers
		}
	}
	return -1
}
