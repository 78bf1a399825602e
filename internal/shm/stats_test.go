package shm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStatsReadOnlyAndList(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("s1", Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p, err := r.Attach("pub")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Detach()
	tp, err := p.LookupTopic("a.b", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	tp.nextSeq()
	tp.countBytes(10)
	in, err := p.OpenInbox(InboxConfig{Capacity: 8, Pattern: "a.>"})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	b, _ := p.alloc(10)
	defer p.unloan(b.Handle())

	os.WriteFile(filepath.Join(dir, "not-a-region"), []byte("hello world"), 0o600)
	os.WriteFile(filepath.Join(dir, ".s1.init-0011"), nil, 0o600)
	names, err := List(dir)
	if err != nil || len(names) != 1 || names[0] != "s1" {
		t.Fatalf("List: %v %v", names, err)
	}

	ro, err := Open("s1", Options{Dir: dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Attach("x"); !errors.Is(err, ErrPermission) {
		t.Fatalf("Attach on a read-only region: %v", err)
	}
	s := ro.Stats()
	if len(s.Topics) != 1 || s.Topics[0].Name != "a.b" || s.Topics[0].Published != 1 || s.Topics[0].Bytes != 10 {
		t.Errorf("topics %+v", s.Topics)
	}
	if len(s.Inboxes) != 1 || s.Inboxes[0].Pattern != "a.>" || s.Inboxes[0].OwnerName != "pub" || s.Inboxes[0].Capacity != 8 {
		t.Errorf("inboxes %+v", s.Inboxes)
	}
	if len(s.Participants) != 1 || !s.Participants[0].Alive || s.Participants[0].Name != "pub" {
		t.Errorf("participants %+v", s.Participants)
	}
	if s.Pools[0].InUse != 1 || s.Pools[0].HighWater < 1 {
		t.Errorf("pool 0 %+v", s.Pools[0])
	}
}

// TestStatsWhoHoldsThePool: Stats counts, per topic and class, the buffers holding its
// messages, and per participant and class, the messages it received and has not released and
// the buffers it has on loan.
func TestStatsWhoHoldsThePool(t *testing.T) {
	r, err := Create("who", Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pub, sub := must(r.Attach("pub")), must(r.Attach("sub"))
	defer pub.Detach()
	defer sub.Detach()
	tp := must(pub.LookupTopic("who.a", true, 0))
	must(pub.LookupTopic("who.b", true, 0))
	in := must(sub.OpenInbox(InboxConfig{Capacity: 16, Pattern: "who.a"}))
	ctx := context.Background()
	for range 5 {
		l := must(pub.Loan(10))
		if _, err := tp.Send(ctx, l, 10, []Inbox{in}); err != nil {
			t.Fatal(err)
		}
	}
	var held []Held
	for range 3 {
		held = append(held, must(sub.Take(ctx, &in, Waiter{})))
	}
	loan := must(pub.Loan(10))
	defer loan.Discard()

	s := r.Stats()
	byName := map[string]TopicStats{}
	for _, t := range s.Topics {
		byName[t.Name] = t
	}
	if got := byName["who.a"].InUse; len(got) != len(s.Pools) || got[0] != 5 {
		t.Errorf("who.a in use %v, want 5 in class 0", got)
	}
	if got := byName["who.b"].InUse; len(got) != len(s.Pools) || got[0] != 0 {
		t.Errorf("who.b in use %v, want 0", got)
	}
	for _, p := range s.Participants {
		wantHeld, wantLoaned := 0, 0
		if p.Name == "sub" {
			wantHeld = 3
		} else {
			wantLoaned = 1
		}
		if len(p.Held) != len(s.Pools) || p.Held[0] != wantHeld || p.Loaned[0] != wantLoaned {
			t.Errorf("participant %s: held %v loaned %v, want %d and %d in class 0", p.Name, p.Held, p.Loaned, wantHeld, wantLoaned)
		}
	}
	for _, h := range held {
		h.Release()
	}
	if got := r.Stats().Participants[1].Held[0]; got != 0 {
		t.Errorf("held after release: %d", got)
	}
}

// TestSendWithStamp: a loan's stamp (WithStamp) is the publish time Send writes, where a loan
// without one gets Now; Stamp is the inverse of Time.
func TestSendWithStamp(t *testing.T) {
	r, err := Create("stamp", Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := must(r.Attach("p"))
	defer p.Detach()
	tp := must(p.LookupTopic("stamp.a", true, 0))
	in := must(p.OpenInbox(InboxConfig{Capacity: 4, Pattern: "stamp.a"}))
	ctx := context.Background()
	origin := time.Date(2026, 12, 4, 12, 0, 0, 123456789, time.UTC)
	if got := Time(Stamp(origin)); !got.Equal(origin) {
		t.Fatalf("Time(Stamp(%v)) = %v", origin, got)
	}
	if Stamp(time.Time{}) != 0 {
		t.Fatal("the zero time gives a stamp")
	}
	before := Now()
	for _, st := range []int64{Stamp(origin), 0} {
		if _, err := tp.Send(ctx, must(p.Loan(8)).WithStamp(st), 8, []Inbox{in}); err != nil {
			t.Fatal(err)
		}
	}
	h := must(p.Take(ctx, &in, Waiter{}))
	if got := Time(h.Meta().Stamp); !got.Equal(origin) {
		t.Errorf("stamped message's time %v, want %v", got, origin)
	}
	h.Release()
	h = must(p.Take(ctx, &in, Waiter{}))
	if st := h.Meta().Stamp; st < before || st > Now() {
		t.Errorf("unstamped message's stamp %d, want Now at Send (after %d)", st, before)
	}
	h.Release()
}
