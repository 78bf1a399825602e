package shm

// Waiter counts across processes (issue 14, item 2): a count is tied to the inbox generation
// it was announced in, and a Block producer killed while asleep has its announcement taken back
// by the reaper.

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/offq/offq/internal/peer"
)

// roleSleeper opens an inbox, says "inbox ID", and sleeps in Pop until the inbox closes; it
// then says "popped ERR" and waits for its stdin to close.
func roleSleeper(c *peer.Child) error {
	r, p, err := attachFromEnv("sleeper")
	if err != nil {
		return err
	}
	in, err := p.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropNewest})
	if err != nil {
		return err
	}
	c.Send("inbox %d", in.ID())
	_, err = in.pop(c.Context(), Waiter{Strategy: Sleep})
	c.Send("popped %v", err)
	c.Recv() // until the parent closes stdin
	p.Detach()
	return r.Close()
}

// roleBlockPusher delivers one message from its loan into the Block inbox envInbox, which
// the parent keeps full: it says "pushing" and sleeps for room until it is killed.
func roleBlockPusher(c *peer.Child) error {
	r, p, err := attachFromEnv("block-pusher")
	if err != nil {
		return err
	}
	in, err := inboxFromEnv(r)
	if err != nil {
		return err
	}
	b, err := p.alloc(msgSize)
	if err != nil {
		return err
	}
	putMessage(b.Bytes(), 7, 0)
	b.SetMeta(Meta{Len: msgSize, Topic: 7})
	c.Send("pushing")
	err = in.deliverBuffer(c.Context(), b)
	return fmt.Errorf("the push returned %v; it should have slept until killed", err)
}

// processState returns the state letter of /proc/pid/stat (R, S, T, ...).
func processState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return ""
}

// A consumer asleep in Pop when another goroutine closes its inbox, and whose thread runs
// again only after the entry was reopened by someone else (here: the process is stopped with
// SIGSTOP until then), must not take its announcement back from the new generation's count:
// the count would wrap to 2^32-1, and every push into the new inbox would make a FUTEX_WAKE
// system call for nobody while stats show a sleeper that does not exist.
func TestWaiterCountSurvivesReuse(t *testing.T) {
	r, me, dir := newTestRegion(t, "waiters")
	p := peer.Start(t, "sleeper", envs(envDir, dir, envRegion, "waiters")...)
	rest, err := p.Expect("inbox ", procTimeout)
	if err != nil {
		t.Fatal(err)
	}
	id, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := r.inbox(InboxID(id))
	if err != nil {
		t.Fatal(err)
	}
	untilTrue(t, procTimeout, "the child asleep", func() bool { return inboxStats(t, r, theirs.ID()).Sleeping })
	if err := syscall.Kill(p.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(p.Pid(), syscall.SIGCONT)
	untilTrue(t, procTimeout, "the child stopped", func() bool { return processState(p.Pid()) == "T" })
	if err := theirs.close(); err != nil {
		t.Fatal(err)
	}
	mine, err := me.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	defer mine.close()
	if mine.ID().Index() != theirs.ID().Index() {
		t.Fatalf("reopened entry %d, want %d", mine.ID().Index(), theirs.ID().Index())
	}
	if err := syscall.Kill(p.Pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	line, err := p.Expect("popped ", procTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, ErrClosed.Error()) {
		t.Errorf("the sleeper's Pop returned %q, want ErrClosed", line)
	}
	if s := inboxStats(t, r, mine.ID()); s.Sleeping {
		t.Errorf("the reopened inbox shows a sleeper, but nobody waits on it: %+v", s)
	}
	if n := waiters(mine.v.hdr.sleepers.Load()); n != 0 {
		t.Errorf("sleepers of the reopened inbox = %d, want 0", n)
	}
	p.CloseStdin()
	waitAll(t, p)
}

// A Block producer killed while it sleeps for room leaves its announcement in the inbox's
// count; the reaper that reclaims it must take it back, or every take from the inbox makes a
// FUTEX_WAKE system call for the inbox's life and stats show a producer held back for ever.
//
// The kill comes once the producer's wait is recorded in its participant slot, which is what
// the reaper goes by: a producer announces first and records second (dispatcher.announce), so
// that a kill between the two over-counts, never under-counts, the producers to wake. The
// test once killed as soon as the announcement showed, and in CI's race run (2026-12-08) the
// kill fell between the two: the reaper found no record, and the count kept the dead producer.
func TestBlockWaiterKilledAsleep(t *testing.T) {
	r, me, dir := newTestRegion(t, "killed-waiter")
	in, err := me.OpenInbox(InboxConfig{Capacity: 2, Overflow: Block})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	for seq := range uint64(2) {
		if err := pushMessage(t.Context(), me, &in, 0, seq); err != nil {
			t.Fatal(err)
		}
	}
	p := peer.Start(t, "block-pusher", envs(envDir, dir, envRegion, "killed-waiter", envInbox, uint64(in.ID()))...)
	if _, err := p.Expect("pushing", procTimeout); err != nil {
		t.Fatal(err)
	}
	untilTrue(t, procTimeout, "the child asleep for room", func() bool {
		return inboxStats(t, r, in.ID()).Blocked == 1 && waitRecorded(r, in.v.index)
	})
	p.Kill()
	if err := p.Wait(procTimeout); err == nil {
		t.Fatal("the block pusher exited by itself")
	}
	rep, err := r.Reap()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Participants != 1 || rep.Loans != 1 {
		t.Errorf("reap report %+v, want 1 participant and its loan", rep)
	}
	if s := inboxStats(t, r, in.ID()); s.Blocked != 0 {
		t.Errorf("after the reap, stats show %d producer(s) blocked on the inbox, want 0", s.Blocked)
	}
	if n := waiters(in.v.hdr.spaceWaiters.Load()); n != 0 {
		t.Errorf("spaceWaiters = %d after the reap, want 0", n)
	}
	for range 2 {
		h, ok, err := in.tryPop()
		if err != nil || !ok {
			t.Fatalf("TryPop: %v %v", ok, err)
		}
		if _, _, err := checkMessage(r, h); err != nil {
			t.Fatal(err)
		}
		if err := r.release(h); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, err := in.tryPop(); ok || err != nil {
		t.Errorf("a message of the killed producer reached the inbox: %v %v", ok, err)
	}
	if errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	checkNoLeaks(t, r)
}

// waitRecorded reports whether a participant's slot records a wait for room in inbox idx.
func waitRecorded(r *Region, idx uint32) bool {
	for i := range r.cfg.Participants {
		s := (*participantSlot)(r.at(r.participantOffset(i)))
		for k := range s.waits {
			if v := s.waits[k].Load(); v>>48 != 0 && uint32(v&0xffff) == idx {
				return true
			}
		}
	}
	return false
}
