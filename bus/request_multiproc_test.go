package bus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/internal/shm"
)

// roleResponder answers requests on OFFQ_PATTERN (in queue group OFFQ_GROUP, if set) with
// "re:" + the request, until stopped. With OFFQ_MODE=hang it takes one request, says "took",
// and keeps it unanswered until killed.
func roleResponder(c *peer.Child) error {
	b, err := Open("rq", WithDir(os.Getenv("OFFQ_DIR")), WithName("responder"), WithReapInterval(0))
	if err != nil {
		return err
	}
	defer b.Close()
	var opts []SubscribeOption
	if g := os.Getenv("OFFQ_GROUP"); g != "" {
		opts = append(opts, WithQueueGroup(g))
	}
	s, err := b.Subscribe(os.Getenv("OFFQ_PATTERN"), opts...)
	if err != nil {
		return err
	}
	c.Send("ready")
	for {
		m, err := s.Receive(c.Context())
		if err != nil {
			if c.Context().Err() != nil {
				return nil
			}
			return err
		}
		if os.Getenv("OFFQ_MODE") == "hang" {
			c.Send("took")
			<-c.Context().Done()
			return nil
		}
		r, err := m.ReplyLoan(len(m.Data()) + 3)
		if err != nil {
			return err
		}
		copy(r.Bytes(), "re:")
		copy(r.Bytes()[3:], m.Data())
		m.Release()
		if err := r.Send(c.Context()); err != nil && !errors.Is(err, ErrRequesterGone) {
			return err
		}
	}
}

// roleRequester sends OFFQ_COUNT requests on OFFQ_TOPIC from 4 goroutines and checks every
// reply, then says "result ok N".
func roleRequester(c *peer.Child) error {
	b, err := Open("rq", WithDir(os.Getenv("OFFQ_DIR")), WithName("requester"), WithReapInterval(0))
	if err != nil {
		return err
	}
	defer b.Close()
	pub, err := b.Publisher(os.Getenv("OFFQ_TOPIC"))
	if err != nil {
		return err
	}
	n, _ := strconv.Atoi(os.Getenv("OFFQ_COUNT"))
	c.Send("ready")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n / 4 {
				want := fmt.Sprintf("%d-%d-%d", os.Getpid(), g, i)
				m, err := pub.Request(c.Context(), []byte(want))
				if err != nil {
					errs <- err
					return
				}
				got := string(m.Data())
				m.Release()
				if got != "re:"+want {
					errs <- fmt.Errorf("reply %q to %q", got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	c.Send("result ok %d", n/4*4)
	return nil
}

// TestRequestMultiProcess: three requester processes, 4 goroutines each, against two
// responder processes sharing the requests as a queue group; every reply matches its request,
// and nothing is left in the region afterwards.
func TestRequestMultiProcess(t *testing.T) {
	dir := t.TempDir()
	var resp []*peer.Proc
	for range 2 {
		p := peer.Start(t, "responder", "OFFQ_DIR="+dir, "OFFQ_PATTERN=svc.>", "OFFQ_GROUP=workers")
		if _, err := p.Expect("ready", time.Minute); err != nil {
			t.Fatal(err)
		}
		resp = append(resp, p)
	}
	var reqs []*peer.Proc
	for range 3 {
		p := peer.Start(t, "requester", "OFFQ_DIR="+dir, "OFFQ_TOPIC=svc.echo", "OFFQ_COUNT=400")
		if _, err := p.Expect("ready", time.Minute); err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, p)
	}
	for _, p := range reqs {
		if l, err := p.Expect("result ok", 2*time.Minute); err != nil || l != "400" {
			t.Fatalf("%q %v", l, err)
		}
		if err := p.Wait(time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range resp {
		if err := p.Stop(time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	r, err := shm.Open("rq", shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	found := false
	for _, ts := range r.TopicStats() {
		if ts.Name == "svc.echo" {
			found = true
			if ts.Requests.Requests != 1200 || ts.Requests.Replies != 1200 {
				t.Errorf("counters %+v, want 1200 requests and 1200 replies", ts.Requests)
			}
		}
	}
	if !found {
		t.Error("no topic svc.echo in the region's stats")
	}
	assertCleanRegion(t, r)
}

// TestRequestResponderKilled: the responder takes the request and is killed with SIGKILL
// before replying. The requester, whose deadline is an hour away, fails with
// ErrResponderDied; after a reap nothing the dead responder had is left.
func TestRequestResponderKilled(t *testing.T) {
	for _, w := range []WaitStrategy{SpinThenSleep, BusySpin} {
		t.Run(w.String(), func(t *testing.T) { testRequestResponderKilled(t, w) })
	}
}

func testRequestResponderKilled(t *testing.T, w WaitStrategy) {
	dir := t.TempDir()
	b, err := Open("rq", WithDir(dir), WithReapInterval(0), WithRequestWait(w))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := peer.Start(t, "responder", "OFFQ_DIR="+dir, "OFFQ_PATTERN=svc.slow", "OFFQ_MODE=hang")
	if _, err := p.Expect("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	pub, _ := b.Publisher("svc.slow")
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	go func() {
		_, err := pub.Request(ctx, []byte("are you there"))
		done <- err
	}()
	if _, err := p.Expect("took", time.Minute); err != nil {
		t.Fatal(err)
	}
	p.Kill()
	p.Wait(time.Minute)
	select {
	case err := <-done:
		if !errors.Is(err, ErrResponderDied) {
			t.Fatalf("request ended with %v, want ErrResponderDied", err)
		}
	case <-time.After(time.Minute): // a bound on the test, far below the request's hour
		t.Fatal("the requester did not notice its responder died")
	}
	if _, err := b.r.Reap(); err != nil {
		t.Fatal(err)
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use after the reap", n)
	}
	if st := topicStat(t, b, "svc.slow"); st.Requests.ResponderDied != 1 {
		t.Fatalf("counters %+v", st.Requests)
	}
	// The dead responder's subscription is gone: the next request finds no responder.
	if _, err := pub.Request(ctx, []byte("anyone")); !errors.Is(err, ErrNoResponders) {
		t.Fatalf("after the reap: %v, want ErrNoResponders", err)
	}
}

// assertCleanRegion checks that no buffer is in use and no participant or inbox is left.
func assertCleanRegion(t *testing.T, r *shm.Region) {
	t.Helper()
	for i, n := range r.CountAllocated() {
		if n != 0 {
			t.Errorf("class %d: %d buffers allocated after every process closed", i, n)
		}
	}
	if p := r.Participants(); len(p) != 0 {
		t.Errorf("participants left: %+v", p)
	}
	if in := r.InboxStats(); len(in) != 0 {
		t.Errorf("inboxes left: %+v", in)
	}
}

// roleMember is a queue-group member on qg.> (group "g"): it says "ready", then for each
// message says "got N" (N the message's number) and releases it, until stopped.
func roleMember(c *peer.Child) error {
	b, err := Open("rq", WithDir(os.Getenv("OFFQ_DIR")), WithName("member"), WithReapInterval(0))
	if err != nil {
		return err
	}
	defer b.Close()
	s, err := b.Subscribe("qg.>", WithQueueGroup("g"))
	if err != nil {
		return err
	}
	c.Send("ready")
	for {
		m, err := s.Receive(c.Context())
		if err != nil {
			if c.Context().Err() != nil {
				return nil
			}
			return err
		}
		c.Send("got %d", binary.LittleEndian.Uint64(m.Data()))
		m.Release()
	}
}

// TestQueueGroupMembersKilledUnderLoad: three member processes share a stream; while it flows
// one member is killed with SIGKILL and a new one started, twice. Every message is taken by
// exactly one member, or counted as a queue-group drop (queued for a member that died), or
// was the one message a killed member held.
func TestQueueGroupMembersKilledUnderLoad(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("rq", WithDir(dir), WithReapInterval(2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := ctxT(t)
	start := func() *peer.Proc {
		p := peer.Start(t, "member", "OFFQ_DIR="+dir)
		if _, err := p.Expect("ready", time.Minute); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var all []*peer.Proc
	live := []*peer.Proc{start(), start(), start()}
	all = append(all, live...)
	pub, _ := b.Publisher("qg.data")
	const total = 3000
	kills := 0
	for i := range total {
		l, err := pub.Loan(8)
		if err != nil {
			t.Fatal(err)
		}
		binary.LittleEndian.PutUint64(l.Bytes(), uint64(i))
		if err := pub.Send(ctx, l); err != nil {
			t.Fatal(err)
		}
		if i == total/3 || i == 2*total/3 {
			live[0].Kill()
			live[0].Wait(time.Minute)
			kills++
			n := start()
			all = append(all, n)
			live = append(live[1:], n)
		}
	}
	// Wait until the live members have taken everything queued for them (the dead ones were
	// reaped by the background reaper, which the stats show as no inbox of theirs left).
	for {
		pending := 0
		for _, in := range b.r.InboxStats() {
			pending += in.Depth
		}
		if pending == 0 && len(b.r.InboxStats()) == 3 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("members did not drain: %+v", b.r.InboxStats())
		}
		time.Sleep(time.Millisecond) // polling the members' progress, bounded by ctx
	}
	for _, p := range live {
		if err := p.Stop(time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	seen := make(map[uint64]int)
	taken := 0
	for _, p := range all {
		<-p.Exited()
		for {
			l, err := p.ReadLine(0)
			if err != nil {
				break
			}
			v, ok := strings.CutPrefix(l, "got ")
			if !ok {
				continue
			}
			n, _ := strconv.ParseUint(v, 10, 64)
			seen[n]++
			taken++
		}
	}
	for n, k := range seen {
		if k != 1 {
			t.Errorf("message %d taken %d times", n, k)
		}
	}
	dropped := int(topicStat(t, b, "qg.data").Requests.GroupDropped)
	if lost := total - taken - dropped; lost < 0 || lost > kills {
		t.Fatalf("%d published, %d taken, %d counted as group drops: %d unaccounted (at most %d held by killed members)",
			total, taken, dropped, lost, kills)
	}
	t.Logf("%d published, %d taken, %d group drops, %d held by killed members", total, taken, dropped, total-taken-dropped)
	if inUse(b) != 0 {
		t.Fatalf("%d buffers in use", inUse(b))
	}
}
