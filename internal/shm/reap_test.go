package shm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
)

// roleReapVictim attaches to OFFQ_DIR/reap, opens an inbox with pattern "victim" that the
// parent fills, takes OFFQ_HOLD messages without releasing them, loans OFFQ_LOANS buffers,
// says "ready" and waits to be killed.
func roleReapVictim(c *peer.Child) error {
	r, err := Open("reap", Options{Dir: os.Getenv("OFFQ_DIR")})
	if err != nil {
		return err
	}
	p, err := r.Attach("victim")
	if err != nil {
		return err
	}
	in, err := p.OpenInbox(InboxConfig{Capacity: 16, Pattern: "victim"})
	if err != nil {
		return err
	}
	c.Send("inbox %d", in.ID())
	hold, _ := strconv.Atoi(os.Getenv("OFFQ_HOLD"))
	for range hold {
		idx, err := p.reserve()
		if err != nil {
			return err
		}
		if _, err := in.popInto(c.Context(), Waiter{Strategy: Sleep}, p, idx); err != nil {
			return err
		}
	}
	loans, _ := strconv.Atoi(os.Getenv("OFFQ_LOANS"))
	for range loans {
		if _, err := p.alloc(10); err != nil {
			return err
		}
	}
	c.Send("ready")
	<-c.Context().Done() // killed before this
	return nil
}

// roleReaper opens OFFQ_DIR/reap, waits for "go", reaps, and reports what it reclaimed.
func roleReaper(c *peer.Child) error {
	r, err := Open("reap", Options{Dir: os.Getenv("OFFQ_DIR")})
	if err != nil {
		return err
	}
	defer r.Close()
	c.Send("ready")
	if l, err := c.Recv(); err != nil || l != "go" {
		return fmt.Errorf("waiting for go: %q %v", l, err)
	}
	rep, err := r.Reap()
	if err != nil {
		return err
	}
	c.Send("reaped %d", rep.Participants)
	return nil
}

func reapConfig() Config {
	c := inboxConfig()
	c.Held = 32
	return c
}

// TestReapKilledSubscriberAndPublisher: a process holding received messages, with more queued
// for it and buffers on loan, is killed with SIGKILL. Reap releases every one of them, frees
// its inbox and slot, counts the reclaim, and the pools are back to empty.
func TestReapKilledSubscriberAndPublisher(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("reap", Options{Dir: dir, Config: reapConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := attachUnit(t, r, "parent")
	victim := peer.Start(t, "reap-victim", "OFFQ_DIR="+dir, "OFFQ_HOLD=3", "OFFQ_LOANS=2")
	line, err := victim.Expect("inbox ", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := strconv.ParseUint(line, 10, 64)
	in, err := r.inbox(InboxID(id))
	if err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	for i := range 8 { // 3 taken and held by the victim, 5 left queued
		if _, err := send(bg, r, p, &in, 0, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := victim.Expect("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := allocated(r); n != 10 {
		t.Fatalf("%d buffers allocated before the kill, want 8 messages + 2 loans", n)
	}
	victim.Kill()
	victim.Wait(time.Minute)

	rep, err := r.Reap()
	if err != nil {
		t.Fatal(err)
	}
	want := ReapReport{Participants: 1, Inboxes: 1, Queued: 5, Held: 3, Loans: 2}
	if rep != want {
		t.Fatalf("reap report %+v, want %+v", rep, want)
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("%d buffers allocated after reaping", n)
	}
	for _, ps := range r.PoolStats() {
		if ps.InUse != 0 {
			t.Fatalf("pool %d: InUse %d after reaping", ps.Class, ps.InUse)
		}
	}
	if got := r.hdr.reclaims.Load(); got != 1 {
		t.Fatalf("reclaims counter %d, want 1", got)
	}
	if len(r.InboxStats()) != 0 || len(r.Participants()) != 1 {
		t.Fatalf("left after reaping: inboxes %+v participants %+v", r.InboxStats(), r.Participants())
	}
	// The old inbox refuses pushes; a second reap finds nothing.
	if _, err := send(bg, r, p, &in, 0, 99); err == nil {
		t.Fatal("push into the dead subscriber's inbox succeeded")
	}
	if rep, _ := r.Reap(); rep != (ReapReport{}) {
		t.Fatalf("second reap %+v", rep)
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("%d buffers allocated at the end", n)
	}
}

// TestReapConcurrentReapers: several processes reap the same dead participant at once; it is
// reclaimed exactly once.
func TestReapConcurrentReapers(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("reap", Options{Dir: dir, Config: reapConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := attachUnit(t, r, "parent")
	victim := peer.Start(t, "reap-victim", "OFFQ_DIR="+dir, "OFFQ_HOLD=1", "OFFQ_LOANS=1")
	line, err := victim.Expect("inbox ", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := strconv.ParseUint(line, 10, 64)
	in, _ := r.inbox(InboxID(id))
	for i := range 4 {
		send(context.Background(), r, p, &in, 0, uint64(i))
	}
	if _, err := victim.Expect("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	victim.Kill()
	victim.Wait(time.Minute)

	var reapers []*peer.Proc
	for range 3 {
		rp := peer.Start(t, "reaper", "OFFQ_DIR="+dir)
		if _, err := rp.Expect("ready", time.Minute); err != nil {
			t.Fatal(err)
		}
		reapers = append(reapers, rp)
	}
	for _, rp := range reapers {
		rp.Send("go")
	}
	local, err := r.Reap() // and this process too
	if err != nil {
		t.Fatal(err)
	}
	total := local.Participants
	for _, rp := range reapers {
		line, err := rp.Expect("reaped ", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(line))
		total += n
		if err := rp.Wait(time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if total != 1 || r.hdr.reclaims.Load() != 1 {
		t.Fatalf("the dead participant was reclaimed %d times (counter %d), want once", total, r.hdr.reclaims.Load())
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("%d buffers allocated after reaping", n)
	}
}

// die makes p look like a participant whose process died: its lock is dropped, nothing else
// is cleaned up.
func die(p *Participant) {
	p.gone.Store(true)
	closeLockFD(p.lockfd)
	p.r.mu.Lock()
	p.r.attached--
	p.r.mu.Unlock()
}

// TestReapMidTake: a consumer dies at each step of a take. Whatever the step, after reaping
// every buffer is released exactly once.
func TestReapMidTake(t *testing.T) {
	for step := range 4 {
		t.Run(fmt.Sprint("step ", step), func(t *testing.T) {
			r := newUnitRegion(t, reapConfig())
			pub := attachUnit(t, r, "pub")
			con, err := r.Attach("consumer")
			if err != nil {
				t.Fatal(err)
			}
			in, err := con.OpenInbox(InboxConfig{Capacity: 4})
			if err != nil {
				t.Fatal(err)
			}
			bg := context.Background()
			h, err := send(bg, r, pub, &in, 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			send(bg, r, pub, &in, 0, 2)
			idx, _ := con.reserve()
			w, _ := con.heldWord(idx)
			h0 := in.v.hdr.head.Load()
			c := in.cell(h0)
			// Replay take's steps by hand, stopping after step.
			if step >= 1 {
				w.Store(heldPending | uint64(h))
			}
			if step >= 2 {
				c.Store(in.claimed(uint64(idx), h0))
			}
			if step >= 3 {
				w.Store(uint64(h))
			}
			reapDeadConsumer(t, r, con, fmt.Sprint("step ", step))
		})
	}
}

// reapDeadConsumer kills con, reaps it, and checks that the reap found one participant and
// left no buffer allocated: whatever con held or was taking was released exactly once.
func reapDeadConsumer(t *testing.T, r *Region, con *Participant, what string) {
	t.Helper()
	die(con)
	rep, err := r.Reap()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Participants != 1 {
		t.Fatalf("%s: report %+v", what, rep)
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("%s: %d buffers allocated after reaping (report %+v)", what, n, rep)
	}
}

// TestReapEvictedWhilePending: the consumer died with a pending entry, and a producer then
// evicted that message (DropOldest) and released it. The reaper must not release it again.
func TestReapEvictedWhilePending(t *testing.T) {
	r := newUnitRegion(t, reapConfig())
	pub := attachUnit(t, r, "pub")
	con, _ := r.Attach("consumer")
	in, _ := con.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropOldest})
	bg := context.Background()
	h, _ := send(bg, r, pub, &in, 0, 1)
	send(bg, r, pub, &in, 0, 2)
	idx, _ := con.reserve()
	w, _ := con.heldWord(idx)
	w.Store(heldPending | uint64(h))
	die(con)
	send(bg, r, pub, &in, 0, 3) // evicts h and releases it
	if _, err := r.buffer(h); err == nil {
		t.Fatal("the evicted message is still allocated")
	}
	if _, err := r.Reap(); err != nil {
		t.Fatal(err)
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("%d buffers allocated after reaping", n)
	}
}

// TestReapAuditRepairsLeaks: a publisher dies in the middle of a fan-out, after counting the
// references for three subscribers and delivering to one. Reaping it while others live leaves
// the two references it never delivered; once nobody is attached, Reap audits the region and
// the buffer is free again, while a topic's retained history is kept.
func TestReapAuditRepairsLeaks(t *testing.T) {
	r := newUnitRegion(t, reapConfig())
	sub, _ := r.Attach("sub")
	in, _ := sub.OpenInbox(InboxConfig{Capacity: 4})
	pub, _ := r.Attach("pub")
	tp, err := pub.LookupTopic("kept", true, 2)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // two stay in the history
		b, _ := pub.alloc(8)
		r.addRefsHandle(b.Handle(), 1)
		tp.remember(b.Handle())
		pub.unloan(b.Handle())
	}
	b, _ := pub.alloc(8)
	h := b.Handle()
	if err := r.addRefsHandle(h, 3); err != nil {
		t.Fatal(err)
	}
	if err := in.pushHandle(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	die(pub)
	rep, err := r.Reap()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Participants != 1 || rep.Loans != 1 || rep.Audited {
		t.Fatalf("reap while the subscriber lives: %+v", rep)
	}
	if err := in.close(); err != nil {
		t.Fatal(err)
	}
	sub.Detach()
	if n := allocated(r); n != 3 {
		t.Fatalf("%d buffers allocated, want the 2 in history and the leaked one", n)
	}
	rep, err = r.Reap()
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Audited || rep.Repaired != 1 {
		t.Fatalf("reap with nobody attached: %+v, want an audit repairing 1 buffer", rep)
	}
	if n := allocated(r); n != 2 {
		t.Fatalf("%d buffers allocated after the audit, want the 2 in history", n)
	}
	if ps := r.PoolStats(); ps[0].InUse != 2 {
		t.Fatalf("in-use counter %d after the audit, want 2", ps[0].InUse)
	}
	// An audit cannot start while anyone is attached, and an attach waits out an audit.
	p := attachUnit(t, r, "late")
	seen := 0
	tp.holdHistory(p, func(idx int, h Handle) { seen++; p.unhold(idx, h) })
	if seen != 2 {
		t.Fatalf("history holds %d messages after the audit, want 2", seen)
	}
	if rep, _ := r.Reap(); rep.Audited {
		t.Fatal("audited with a participant attached")
	}
	_ = p
}

// roleCreatorMid creates OFFQ_DIR/mid and stops half-way through initialising it, saying "mid".
func roleCreatorMid(c *peer.Child) error {
	testHookInit = func(string) {
		c.Send("mid")
		<-c.Context().Done() // killed before this
	}
	_, err := Create("mid", Options{Dir: os.Getenv("OFFQ_DIR"), Config: reapConfig()})
	return err
}

// TestCreatorKilledMidInitialisation: a process creating a region is killed with SIGKILL half
// way through. Nobody can open the half-written region; the next OpenOrCreate creates a good one
// and removes what the dead creator left.
func TestCreatorKilledMidInitialisation(t *testing.T) {
	dir := t.TempDir()
	creator := peer.Start(t, "creator-mid", "OFFQ_DIR="+dir)
	if _, err := creator.Expect("mid", time.Minute); err != nil {
		t.Fatal(err)
	}
	creator.Kill()
	creator.Wait(time.Minute)
	if _, err := Open("mid", Options{Dir: dir}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of a region whose creator died: %v, want ErrNotFound", err)
	}
	r, created, err := OpenOrCreate("mid", Options{Dir: dir, Config: reapConfig()})
	if err != nil || !created {
		t.Fatalf("OpenOrCreate after the creator died: created=%v %v", created, err)
	}
	defer r.Close()
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "mid" {
		t.Fatalf("directory holds %v, want only the new region", ents)
	}
}
