package shm

// The doorbell and the dispatcher (issue 16): waiting goroutines park on channels, one leader
// per participant sleeps on its bell, and publishers ring it only when a waiter is announced.

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
)

// hangOnLostWakeup makes the leader's periodic re-scan (longSleep) longer than any test, so
// that a lost wake-up hangs the test until its context ends instead of costing a second.
func hangOnLostWakeup(t *testing.T) {
	old := longSleep
	longSleep = time.Hour
	t.Cleanup(func() { longSleep = old })
}

// The bell: a ring swaps bellAsleep for bellAwake and makes one futex call; a bell already
// awake costs nothing; a wake-up reaches a thread asleep on the word; publishers ring only when
// a waiter is announced; an owner read from the region that names no slot rings nothing.
func TestBellProtocol(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	bell := r.bellOf(p.owner)
	if bell != &p.slot.bell || bell.Load() != bellAwake {
		t.Fatalf("bellOf(%d) = %p (value %d), want the slot's bell %p, awake", p.owner, bell, bell.Load(), &p.slot.bell)
	}
	if r.bellOf(0) != nil || r.bellOf(r.cfg.Participants+1) != nil {
		t.Fatal("bellOf accepts an owner that names no slot")
	}
	w0 := bellWakes.Load()
	ring(bell)
	if bellWakes.Load() != w0 {
		t.Fatal("ringing an awake bell made a futex call")
	}
	bell.Store(bellAsleep)
	ring(bell)
	ring(bell)
	if got := bellWakes.Load() - w0; got != 1 || bell.Load() != bellAwake {
		t.Fatalf("two rings of a sleeping bell: %d futex calls, bell %d; want 1, awake", got, bell.Load())
	}

	// A thread asleep on the bell wakes when it is rung.
	bell.Store(bellAsleep)
	woke := make(chan struct{})
	go func() {
		for bell.Load() == bellAsleep {
			futexWaitOn(bell, bellAsleep, 0)
		}
		close(woke)
	}()
	ring(bell)
	select {
	case <-woke:
	case <-time.After(procTimeout):
		t.Fatal("a thread asleep on the bell did not wake when it was rung")
	}

	// wakeConsumer rings the owner's bell only while a consumer is announced parked, and the
	// inbox's wake word only while one is announced asleep on it.
	in, err := p.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropOldest})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	hd := in.v.hdr
	bell.Store(bellAsleep)
	w0 = bellWakes.Load()
	wakeConsumer(in.v)
	if bellWakes.Load() != w0 || bell.Load() != bellAsleep {
		t.Fatal("wakeConsumer rang with no consumer announced")
	}
	if !announce(&hd.parked, in.gen) {
		t.Fatal("announce failed")
	}
	hd.wake.Store(bellAsleep)
	wakeConsumer(in.v)
	if bellWakes.Load()-w0 != 1 || bell.Load() != bellAwake || hd.wake.Load() != bellAsleep {
		t.Fatal("wakeConsumer did not ring the bell (only) with a consumer parked")
	}
	retract(&hd.parked, in.gen, 1)
	announce(&hd.sleepers, in.gen)
	bell.Store(bellAsleep)
	wakeConsumer(in.v)
	wakeConsumer(in.v)
	if bellWakes.Load()-w0 != 2 || bell.Load() != bellAsleep || hd.wake.Load() != bellAwake {
		t.Fatal("wakeConsumer did not ring the wake word (only, once) with a consumer asleep on it")
	}
	retract(&hd.sleepers, in.gen, 1)
	bell.Store(bellAwake)

	// wakeProducers rings the bells whose bits are set in spaceBells, with a producer announced.
	bell.Store(bellAsleep)
	hd.spaceBells.Store(1<<p.idx | 1<<63) // and a bit naming no slot
	w0 = bellWakes.Load()
	wakeProducers(in.v)
	if bellWakes.Load() != w0 {
		t.Fatal("wakeProducers rang with no producer announced")
	}
	announce(&hd.spaceWaiters, in.gen)
	wakeProducers(in.v)
	if bellWakes.Load()-w0 != 1 || bell.Load() != bellAwake {
		t.Fatal("wakeProducers did not ring the bell of a waiting producer's participant")
	}
	retract(&hd.spaceWaiters, in.gen, 1)
	hd.spaceBells.Store(0)

	// A scribbled owner in the state word rings nothing and faults nothing.
	st := hd.state.Load()
	hd.state.Store(inboxWord(wordStatus(st), wordGen(st), 0xffff))
	announce(&hd.parked, in.gen)
	wakeConsumer(in.v)
	wakeAll(in.v)
	retract(&hd.parked, in.gen, 1)
	hd.state.Store(st)
}

// Many consumers of one participant, each asleep in Take on an inbox of its own, and
// producers of another participant blocked for room in the same inboxes (Block policy, two
// cells each), pass messages back and forth through the two participants' bells. The leaders'
// periodic re-scan is off: a lost wake-up, of a consumer or of a producer, hangs the test
// until its deadline.
func TestDispatcherNoLostWakeups(t *testing.T) {
	hangOnLostWakeup(t)
	const consumers = 12
	per := 400
	if testing.Short() {
		per = 50
	}
	c := inboxConfig()
	c.Inboxes = consumers
	c.Held = 2 * consumers
	r := newUnitRegion(t, c)
	p := attachUnit(t, r, "consumers")
	q := attachUnit(t, r, "producers")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ins := make([]Inbox, consumers)
	for i := range ins {
		var err error
		if ins[i], err = p.OpenInbox(InboxConfig{Capacity: 2, Overflow: Block}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*consumers)
	for i := range ins {
		w := Waiter{Strategy: Sleep}
		if i%3 == 0 {
			w = Waiter{Strategy: SpinThenSleep, Spin: time.Microsecond}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 2 * per {
				m, err := p.Take(ctx, &ins[i], w)
				if err != nil {
					errs <- fmt.Errorf("consumer %d, message %d of %d: %w (a lost wake-up?)", i, n, 2*per, err)
					return
				}
				m.Release()
			}
		}()
	}
	for k := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			to := make([]Inbox, consumers)
			for i := range to {
				to[i], _ = r.inbox(ins[i].ID())
			}
			for n := range per {
				for i := range to {
					if err := pushMessage(ctx, q, &to[i], uint32(k), uint64(n)); err != nil {
						errs <- fmt.Errorf("producer %d, message %d to inbox %d: %w (a lost wake-up?)", k, n, i, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range ins {
		if n := waiters(ins[i].v.hdr.sleepers.Load()) + waiters(ins[i].v.hdr.parked.Load()) + waiters(ins[i].v.hdr.spaceWaiters.Load()); n != 0 {
			t.Errorf("inbox %d: %d waiters still announced", i, n)
		}
		if b := ins[i].v.hdr.spaceBells.Load(); b != 0 {
			t.Errorf("inbox %d: spaceBells %#x with nobody waiting", i, b)
		}
		ins[i].close()
	}
	checkNoLeaks(t, r)
}

// A consumer asleep in Take, woken by each message, allocates nothing per message, the
// wake-up included: the lone waiter, which sleeps on its inbox's wake word itself (its context
// watched once), and a waiter that parks while another holds that place (its waiter, channel
// and leader made once and reused).
func TestDispatcherLoneWaiterAllocs(t *testing.T) {
	hangOnLostWakeup(t)
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	q := attachUnit(t, r, "q")
	in, err := p.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	hd := in.v.hdr
	t.Run("direct", func(t *testing.T) {
		takeAsleep(t, ctx, r, p, q, &in, func() bool {
			return waiters(hd.sleepers.Load()) != 0 && hd.wake.Load() == bellAsleep
		})
	})
	t.Run("parked", func(t *testing.T) {
		// Another consumer takes the direct sleeper's place first.
		other, err := p.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropNewest})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := p.Take(ctx, &other, Waiter{Strategy: Sleep}); done <- err }()
		untilTrue(t, procTimeout, "the other consumer asleep", func() bool { return waiters(other.v.hdr.sleepers.Load()) != 0 })
		takeAsleep(t, ctx, r, p, q, &in, func() bool {
			return waiters(hd.parked.Load()) != 0 && p.slot.bell.Load() == bellAsleep
		})
		other.close()
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Errorf("the other consumer: %v, want ErrClosed", err)
		}
	})
}

// takeAsleep measures p's allocations per Take from in with the Sleep strategy while q pushes
// one message each time asleep says the consumer sleeps.
func takeAsleep(t *testing.T, ctx context.Context, r *Region, p, q *Participant, in *Inbox, asleep func() bool) {
	const runs = 200
	out, _ := r.inbox(in.ID())
	b, err := q.alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	h := b.Handle()
	defer q.unloan(h)
	pushed := make(chan error, 1)
	go func() { // pushes each message once the consumer took the last and sleeps
		for range runs + 2 { // AllocsPerRun calls take once more than runs
			for in.length() != 0 || !asleep() {
				if ctx.Err() != nil {
					pushed <- ctx.Err()
					return
				}
				runtime.Gosched()
			}
			if err := r.addRefsHandle(h, 1); err != nil {
				pushed <- err
				return
			}
			if err := out.pushHandle(ctx, h); err != nil {
				pushed <- err
				return
			}
		}
		pushed <- nil
	}()
	w0 := bellWakes.Load()
	var terr error
	take := func() {
		m, err := p.Take(ctx, in, Waiter{Strategy: Sleep})
		if err != nil {
			terr = err
			return
		}
		m.Release()
	}
	take()
	if n := testing.AllocsPerRun(runs, take); n != 0 {
		t.Errorf("Take asleep: %v allocations per message, want 0", n)
	}
	if terr != nil {
		t.Fatal(terr)
	}
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	if n := bellWakes.Load() - w0; n < runs {
		t.Errorf("%d wake-ups for %d messages: the consumer was not asleep", n, runs+2)
	}
}

// TakeAny takes from whichever inbox has a message and says which, sleeps until a message
// arrives in any of them, returns ctx's error when ctx ends and ErrClosed with the index of a
// closed inbox; asleep, it allocates nothing.
func TestTakeAny(t *testing.T) {
	hangOnLostWakeup(t)
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	q := attachUnit(t, r, "q")
	var ins [3]Inbox
	var ptrs [3]*Inbox
	var outs [3]Inbox
	for i := range ins {
		var err error
		if ins[i], err = p.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropOldest}); err != nil {
			t.Fatal(err)
		}
		defer ins[i].close()
		ptrs[i] = &ins[i]
		outs[i], _ = r.inbox(ins[i].ID())
	}
	ctx := t.Context()
	sleep := Waiter{Strategy: Sleep}
	if err := pushMessage(ctx, q, &outs[2], 2, 0); err != nil {
		t.Fatal(err)
	}
	m, which, err := p.TakeAny(ctx, ptrs[:], sleep)
	if err != nil || which != 2 || m.Meta().Topic != 2 {
		t.Fatalf("TakeAny = topic %d from %d, %v; want topic 2 from inbox 2", m.Meta().Topic, which, err)
	}
	m.Release()

	// Asleep in TakeAny, woken by a message to inbox 1, without allocating.
	for round := range 50 {
		k := round % 3
		done := make(chan error, 1)
		go func() {
			for waiters(ins[0].v.hdr.parked.Load()) == 0 || waiters(ins[2].v.hdr.parked.Load()) == 0 {
				runtime.Gosched()
			}
			done <- pushMessage(ctx, q, &outs[k], uint32(k), uint64(round))
		}()
		m, which, err := p.TakeAny(ctx, ptrs[:], sleep)
		if err != nil || which != k || m.Meta().Seq != uint64(round) {
			t.Fatalf("round %d: TakeAny = seq %d from %d, %v; want seq %d from %d", round, m.Meta().Seq, which, err, round, k)
		}
		m.Release()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}

	// Fair: with all three full, consecutive calls take from each.
	for i := range outs {
		for n := range 2 {
			pushMessage(ctx, q, &outs[i], uint32(i), uint64(n))
		}
	}
	var from [3]int
	for range 6 {
		m, which, err := p.TakeAny(ctx, ptrs[:], sleep)
		if err != nil {
			t.Fatal(err)
		}
		from[which]++
		m.Release()
	}
	if from != [3]int{2, 2, 2} {
		t.Errorf("six takes from three inboxes of two messages each: %v", from)
	}

	cctx, cancel := context.WithCancel(ctx)
	go func() {
		for waiters(ins[1].v.hdr.parked.Load()) == 0 {
			runtime.Gosched()
		}
		cancel()
	}()
	if _, which, err := p.TakeAny(cctx, ptrs[:], sleep); !errors.Is(err, context.Canceled) || which != -1 {
		t.Fatalf("TakeAny with ctx cancelled = %d, %v; want -1, context.Canceled", which, err)
	}
	ins[1].close()
	if _, which, err := p.TakeAny(ctx, ptrs[:], sleep); !errors.Is(err, ErrClosed) || which != 1 {
		t.Fatalf("TakeAny with inbox 1 closed = %d, %v; want 1, ErrClosed", which, err)
	}
	for i := range ins {
		if n := waiters(ins[i].v.hdr.parked.Load()); n != 0 && i != 1 {
			t.Errorf("inbox %d: %d sleepers announced after TakeAny returned", i, n)
		}
	}
	checkNoLeaks(t, r)
}

// roleBellSleeper opens two DropOldest inboxes, says "inboxes ID ID", and sleeps in Take on
// both (one consumer asleep on its inbox's wake word, the other parked) until it is killed.
func roleBellSleeper(c *peer.Child) error {
	_, p, err := attachFromEnv("bell-sleeper")
	if err != nil {
		return err
	}
	var ins [2]Inbox
	for i := range ins {
		if ins[i], err = p.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropOldest}); err != nil {
			return err
		}
	}
	c.Send("inboxes %d %d", ins[0].ID(), ins[1].ID())
	errs := make(chan error, 2)
	for i := range ins {
		go func() {
			for {
				m, err := p.Take(c.Context(), &ins[i], Waiter{Strategy: Sleep})
				if err != nil {
					errs <- err
					return
				}
				m.Release()
			}
		}()
	}
	return <-errs
}

// A process killed while its leader sleeps on its bell, with a consumer announced in an inbox
// (or a Block producer announced in another's), leaves its bell asleep and its announcement in
// place until a reaper comes: the first publisher (or consumer) to ring it makes one futex
// call, and every later one none. The reaper then takes the announcements back.
func TestKilledWaiterRingsOnce(t *testing.T) {
	r, me, dir := newTestRegion(t, "killed-bell")

	// A consumer killed asleep.
	p := peer.Start(t, "bell-sleeper", envs(envDir, dir, envRegion, "killed-bell")...)
	rest, err := p.Expect("inboxes ", procTimeout)
	if err != nil {
		t.Fatal(err)
	}
	var theirs [2]Inbox
	for i, f := range strings.Fields(rest) {
		id, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if theirs[i], err = r.inbox(InboxID(id)); err != nil {
			t.Fatal(err)
		}
	}
	bell := r.bellOf(wordOwner(theirs[0].v.hdr.state.Load()))
	// Which of the two consumers sleeps on its inbox's wake word and which is parked depends
	// on which went to sleep first.
	var direct, parked *Inbox
	untilTrue(t, procTimeout, "one consumer asleep, the other parked, the leader asleep", func() bool {
		for i := range theirs {
			a, b := theirs[i].v.hdr, theirs[1-i].v.hdr
			if waiters(a.sleepers.Load()) != 0 && a.wake.Load() == bellAsleep && waiters(b.parked.Load()) != 0 && bell.Load() == bellAsleep {
				direct, parked = &theirs[i], &theirs[1-i]
				return true
			}
		}
		return false
	})
	p.Kill()
	if err := p.Wait(procTimeout); err == nil {
		t.Fatal("the sleeper exited by itself")
	}
	for _, in := range []*Inbox{direct, parked} {
		w0 := bellWakes.Load()
		for seq := range uint64(100) {
			if err := pushMessage(t.Context(), me, in, 1, seq); err != nil {
				t.Fatal(err)
			}
		}
		rung := in.v.hdr.wake.Load() == bellAwake
		if in == parked {
			rung = bell.Load() == bellAwake
		}
		if n := bellWakes.Load() - w0; n != 1 || !rung {
			t.Errorf("100 messages to a killed consumer's inbox (parked %v): %d futex calls, want 1", in == parked, n)
		}
	}

	// A Block producer killed asleep for room.
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
	b := peer.Start(t, "block-pusher", envs(envDir, dir, envRegion, "killed-bell", envInbox, uint64(in.ID()))...)
	if _, err := b.Expect("pushing", procTimeout); err != nil {
		t.Fatal(err)
	}
	hd := in.v.hdr
	untilTrue(t, procTimeout, "the producer and its leader asleep", func() bool {
		m := hd.spaceBells.Load()
		return waiters(hd.spaceWaiters.Load()) != 0 && m != 0 && r.bellOf(uint32(bits.TrailingZeros64(m))+1).Load() == bellAsleep
	})
	pbell := r.bellOf(uint32(bits.TrailingZeros64(hd.spaceBells.Load())) + 1)
	b.Kill()
	if err := b.Wait(procTimeout); err == nil {
		t.Fatal("the block pusher exited by itself")
	}
	w0 := bellWakes.Load()
	for range 2 {
		h, ok, err := in.tryPop()
		if err != nil || !ok {
			t.Fatalf("TryPop: %v %v", ok, err)
		}
		r.release(h)
		if err := pushMessage(t.Context(), me, &in, 0, 9); err != nil {
			t.Fatal(err)
		}
	}
	if n := bellWakes.Load() - w0; n != 1 || pbell.Load() != bellAwake {
		t.Errorf("two takes from an inbox a killed producer waited on: %d futex calls, want 1", n)
	}

	rep, err := r.Reap()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Participants < 1 { // the first may have been reaped by the second, taking its slot
		t.Errorf("reap report %+v, want the killed participants", rep)
	}
	if n, m := waiters(hd.spaceWaiters.Load()), hd.spaceBells.Load(); n != 0 || m != 0 {
		t.Errorf("after the reap: spaceWaiters %d, spaceBells %#x; want 0, 0", n, m)
	}
	for i := range theirs {
		if s, ok := statsOf(r, theirs[i].ID()); ok {
			t.Errorf("the killed consumer's inbox is still open after the reap: %+v", s)
		}
	}
	w0 = bellWakes.Load()
	for range 2 {
		h, ok, err := in.tryPop()
		if err != nil || !ok {
			t.Fatalf("TryPop: %v %v", ok, err)
		}
		r.release(h)
	}
	if n := bellWakes.Load() - w0; n != 0 {
		t.Errorf("takes after the reap made %d futex calls, want 0", n)
	}
	checkNoLeaks(t, r)
}

// TestUndoWaitsClearsUnrecordedBellBits: a dead participant's bell bit in an inbox's
// spaceBells goes with its reaping even when no wait record names the inbox (a wait that
// could not record itself, or a kill between setting the bit and recording the wait): left
// set, it rang the slot's next occupant on every take from that inbox.
func TestUndoWaitsClearsUnrecordedBellBits(t *testing.T) {
	r := newUnitRegion(t, unitConfig())
	p := attachUnit(t, r, "consumer")
	in, err := p.OpenInbox(InboxConfig{Capacity: 4, Overflow: Block, Pattern: "bells"})
	if err != nil {
		t.Fatal(err)
	}
	const dead = 3 // a participant slot index with no records
	hd := in.v.hdr
	hd.spaceBells.Or(1 << dead)
	r.undoWaits(dead)
	if v := hd.spaceBells.Load(); v&(1<<dead) != 0 {
		t.Fatalf("spaceBells %#x after undoing participant %d's waits, want its bit clear", v, dead)
	}
}

// hangOnPoll makes a waiter that could not announce itself (and polls) sleep longer than any
// test, so that a wait a ring should end but only a poll would hangs the test.
func hangOnPoll(t *testing.T) {
	old := pollSleep
	pollSleep = time.Hour
	t.Cleanup(func() { pollSleep = old })
}

// leaderReads returns how many inboxes p's leader has read to see whether a waiter was ready.
func leaderReads(p *Participant) uint64 {
	p.disp.mu.Lock()
	defer p.disp.mu.Unlock()
	return p.disp.reads
}

// A ring costs the leader the inboxes rung, not the waiters parked: with many consumers
// parked, one on each inbox, a message to one of them makes the leader read that inbox and
// no other (it used to read all of them, once per ring).
func TestRingReadsRungInboxOnly(t *testing.T) {
	hangOnLostWakeup(t)
	const consumers = 200
	c := unitConfig()
	c.Inboxes = consumers
	c.Held = consumers
	r := newUnitRegion(t, c)
	p := attachUnit(t, r, "consumers")
	q := attachUnit(t, r, "producer")
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	ins := make([]Inbox, consumers)
	for i := range ins {
		var err error
		if ins[i], err = p.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropNewest}); err != nil {
			t.Fatal(err)
		}
	}
	took := make([]chan error, consumers)
	for i := range ins {
		took[i] = make(chan error, 1)
		go func() {
			m, err := p.Take(ctx, &ins[i], Waiter{Strategy: Sleep})
			if err == nil {
				m.Release()
			}
			took[i] <- err
		}()
	}
	// One consumer sleeps directly on its inbox's wake word; every other one parks.
	untilTrue(t, procTimeout, "the consumers parked and the leader asleep", func() bool {
		p.disp.mu.Lock()
		defer p.disp.mu.Unlock()
		return len(p.disp.entries) == consumers-1 && p.disp.direct != nil && p.slot.bell.Load() == bellAsleep
	})
	k := consumers / 2
	if waiters(ins[k].v.hdr.parked.Load()) == 0 {
		k++ // that one is the direct sleeper
	}
	reads := leaderReads(p)
	to, _ := r.inbox(ins[k].ID())
	if err := pushMessage(ctx, q, &to, 1, 1); err != nil {
		t.Fatal(err)
	}
	if err := <-took[k]; err != nil {
		t.Fatalf("consumer %d: %v", k, err)
	}
	if n := leaderReads(p) - reads; n == 0 || n > 2 {
		t.Errorf("one message to one of %d parked consumers: the leader read %d inboxes, want 1", consumers-1, n)
	}
	for i := range ins {
		ins[i].close()
	}
	for i := range ins {
		if i == k {
			continue
		}
		if err := <-took[i]; !errors.Is(err, ErrClosed) {
			t.Errorf("consumer %d: %v, want ErrClosed", i, err)
		}
	}
	checkNoLeaks(t, r)
}

// A Block producer whose participant index is 64 or more, waiting for room in a full inbox, is
// woken by the take that makes room: its room bell is a bit of the inbox's row of the bells
// section (it used to have none, and polled every pollSleep). Polling is made to hang, so
// only the consumer's ring can end the wait.
func TestBlockProducerPast64WokenByTake(t *testing.T) {
	hangOnLostWakeup(t)
	hangOnPoll(t)
	c := unitConfig()
	c.Participants = 70
	r := newUnitRegion(t, c)
	p := attachUnit(t, r, "consumer")
	for i := range 63 {
		attachUnit(t, r, "filler"+strconv.Itoa(i))
	}
	q := attachUnit(t, r, "producer")
	if q.idx < 64 {
		t.Fatalf("producer at index %d, want 64 or more", q.idx)
	}
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	in, err := p.OpenInbox(InboxConfig{Capacity: 2, Overflow: Block})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	to, _ := r.inbox(in.ID())
	for n := range 2 {
		if err := pushMessage(ctx, q, &to, 1, uint64(n)); err != nil {
			t.Fatal(err)
		}
	}
	pushed := make(chan error, 1)
	go func() { // from q's loan, as a publisher delivers: q's dispatcher waits for room
		b, err := q.alloc(msgSize)
		if err != nil {
			pushed <- err
			return
		}
		err = to.deliver(ctx, b.Handle())
		if uerr := q.unloan(b.Handle()); err == nil {
			err = uerr
		}
		pushed <- err
	}()
	untilTrue(t, procTimeout, "the producer waiting and its leader asleep", func() bool {
		q.disp.mu.Lock()
		defer q.disp.mu.Unlock()
		return len(q.disp.entries) == 1 && q.slot.bell.Load() == bellAsleep
	})
	hd := in.v.hdr
	bw, bit := r.roomBell(in.v.index, q.idx)
	if waiters(hd.spaceWaiters.Load()) != 1 || bw.Load()&bit == 0 {
		t.Errorf("the producer waits with %d announced, room bell %#x; want 1 and bit %#x", waiters(hd.spaceWaiters.Load()), bw.Load(), bit)
	}
	w0 := bellWakes.Load()
	m, err := p.Take(ctx, &in, Waiter{Strategy: Sleep})
	if err != nil {
		t.Fatal(err)
	}
	m.Release()
	select {
	case err := <-pushed:
		if err != nil {
			t.Fatalf("the blocked push: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the producer at index 64 or more was not woken by the take that made room")
	}
	if bellWakes.Load() == w0 {
		t.Error("the take rang no bell, yet the producer woke")
	}
	if v := bw.Load(); v&bit != 0 || hd.spaceBells.Load() != 0 {
		t.Errorf("room bells %#x (spaceBells %#x) with nobody waiting", v, hd.spaceBells.Load())
	}
	for range 2 {
		m, err := p.Take(ctx, &in, Waiter{Strategy: Sleep})
		if err != nil {
			t.Fatal(err)
		}
		m.Release()
	}
	checkNoLeaks(t, r)
}
