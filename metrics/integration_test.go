package metrics

import (
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/transport"
)

// rolePublisher: OFFQ_DIR, OFFQ_BUS, OFFQ_TOPIC. Prints "ready"; then, for each line
// "pub N" it reads, publishes N messages of 64 bytes and prints "published N", and for a line
// "reap" reclaims dead participants and prints "reaped N". It reaps only when told.
func rolePublisher(c *peer.Child) error {
	b, err := bus.Open(os.Getenv("OFFQ_BUS"), bus.WithDir(os.Getenv("OFFQ_DIR")), bus.WithName("publisher"),
		bus.WithReapInterval(0))
	if err != nil {
		return err
	}
	defer b.Close()
	pub, err := b.Publisher(os.Getenv("OFFQ_TOPIC"))
	if err != nil {
		return err
	}
	c.Send("ready")
	payload := make([]byte, 64)
	for {
		l, err := c.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if l == "reap" {
			r, err := transport.Open(b.Name(), transport.Options{Dir: os.Getenv("OFFQ_DIR")})
			if err != nil {
				return err
			}
			rep, err := r.Reap()
			r.Close()
			if err != nil {
				return err
			}
			c.Send("reaped %d", rep.Participants)
			continue
		}
		var n int
		if _, err := fmt.Sscanf(l, "pub %d", &n); err != nil {
			return fmt.Errorf("command %q: %v", l, err)
		}
		for range n {
			if err := pub.Publish(c.Context(), payload); err != nil {
				return err
			}
		}
		c.Send("published %d", n)
	}
}

// roleSubscriber: OFFQ_DIR, OFFQ_BUS, OFFQ_PATTERN, OFFQ_DEPTH, OFFQ_NAME. Subscribes (drop
// oldest) and prints "ready", then takes nothing until told: for each line "recv N" it
// receives and releases N messages and prints "received N"; for "hold N" it receives N and
// keeps them (a stalled consumer) and prints "holding N" (all it keeps); for "release" it
// releases what it keeps and prints "released N".
func roleSubscriber(c *peer.Child) error {
	b, err := bus.Open(os.Getenv("OFFQ_BUS"), bus.WithDir(os.Getenv("OFFQ_DIR")), bus.WithName(os.Getenv("OFFQ_NAME")),
		bus.WithReapInterval(0))
	if err != nil {
		return err
	}
	defer b.Close()
	depth, _ := strconv.Atoi(os.Getenv("OFFQ_DEPTH"))
	s, err := b.Subscribe(os.Getenv("OFFQ_PATTERN"), bus.WithQueueDepth(depth))
	if err != nil {
		return err
	}
	c.Send("ready")
	var kept []bus.Message
	for {
		l, err := c.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var n int
		if l == "release" {
			for _, m := range kept {
				if err := m.Release(); err != nil {
					return err
				}
			}
			c.Send("released %d", len(kept))
			kept = kept[:0]
			continue
		}
		if _, err := fmt.Sscanf(l, "hold %d", &n); err == nil {
			for range n {
				m, err := s.Receive(c.Context())
				if err != nil {
					return err
				}
				kept = append(kept, m)
			}
			c.Send("holding %d", len(kept))
			continue
		}
		if _, err := fmt.Sscanf(l, "recv %d", &n); err != nil {
			return fmt.Errorf("command %q: %v", l, err)
		}
		for range n {
			m, err := s.Receive(c.Context())
			if err != nil {
				return err
			}
			if err := m.Release(); err != nil {
				return err
			}
		}
		c.Send("received %d", n)
	}
}

// TestExporterAcrossProcesses serves a directory's metrics over HTTP, as offq exporter does,
// while a publisher process and a stalled subscriber process use a bus in it, and checks that
// the scraped numbers move as they should: the queue fills under the stalled subscriber, its
// overflow is counted as dropped, the pool returns to zero once the subscriber catches up; a
// subscriber killed with messages queued shows as dead and holds buffers until it is reaped,
// which counts a reclaim and returns the pool to zero; and the bus leaves the scrape when its
// region is removed.
func TestExporterAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	const name, depth = "mp", 16
	cfg := transport.Config{
		Classes: []transport.Class{{Size: 256, Count: 64}},
		Inboxes: 8, InboxCapacity: depth, Topics: 8, Participants: 8, Held: 64,
	}
	r, err := transport.Create(name, transport.Options{Dir: dir, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()

	c := NewCollector(Options{Dir: dir})
	defer c.Close()
	srv := httptest.NewServer(Handler(c, nil))
	defer srv.Close()
	url := srv.URL + "/metrics"

	env := []string{"OFFQ_DIR=" + dir, "OFFQ_BUS=" + name}
	sub := peer.Start(t, "subscriber", append(env, "OFFQ_PATTERN=mp.>", "OFFQ_NAME=stalled", "OFFQ_DEPTH="+strconv.Itoa(depth))...)
	expect(t, sub, "ready")
	pub := peer.Start(t, "publisher", append(env, "OFFQ_TOPIC=mp.data")...)
	expect(t, pub, "ready")

	bl := "bus=" + name
	inbox := []string{bl, "pattern=mp.>", "subscriber=stalled"}
	check := func(step string, s samples, name string, labels []string, want float64) {
		t.Helper()
		if got := s.one(t, name, labels...); got != want {
			t.Errorf("%s: %s%v = %v, want %v", step, name, labels, got, want)
		}
	}
	checkPool := func(step string, s samples, inUse float64) {
		t.Helper()
		check(step, s, "offq_pool_buffers_in_use", []string{bl}, inUse)
		if lw := s.one(t, "offq_pool_low_water_buffers", bl); lw > 64-inUse {
			t.Errorf("%s: low-water mark %v above the %v buffers free now", step, lw, 64-inUse)
		}
	}

	s, _, _ := scrape(t, url)
	check("attached", s, "offq_participants", []string{bl, "state=alive"}, 2)
	check("attached", s, "offq_inbox_depth", inbox, 0)
	check("attached", s, "offq_inbox_capacity", inbox, depth)
	check("attached", s, "offq_collector_regions", nil, 1)
	checkPool("attached", s, 0)

	send(t, pub, "pub 10", "published 10")
	s, _, _ = scrape(t, url)
	check("10 published", s, "offq_topic_messages_published_total", []string{bl, "topic=mp.data"}, 10)
	check("10 published", s, "offq_topic_bytes_published_total", []string{bl, "topic=mp.data"}, 640)
	check("10 published", s, "offq_topic_subscribers", []string{bl, "topic=mp.data"}, 1)
	check("10 published", s, "offq_inbox_depth", inbox, 10)
	check("10 published", s, "offq_inbox_delivered_total", inbox, 10)
	check("10 published", s, "offq_messages_dropped_total", append(inbox, "reason=oldest"), 0)
	checkPool("10 published", s, 10)

	send(t, pub, "pub 20", "published 20")
	s, _, _ = scrape(t, url)
	check("30 published", s, "offq_inbox_depth", inbox, depth)
	check("30 published", s, "offq_inbox_delivered_total", inbox, 30)
	check("30 published", s, "offq_inbox_received_total", inbox, 0)
	check("30 published", s, "offq_messages_dropped_total", append(inbox, "reason=oldest"), 30-depth)
	check("30 published", s, "offq_messages_dropped_total", append(inbox, "reason=newest"), 0)
	check("30 published", s, "offq_pool_alloc_failures_total", []string{bl}, 0)
	checkPool("30 published", s, depth)

	send(t, sub, fmt.Sprintf("recv %d", depth), fmt.Sprintf("received %d", depth))
	s, _, _ = scrape(t, url)
	check("caught up", s, "offq_inbox_depth", inbox, 0)
	check("caught up", s, "offq_inbox_received_total", inbox, depth)
	check("caught up", s, "offq_messages_dropped_total", append(inbox, "reason=oldest"), 30-depth)
	checkPool("caught up", s, 0)

	// kill -9 with messages queued for it: the kernel drops the subscriber's lock, so its
	// slot shows as dead, and what it left stays allocated until a reaper reclaims it.
	sub.Kill()
	<-sub.Exited()
	send(t, pub, "pub 5", "published 5")
	s, _, _ = scrape(t, url)
	check("killed", s, "offq_participants", []string{bl, "state=alive"}, 1)
	check("killed", s, "offq_participants", []string{bl, "state=dead"}, 1)
	check("killed", s, "offq_reclaims_total", []string{bl}, 0)
	check("killed", s, "offq_inbox_depth", inbox, 5)
	checkPool("killed", s, 5)

	send(t, pub, "reap", "reaped 1")
	s, _, _ = scrape(t, url)
	check("reaped", s, "offq_participants", []string{bl, "state=dead"}, 0)
	check("reaped", s, "offq_reclaims_total", []string{bl}, 1)
	check("reaped", s, "offq_table_slots_used", []string{bl, "table=inboxes"}, 0)
	if m := s.with("offq_inbox_depth", bl); len(m) != 0 {
		t.Errorf("reaped: the dead subscriber's inbox is still served: %v", m)
	}
	checkPool("reaped", s, 0)

	if err := pub.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Wait(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := transport.Unlink(dir, name); err != nil {
		t.Fatal(err)
	}
	s, _, _ = scrape(t, url)
	check("removed", s, "offq_collector_regions", nil, 0)
	if m := s.with("offq_region_size_bytes"); len(m) != 0 {
		t.Errorf("removed: still exported: %v", m)
	}
}

// TestExporterNamesWhoHoldsThePool: a subscriber process that receives messages and keeps
// them, beside one that keeps up, and the scrape names the stalled participant (held, per
// class) and the topic (buffers in use, per class), and sees them return when it releases.
func TestExporterNamesWhoHoldsThePool(t *testing.T) {
	dir := t.TempDir()
	const name, depth = "who", 16
	cfg := transport.Config{
		Classes: []transport.Class{{Size: 256, Count: 64}, {Size: 4096, Count: 8}},
		Inboxes: 8, InboxCapacity: depth, Topics: 8, Participants: 8, Held: 64,
	}
	r, err := transport.Create(name, transport.Options{Dir: dir, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()

	c := NewCollector(Options{Dir: dir})
	defer c.Close()
	srv := httptest.NewServer(Handler(c, nil))
	defer srv.Close()
	url := srv.URL + "/metrics"

	env := []string{"OFFQ_DIR=" + dir, "OFFQ_BUS=" + name, "OFFQ_DEPTH=" + strconv.Itoa(depth)}
	stalled := peer.Start(t, "subscriber", append(env, "OFFQ_PATTERN=who.>", "OFFQ_NAME=stalled")...)
	expect(t, stalled, "ready")
	healthy := peer.Start(t, "subscriber", append(env, "OFFQ_PATTERN=who.data", "OFFQ_NAME=healthy")...)
	expect(t, healthy, "ready")
	pub := peer.Start(t, "publisher", append(env, "OFFQ_TOPIC=who.data")...)
	expect(t, pub, "ready")
	other := peer.Start(t, "publisher", append(env, "OFFQ_TOPIC=who.other")...)
	expect(t, other, "ready")

	bl := "bus=" + name
	check := func(step string, s samples, metric string, labels []string, want float64) {
		t.Helper()
		if got := s.one(t, metric, labels...); got != want {
			t.Errorf("%s: %s%v = %v, want %v", step, metric, labels, got, want)
		}
	}

	send(t, pub, "pub 10", "published 10")
	send(t, other, "pub 2", "published 2")
	send(t, stalled, "hold 9", "holding 9")    // 9 of who.data kept: 1 of who.data and 2 of who.other queued
	send(t, healthy, "recv 10", "received 10") // takes and releases all it was sent
	s, _, _ := scrape(t, url)
	check("stalled", s, "offq_participant_buffers_held", []string{bl, "name=stalled", "class=256B"}, 9)
	check("stalled", s, "offq_participant_buffers_held", []string{bl, "name=stalled", "class=4KiB"}, 0)
	check("stalled", s, "offq_participant_buffers_held", []string{bl, "name=healthy", "class=256B"}, 0)
	if loaned := s.with("offq_participant_buffers_loaned", bl); len(loaned) != 4*2 {
		t.Errorf("stalled: loans served for %d participant-classes, want 4 participants × 2 classes: %v", len(loaned), loaned)
	} else {
		for k, v := range loaned {
			if v != 0 {
				t.Errorf("stalled: %s = %v, want 0 (nobody has a loan between publishes)", k, v)
			}
		}
	}
	check("stalled", s, "offq_topic_buffers_in_use", []string{bl, "topic=who.data", "class=256B"}, 10)
	check("stalled", s, "offq_topic_buffers_in_use", []string{bl, "topic=who.data", "class=4KiB"}, 0)
	check("stalled", s, "offq_topic_buffers_in_use", []string{bl, "topic=who.other", "class=256B"}, 2)
	check("stalled", s, "offq_pool_buffers_in_use", []string{bl, "class=256B"}, 12)
	// The participant label is the stalled subscriber's slot: the same on every series of it.
	held := s.with("offq_participant_buffers_held", bl, "name=stalled", "class=256B")
	for k := range held {
		if !strings.Contains(k, `participant="`) {
			t.Errorf("held series without a participant index: %s", k)
		}
	}

	send(t, stalled, "release", "released 9")
	s, _, _ = scrape(t, url)
	check("released", s, "offq_participant_buffers_held", []string{bl, "name=stalled", "class=256B"}, 0)
	check("released", s, "offq_topic_buffers_in_use", []string{bl, "topic=who.data", "class=256B"}, 1)
	check("released", s, "offq_topic_buffers_in_use", []string{bl, "topic=who.other", "class=256B"}, 2)
	check("released", s, "offq_pool_buffers_in_use", []string{bl, "class=256B"}, 3)

	for _, p := range []*peer.Proc{pub, other, stalled, healthy} {
		if err := p.CloseStdin(); err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(20 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// expect reads p's next line, which must be want.
func expect(t *testing.T, p *peer.Proc, want string) {
	t.Helper()
	l, err := p.ReadLine(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if l != want {
		t.Fatalf("%v wrote %q, want %q", p, l, want)
	}
}

// send sends p a command and waits for its answer.
func send(t *testing.T, p *peer.Proc, cmd, answer string) {
	t.Helper()
	if err := p.Send("%s", cmd); err != nil {
		t.Fatal(err)
	}
	expect(t, p, answer)
}
