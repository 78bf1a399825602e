package shm

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
)

func newTopicRegion(t *testing.T, cfg Config) (*Region, *Participant) {
	t.Helper()
	r, err := Create("topics", Options{Dir: t.TempDir(), Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Attach("t")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Detach()
		r.Close()
	})
	return r, p
}

func TestTopicLookupCreate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Topics = 8
	r, p := newTopicRegion(t, cfg)
	if _, err := p.LookupTopic("a.b", false, 0); err == nil {
		t.Fatal("lookup of a missing topic succeeded")
	}
	a, err := p.LookupTopic("a.b", true, 2)
	if err != nil {
		t.Fatal(err)
	}
	again, err := p.LookupTopic("a.b", false, 0)
	if err != nil || again.Index() != a.Index() || again.Name() != "a.b" || again.HistoryDepth() != 2 {
		t.Fatalf("second lookup: %v %d %q %d", err, again.Index(), again.Name(), again.HistoryDepth())
	}
	for i := range 7 {
		if _, err := p.LookupTopic(fmt.Sprintf("t%d", i), true, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.LookupTopic("one.too.many", true, 0); err == nil {
		t.Fatal("a full table accepted a new topic")
	}
	if got, err := r.Topic(a.Index()); err != nil || got.Name() != "a.b" {
		t.Fatalf("Topic(%d): %v %q", a.Index(), err, got.Name())
	}
	if _, err := p.LookupTopic("x", true, int(cfg.HistoryDepth)+1); err == nil {
		t.Fatal("history deeper than the region allows was accepted")
	}
}

func TestTopicConcurrentCreateOneEntry(t *testing.T) {
	_, p := newTopicRegion(t, DefaultConfig())
	var wg sync.WaitGroup
	idx := make([]int, 8)
	for g := range idx {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tp, err := p.LookupTopic("same.name", true, 0)
			if err != nil {
				t.Error(err)
				return
			}
			idx[g] = tp.Index()
		}()
	}
	wg.Wait()
	for _, i := range idx[1:] {
		if i != idx[0] {
			t.Fatalf("racing creators got different entries: %v", idx)
		}
	}
}

func TestTopicHistoryKeepsNewestAndReleases(t *testing.T) {
	r, p := newTopicRegion(t, DefaultConfig())
	tp, err := p.LookupTopic("h", true, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		b, err := p.alloc(8)
		if err != nil {
			t.Fatal(err)
		}
		b.SetMeta(Meta{Len: 8, Seq: uint64(i)})
		if err := r.addRefsHandle(b.Handle(), 1); err != nil {
			t.Fatal(err)
		}
		tp.remember(b.Handle())
		if err := p.unloan(b.Handle()); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.CountAllocated()[0]; n != 3 {
		t.Fatalf("%d buffers held, want the 3 in history", n)
	}
	var seqs []uint64
	err = tp.holdHistory(p, func(idx int, h Handle) {
		b, err := r.buffer(h)
		if err != nil {
			t.Fatal(err)
		}
		if w, _ := p.heldWord(idx); Handle(w.Load()) != h {
			t.Fatalf("held entry %d holds %#x, want %v", idx, w.Load(), h)
		}
		seqs = append(seqs, b.Meta().Seq)
		if err := p.unhold(idx, h); err != nil {
			t.Fatal(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != "[2 3 4]" {
		t.Fatalf("history %v, want [2 3 4]", seqs)
	}
	tp.clearHistory()
	if n := r.CountAllocated()[0]; n != 0 {
		t.Fatalf("%d buffers held after ClearHistory", n)
	}
}

func TestTopicFingerprint(t *testing.T) {
	_, p := newTopicRegion(t, DefaultConfig())
	tp, _ := p.LookupTopic("f", true, 0)
	if !must(tp.SetFingerprint(42, "msgpack", "")) || !must(tp.SetFingerprint(42, "msgpack", "")) {
		t.Fatal("same fingerprint refused")
	}
	if must(tp.SetFingerprint(43, "raw", "")) {
		t.Fatal("different fingerprint accepted")
	}
	if fp, c := tp.Fingerprint(); fp != 42 || c != "msgpack" {
		t.Fatalf("fingerprint %d %q", fp, c)
	}
}

// roleFingerprintClaimer attaches to OFFQ_DIR/fp, claims the fingerprint of topic "typed" and
// stops between the claim and the store that publishes the fingerprint, says "claimed", and
// waits there to be killed.
func roleFingerprintClaimer(c *peer.Child) error {
	r, err := Open("fp", Options{Dir: os.Getenv("OFFQ_DIR")})
	if err != nil {
		return err
	}
	p, err := r.Attach("claimer")
	if err != nil {
		return err
	}
	tp, err := p.LookupTopic("typed", true, 0)
	if err != nil {
		return err
	}
	testHookFingerprintClaimed = func() {
		c.Send("claimed")
		<-c.Context().Done() // killed before this
	}
	tp.SetFingerprint(7, "json", "")
	return nil
}

// TestFingerprintClaimerKilled: a process killed with SIGKILL between claiming a topic's
// type fingerprint and publishing it does not wedge the topic: a reap undoes the claim, and
// so does the next claimer that finds its claimer dead; either way the next typed user
// records its own fingerprint.
func TestFingerprintClaimerKilled(t *testing.T) {
	for _, reap := range []bool{true, false} {
		t.Run(fmt.Sprintf("reap=%v", reap), func(t *testing.T) {
			dir := t.TempDir()
			r, err := Create("fp", Options{Dir: dir, Config: inboxConfig()})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			p := attachUnit(t, r, "parent")
			claimer := peer.Start(t, "fp-claimer", "OFFQ_DIR="+dir)
			if _, err := claimer.Expect("claimed", time.Minute); err != nil {
				t.Fatal(err)
			}
			claimer.Kill()
			claimer.Wait(time.Minute)
			tp, err := p.LookupTopic("typed", false, 0)
			if err != nil {
				t.Fatal(err)
			}
			if reap {
				rep, err := r.Reap()
				if err != nil {
					t.Fatal(err)
				}
				if rep.Participants != 1 || rep.Topics != 1 {
					t.Fatalf("reap report %+v, want the participant and its fingerprint claim", rep)
				}
				if v := tp.e.fingerprint.Load(); v != 0 {
					t.Fatalf("fingerprint word %#x after reaping its dead claimer, want 0", v)
				}
			}
			if !must(tp.SetFingerprint(42, "msgpack", "")) {
				fp, c := tp.Fingerprint()
				t.Fatalf("fingerprint refused after its claimer died: topic says %q %#x", c, fp)
			}
			if fp, c := tp.Fingerprint(); fp != 42 || c != "msgpack" {
				t.Fatalf("fingerprint %d %q, want 42 msgpack", fp, c)
			}
		})
	}
}

// TestHoldHistoryDuringRemember: a late joiner takes the history while a publisher's Remember
// is half done (its position taken, its cell not yet written, so the cell still holds the
// message from a full ring earlier). The joiner gets the messages of the window, in order,
// and not that older one.
func TestHoldHistoryDuringRemember(t *testing.T) {
	r, p := newTopicRegion(t, DefaultConfig())
	tp, err := p.LookupTopic("hist", true, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.clearHistory()
	remember := func(seq uint64) {
		b, err := p.alloc(8)
		if err != nil {
			t.Fatal(err)
		}
		b.SetMeta(Meta{Len: 8, Seq: seq})
		if err := r.addRefsHandle(b.Handle(), 1); err != nil {
			t.Fatal(err)
		}
		tp.remember(b.Handle())
		if err := p.unloan(b.Handle()); err != nil {
			t.Fatal(err)
		}
	}
	remember(1)
	remember(2)
	var seqs []uint64
	ran := false
	testHookRememberReserved = func() {
		testHookRememberReserved = nil
		ran = true
		err := tp.holdHistory(p, func(idx int, h Handle) {
			b, err := r.buffer(h)
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, b.Meta().Seq)
			if err := p.unhold(idx, h); err != nil {
				t.Fatal(err)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	defer func() { testHookRememberReserved = nil }()
	remember(3)
	if !ran {
		t.Fatal("the hook did not run")
	}
	if fmt.Sprint(seqs) != "[2]" {
		t.Fatalf("history handed over during a Remember: %v, want [2] (3 is not there yet; 1 left the window)", seqs)
	}
	if p.Held() != 0 {
		t.Fatalf("%d held entries left", p.Held())
	}
}

// TestTypeNameRecorded: the type's name is recorded with the fingerprint by the first claimer,
// cut to the field on a UTF-8 boundary, and a later claimer of another type changes nothing.
func TestTypeNameRecorded(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"main.Reading", "main.Reading"},
		{strings.Repeat("a", 40), strings.Repeat("a", 40)},
		{strings.Repeat("a", 39) + "é", strings.Repeat("a", 39)},
		{strings.Repeat("a", 38) + "é", strings.Repeat("a", 38) + "é"},
		{strings.Repeat("a", 38) + "€", strings.Repeat("a", 38)},
	} {
		if got := truncateUTF8(tc.in, maxTypeName); got != tc.want {
			t.Errorf("truncateUTF8(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	r, p := newTopicRegion(t, DefaultConfig())
	tp, _ := p.LookupTopic("types.named", true, 0)
	if got := tp.TypeName(); got != "" {
		t.Fatalf("type name before any claim: %q", got)
	}
	if !must(tp.SetFingerprint(42, "struct", "main.Reading")) || must(tp.SetFingerprint(43, "struct", "main.Other")) {
		t.Fatal("first claim lost or second won")
	}
	if got := tp.TypeName(); got != "main.Reading" {
		t.Fatalf("type name %q, want main.Reading", got)
	}
	st := r.TopicStats()
	if len(st) != 1 || st[0].TypeName != "main.Reading" {
		t.Fatalf("TopicStats %+v", st)
	}
}
