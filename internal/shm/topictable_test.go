package shm

import (
	"fmt"
	"sync"
	"testing"
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
		b, err := p.Alloc(8)
		if err != nil {
			t.Fatal(err)
		}
		b.SetMeta(Meta{Len: 8, Seq: uint64(i)})
		if err := r.AddRefs(b.Handle(), 1); err != nil {
			t.Fatal(err)
		}
		tp.Remember(b.Handle())
		if err := p.Unloan(b.Handle()); err != nil {
			t.Fatal(err)
		}
	}
	if n := must(r.CountAllocated())[0]; n != 3 {
		t.Fatalf("%d buffers held, want the 3 in history", n)
	}
	var seqs []uint64
	err = tp.HoldHistory(p, func(idx int, h Handle) {
		b, err := r.Buffer(h)
		if err != nil {
			t.Fatal(err)
		}
		if w, _ := p.heldWord(idx); Handle(w.Load()) != h {
			t.Fatalf("held entry %d holds %#x, want %v", idx, w.Load(), h)
		}
		seqs = append(seqs, b.Meta().Seq)
		if err := p.Unhold(idx, h); err != nil {
			t.Fatal(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != "[2 3 4]" {
		t.Fatalf("history %v, want [2 3 4]", seqs)
	}
	tp.ClearHistory()
	if n := must(r.CountAllocated())[0]; n != 0 {
		t.Fatalf("%d buffers held after ClearHistory", n)
	}
}

func TestTopicFingerprint(t *testing.T) {
	_, p := newTopicRegion(t, DefaultConfig())
	tp, _ := p.LookupTopic("f", true, 0)
	if !must(tp.SetFingerprint(42, "msgpack")) || !must(tp.SetFingerprint(42, "msgpack")) {
		t.Fatal("same fingerprint refused")
	}
	if must(tp.SetFingerprint(43, "raw")) {
		t.Fatal("different fingerprint accepted")
	}
	if fp, c := tp.Fingerprint(); fp != 42 || c != "msgpack" {
		t.Fatalf("fingerprint %d %q", fp, c)
	}
}
