package shm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
)

// sendOn publishes one 10-byte message on t to no inbox.
func sendOn(t *testing.T, p *Participant, tp Topic) {
	t.Helper()
	l, err := p.Loan(10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Send(context.Background(), l, 10, nil); err != nil {
		t.Fatal(err)
	}
}

func lookup(t *testing.T, p *Participant, name string, history int) Topic {
	t.Helper()
	tp, err := p.LookupTopic(name, true, history)
	if err != nil {
		t.Fatalf("topic %q: %v", name, err)
	}
	return tp
}

func topicCount(t *testing.T, r *Region) int {
	t.Helper()
	return len(r.TopicStats())
}

// TestAuditFreesUnusedTopics: a full topic table, in which two topics have no history and no
// buffer naming them (one was published on, with a type recorded), one is named by a buffer
// in another topic's history and one has history. Once its process has gone, the audit frees
// the two unused entries (and only them), a Topic value kept from before is refused, and two
// new names take the freed entries.
func TestAuditFreesUnusedTopics(t *testing.T) {
	r := newUnitRegion(t, unitConfig()) // 4 topics, history depth 2
	p, err := r.Attach("pub")
	if err != nil {
		t.Fatal(err)
	}
	a := lookup(t, p, "typo.a", 0)
	b := lookup(t, p, "typo.b", 1)
	c := lookup(t, p, "named", 0)
	d := lookup(t, p, "kept", 1)
	if _, err := p.LookupTopic("one.more", true, 0); !errors.Is(err, ErrTableFull) {
		t.Fatalf("fifth topic: %v, want ErrTableFull", err)
	}
	sendOn(t, p, a)
	if ok, err := a.SetFingerprint(1<<40, "json", "main.T"); !ok || err != nil {
		t.Fatalf("SetFingerprint: %v %v", ok, err)
	}
	sendOn(t, p, d)
	// The message in d's history names c (as a message published on c and remembered by d
	// would): c is in use.
	h := Handle(d.histCell(0).Load())
	buf, err := r.buffer(h)
	if err != nil {
		t.Fatal(err)
	}
	buf.s.topic = c.index
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}

	rep, err := r.Reap()
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Audited || rep.TopicsFreed != 2 || rep.Repaired != 0 {
		t.Fatalf("reap: %+v, want an audit that freed 2 topics and repaired nothing", rep)
	}
	if n := topicCount(t, r); n != 2 {
		t.Fatalf("%d topics after the audit, want 2", n)
	}
	for _, k := range []Topic{a, b} {
		if _, err := r.Topic(k.Index()); !errors.Is(err, ErrNotFound) {
			t.Errorf("topic %d after the audit: %v, want ErrNotFound", k.Index(), err)
		}
	}

	p2 := attachUnit(t, r, "next")
	for _, k := range []struct {
		name string
		idx  int
	}{{"named", c.Index()}, {"kept", d.Index()}} {
		tp, err := p2.LookupTopic(k.name, false, 0)
		if err != nil || tp.Index() != k.idx {
			t.Fatalf("topic %q after the audit: index %d, %v; want %d", k.name, tp.Index(), err, k.idx)
		}
	}
	if n := r.CountAllocated(); n[0] != 1 {
		t.Fatalf("allocated %v, want d's history message only", n)
	}
	for _, name := range []string{"typo.a", "typo.b"} {
		if _, err := p2.LookupTopic(name, false, 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("lookup of freed %q: %v, want ErrNotFound", name, err)
		}
	}
	e := lookup(t, p2, "fresh.e", 0)
	f := lookup(t, p2, "fresh.f", 0)
	got := map[int]bool{e.Index(): true, f.Index(): true}
	if !got[a.Index()] || !got[b.Index()] {
		t.Fatalf("new topics at %d and %d, want the freed %d and %d", e.Index(), f.Index(), a.Index(), b.Index())
	}
	if _, err := p2.LookupTopic("one.more", true, 0); !errors.Is(err, ErrTableFull) {
		t.Fatalf("fifth topic: %v, want ErrTableFull", err)
	}
	for _, k := range []Topic{e, f} {
		if k.Published() != 0 {
			t.Errorf("new topic %s: published %d, want 0", k.Name(), k.Published())
		}
		if fp, codec := k.Fingerprint(); fp != 0 || codec != "" || k.TypeName() != "" {
			t.Errorf("new topic %s: fingerprint %x %q %q, want none", k.Name(), fp, codec, k.TypeName())
		}
	}
	// A Topic value from before the audit no longer publishes into the entry.
	l, err := p2.Loan(10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Send(context.Background(), l, 10, nil); !errors.Is(err, ErrTopicReclaimed) {
		t.Fatalf("Send on a reclaimed topic: %v, want ErrTopicReclaimed", err)
	}
	sendOn(t, p2, e)
	sendOn(t, p2, f)
	if e.Published() != 1 || f.Published() != 1 {
		t.Fatalf("published %d and %d, want 1 each", e.Published(), f.Published())
	}
	if n := r.CountAllocated(); n[0] != 1 {
		t.Fatalf("allocated %v after the refused send, want d's history message only", n)
	}
}

// collidingNames returns two names whose home entries in a table of n are the same.
func collidingNames(n uint32, prefix string) (string, string) {
	seen := map[uint64]string{}
	for i := 0; ; i++ {
		s := fmt.Sprintf("%s%d", prefix, i)
		h := topicHash(s) % uint64(n)
		if o, ok := seen[h]; ok {
			return o, s
		}
		seen[h] = s
	}
}

// TestAuditKeepsProbeSequences: two names with the same home entry; the first is freed, the
// second (one entry further, with history) kept. A lookup of the second must still find it,
// and creating it again must not make a second entry of the same name; a new name of the same
// home takes the freed entry. Once the second is gone too, both entries are free again.
func TestAuditKeepsProbeSequences(t *testing.T) {
	r := newUnitRegion(t, unitConfig())
	x, y := collidingNames(r.cfg.Topics, "coll.")
	p, err := r.Attach("pub")
	if err != nil {
		t.Fatal(err)
	}
	tx := lookup(t, p, x, 0)
	ty := lookup(t, p, y, 1)
	sendOn(t, p, ty)
	p.Detach()
	if rep, err := r.Reap(); err != nil || rep.TopicsFreed != 1 {
		t.Fatalf("reap: %+v %v, want 1 topic freed", rep, err)
	}
	if st := func() uint64 { e, _ := r.topicEntry(tx.index); return e.state.Load() & 0xff }(); st != topicReclaimed {
		t.Fatalf("freed entry on another's probe sequence: state %d, want reclaimed", st)
	}
	p2, err := r.Attach("next")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p2.LookupTopic(y, false, 0); err != nil || got.Index() != ty.Index() {
		t.Fatalf("lookup of %q past a freed entry: %d %v, want %d", y, got.Index(), err, ty.Index())
	}
	if got := lookup(t, p2, y, 1); got.Index() != ty.Index() {
		t.Fatalf("creating %q again: index %d, want the existing %d", y, got.Index(), ty.Index())
	}
	if got := lookup(t, p2, x, 0); got.Index() != tx.Index() {
		t.Fatalf("re-creating %q: index %d, want the freed %d", x, got.Index(), tx.Index())
	}
	for i := range r.cfg.Topics { // empty the history, so that the next audit frees both
		e, _ := r.topicEntry(i)
		if e.state.Load()&0xff == topicReady {
			tp, _ := r.Topic(int(i))
			tp.clearHistory()
		}
	}
	p2.Detach()
	if rep, err := r.Reap(); err != nil || rep.TopicsFreed != 2 {
		t.Fatalf("second reap: %+v %v, want 2 topics freed", rep, err)
	}
	for i := range r.cfg.Topics {
		if e, _ := r.topicEntry(i); e.state.Load() != topicFree {
			t.Errorf("entry %d: state %#x after freeing every topic, want free", i, e.state.Load())
		}
	}
	checkNoLeaks(t, r)
}

// roleTypoPublisher attaches to OFFQ_DIR/typo, publishes on topic "typo" (no history) as fast
// as it can, says "ready" after the first message and goes on until it is killed.
func roleTypoPublisher(c *peer.Child) error {
	r, err := Open("typo", Options{Dir: os.Getenv("OFFQ_DIR")})
	if err != nil {
		return err
	}
	p, err := r.Attach("typo-pub")
	if err != nil {
		return err
	}
	tp, err := p.LookupTopic("typo", true, 0)
	if err != nil {
		return err
	}
	for i := 0; ; i++ {
		l, err := p.Loan(10)
		if err != nil {
			return err
		}
		if _, err := tp.Send(c.Context(), l, 10, nil); err != nil {
			return err
		}
		if i == 1000 { // well into its loop: the kill lands anywhere in a send
			c.Send("ready")
		}
	}
}

// TestAuditFreesTopicOfKilledPublisher: a process publishing on a topic nobody else uses is
// killed with SIGKILL mid-publish. The audit (nobody is attached) frees its participant, its
// loan if it had one, and the topic entry; nothing leaks, and a second audit finds nothing to
// do.
func TestAuditFreesTopicOfKilledPublisher(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("typo", Options{Dir: dir, Config: reapConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pub := peer.Start(t, "typo-publisher", "OFFQ_DIR="+dir)
	if _, err := pub.Expect("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	pub.Kill()
	pub.Wait(time.Minute)
	if n := topicCount(t, r); n != 1 {
		t.Fatalf("%d topics before the audit, want 1", n)
	}
	rep, err := r.Reap()
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Audited || rep.Participants != 1 || rep.TopicsFreed != 1 {
		t.Fatalf("reap: %+v, want an audit that freed the participant and its topic", rep)
	}
	checkNoLeaks(t, r)
	if n := topicCount(t, r); n != 0 {
		t.Fatalf("%d topics after the audit, want 0", n)
	}
	rep, err = r.Reap()
	if err != nil {
		t.Fatal(err)
	}
	if want := (ReapReport{Audited: true, Recounted: true}); rep != want {
		t.Fatalf("second reap: %+v, want %+v", rep, want)
	}
	p := attachUnit(t, r, "next")
	if _, err := p.LookupTopic("typo", false, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of the freed topic: %v, want ErrNotFound", err)
	}
	tp := lookup(t, p, "other", 0)
	sendOn(t, p, tp)
	if tp.Published() != 1 {
		t.Fatalf("published %d, want 1", tp.Published())
	}
}

// TestTopicGenerationWord: the generation word counts up in both halves, a damaged word
// restarts, and a Topic whose entry's word was scribbled (halves differ) still publishes.
func TestTopicGenerationWord(t *testing.T) {
	if w := nextTopicGen(0); w != 1<<32|1 {
		t.Fatalf("nextTopicGen(0) = %#x", w)
	}
	if w := nextTopicGen(0xffffffff_ffffffff); w != 0 {
		t.Fatalf("nextTopicGen wraps to %#x, want 0", w)
	}
	if w := nextTopicGen(0x12345678_00000001); w != 1<<32|1 {
		t.Fatalf("nextTopicGen of a damaged word = %#x", w)
	}
	r := newUnitRegion(t, unitConfig())
	p := attachUnit(t, r, "pub")
	tp := lookup(t, p, "scribbled", 0)
	tp.e.gen.Store(0xdeadbeef_00000000)
	sendOn(t, p, tp)
	tp.e.gen.Store(nextTopicGen(0))
	l, err := p.Loan(10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Send(context.Background(), l, 10, nil); !errors.Is(err, ErrTopicReclaimed) {
		t.Fatalf("Send after the generation moved: %v, want ErrTopicReclaimed", err)
	}
	checkNoLeaks(t, r)
}
