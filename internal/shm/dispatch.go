package shm

import (
	"context"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// What a waiter waits for in an inbox.
type waitKind uint8

const (
	waitMessage waitKind = iota // a message (or the inbox closed, or its positions damaged)
	waitRoom                    // room for a message (or the inbox closed)
)

// readyFor reports whether what kind waits for has happened in in.
func readyFor(kind waitKind, in *Inbox) bool {
	if kind == waitMessage {
		// A damaged head or tail can hide messages from pending: the leader re-scans at least
		// every longSleep, so a consumer finds such damage within a second, and take repairs it.
		return in.pending() || !in.isOpen() || in.positionsDamaged()
	}
	hd := in.v.hdr
	return hd.tail.Load() < hd.head.Load()+in.cap || !in.isOpen()
}

// A waiter is one goroutine waiting in dispatcher.await. Waiters are reused, so that waiting
// allocates nothing once a participant has waited as many goroutines at once before.
type waiter struct {
	ch    chan struct{} // capacity 1: the leader's wake-up
	fired bool          // the leader has woken it (under dispatcher.mu)
	poll  bool          // one of its waits is not announced: it re-checks every pollSleep
	pos   []int         // where its entries are in dispatcher.entries
	timer *time.Timer   // for deadlines and polling, made on first use
}

// A waitEntry is one inbox a waiter waits on.
type waitEntry struct {
	in        *Inbox
	kind      waitKind
	announced bool           // counted in the inbox's waiter word
	rec       *atomic.Uint64 // the wait record the announcement is in (room waits), or nil
	w         *waiter
	k         int // this entry's index in w.pos
	// The entries waiting on the same inbox (index) form a list, so that the leader finds
	// the waiters of an inbox that was rung without reading anyone else's: prev and next are
	// entry indices + 1 in dispatcher.entries (0: none), and dispatcher.heads holds the first.
	prev, next int32
}

// A dispatcher is one participant's waiting room. Goroutines that must wait (a consumer for a
// message, a Block producer for room) announce themselves in the inboxes' waiter words, as
// before, but park on a Go channel instead of sleeping in the kernel; one leader goroutine
// sleeps on the participant's bell (see doorbell.go) and, whenever it is rung, reads the
// inboxes marked in its rung set that have waiters and wakes exactly the goroutines whose
// inbox is ready. Any number of waiting subscriptions costs one OS thread, the leader's, and
// none while nobody waits (the leader leaves after a quiet longSleep); a ring costs the
// inboxes rung, not the waiters parked.
type dispatcher struct {
	p       *Participant
	mu      sync.Mutex
	entries []waitEntry
	heads   []int32 // per inbox index, its first entry's index + 1 (0: none); made on first use
	reads   uint64  // inboxes the leader has read to see whether a waiter is ready (for tests)
	free    []*waiter
	running bool          // a leader goroutine is running
	stopped bool          // the participant detached: nobody waits any more
	done    chan struct{} // closed when the running leader returns

	// The direct sleeper: one consumer at a time sleeps in the kernel itself, on its inbox's
	// wake word, instead of parking (see sleepDirect).
	direct    *Inbox
	watchDone <-chan struct{} // the Done channel of the context watched for it
	watchStop func() bool     // stops that watch
}

// await waits until what kind says has happened in one of ins, ctx is done, deadline (if
// set) passes or the leader wakes the caller; the caller re-checks and calls again. A producer
// waiting for room records its announcements in rec, where a reaper finds them.
//
// No wake-up is lost: the waiter announces itself in each inbox's waiter word, then re-checks,
// then parks. A waker makes its change, then reads the waiter word, and if it counts anyone
// rings the bell, after which the leader scans (see doorbell.go for the bell's half).
func (d *dispatcher) await(ctx context.Context, deadline time.Time, kind waitKind, ins []*Inbox, rec waitRecord) error {
	w, err := d.enter(kind, ins, rec)
	if err != nil {
		return err
	}
	// Whatever happens (a memory fault of a truncated region included), w leaves.
	defer d.leave(w)
	return d.park(ctx, deadline, kind, ins, w)
}

// enter registers a waiter for kind in ins and starts the leader if none runs. d.mu is
// released however it returns (reading a damaged region can fault).
func (d *dispatcher) enter(kind waitKind, ins []*Inbox, rec waitRecord) (*waiter, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return nil, ErrClosed
	}
	w := d.waiter()
	if !d.running {
		d.running = true
		d.done = make(chan struct{})
		go d.lead(d.done)
	}
	for _, in := range ins {
		d.add(w, in, kind, rec)
	}
	return w, nil
}

// leave takes w's announcements back and frees it.
func (d *dispatcher) leave(w *waiter) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.remove(w)
	select {
	case <-w.ch:
	default:
	}
	w.fired, w.poll = false, false
	d.free = append(d.free, w)
}

// park is await's wait: announced, the waiter re-checks, then waits for the leader.
func (d *dispatcher) park(ctx context.Context, deadline time.Time, kind waitKind, ins []*Inbox, w *waiter) error {
	for {
		for _, in := range ins {
			if readyFor(kind, in) {
				return nil
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var tc <-chan time.Time
		if w.poll || !deadline.IsZero() {
			t := time.Duration(1<<63 - 1)
			if w.poll {
				t = pollSleep
			}
			if !deadline.IsZero() {
				left := time.Until(deadline)
				if left <= 0 {
					return ErrTimeout
				}
				t = min(t, left)
			}
			if w.timer == nil {
				w.timer = time.NewTimer(t)
			} else {
				w.timer.Reset(t)
			}
			tc = w.timer.C
		}
		select {
		case <-w.ch:
			if tc != nil {
				w.timer.Stop()
			}
			return nil
		case <-ctx.Done():
			if tc != nil {
				w.timer.Stop()
			}
			return ctx.Err()
		case <-tc:
		}
	}
}

// waiter returns a free waiter. d.mu is held.
func (d *dispatcher) waiter() *waiter {
	if n := len(d.free); n > 0 {
		w := d.free[n-1]
		d.free[n-1] = nil
		d.free = d.free[:n-1]
		return w
	}
	return &waiter{ch: make(chan struct{}, 1)}
}

// add enters w's wait on in and announces it. A wait that cannot be announced (the inbox was
// closed; a room wait of a participant with no wait record left;
// a fault reading a truncated region) makes w poll. d.mu is held.
func (d *dispatcher) add(w *waiter, in *Inbox, kind waitKind, rec waitRecord) {
	if d.heads == nil {
		d.heads = make([]int32, d.p.r.cfg.Inboxes)
	}
	j := len(d.entries)
	e := waitEntry{in: in, kind: kind, w: w, k: len(w.pos), next: d.heads[in.v.index]}
	d.announce(&e, rec)
	if !e.announced {
		w.poll = true
	}
	w.pos = append(w.pos, j)
	d.entries = append(d.entries, e)
	if e.next != 0 {
		d.entries[e.next-1].prev = int32(j + 1)
	}
	d.heads[in.v.index] = int32(j + 1)
}

// announce announces e's wait in its inbox. A memory fault leaves it unannounced.
func (d *dispatcher) announce(e *waitEntry, rec waitRecord) {
	var err error
	defer unguard(guard(), &err)
	in := e.in
	hd := in.v.hdr
	if e.kind == waitMessage {
		e.announced = announce(&hd.parked, in.gen)
	} else {
		// The bit before the announcement: a waker that sees the announcement sees the bit.
		bw, bit := in.v.r.roomBell(in.v.index, d.p.idx)
		bw.Or(bit)
		if announce(&hd.spaceWaiters, in.gen) {
			e.announced = true
			if rec.slot != nil {
				if e.rec = rec.enter(); e.rec == nil {
					retract(&hd.spaceWaiters, in.gen, 1)
					e.announced = false
				}
			}
		}
	}
}

// remove takes back w's announcements and removes its entries. d.mu is held.
func (d *dispatcher) remove(w *waiter) {
	for k := len(w.pos) - 1; k >= 0; k-- {
		j := w.pos[k]
		e := d.entries[j]
		d.unlink(j)
		last := len(d.entries) - 1
		if j != last {
			// The last entry moves to j: its neighbours (or its inbox's head) follow it.
			m := d.entries[last]
			d.entries[j] = m
			m.w.pos[m.k] = j
			if m.prev != 0 {
				d.entries[m.prev-1].next = int32(j + 1)
			} else {
				d.heads[m.in.v.index] = int32(j + 1)
			}
			if m.next != 0 {
				d.entries[m.next-1].prev = int32(j + 1)
			}
		}
		d.entries[last] = waitEntry{}
		d.entries = d.entries[:last]
		d.retract(e)
	}
	w.pos = w.pos[:0]
}

// unlink takes entry j out of its inbox's list. d.mu is held.
func (d *dispatcher) unlink(j int) {
	e := &d.entries[j]
	if e.prev != 0 {
		d.entries[e.prev-1].next = e.next
	} else {
		d.heads[e.in.v.index] = e.next
	}
	if e.next != 0 {
		d.entries[e.next-1].prev = e.prev
	}
	e.prev, e.next = 0, 0
}

// retract takes back the announcement of e, an entry removed. A memory fault leaves it.
func (d *dispatcher) retract(e waitEntry) {
	var err error
	defer unguard(guard(), &err)
	hd := e.in.v.hdr
	if e.announced {
		if e.kind == waitMessage {
			retract(&hd.parked, e.in.gen, 1)
		} else {
			if e.rec != nil {
				leaveWait(e.rec) // erased before taken back: a kill between leaves one too many
			}
			retract(&hd.spaceWaiters, e.in.gen, 1)
		}
	}
	if e.kind == waitRoom && !d.roomWaited(e.in.v) {
		bw, bit := e.in.v.r.roomBell(e.in.v.index, d.p.idx)
		bw.And(^bit)
	}
}

// roomWaited reports whether a goroutine of d still waits for room in the inbox entry v.
func (d *dispatcher) roomWaited(v *inboxView) bool {
	for j := d.heads[v.index]; j != 0; j = d.entries[j-1].next {
		if e := &d.entries[j-1]; e.kind == waitRoom && e.in.v == v {
			return true
		}
	}
	return false
}

// lead is the leader: it sleeps on the participant's bell and wakes the waiters whose inbox
// is ready. It returns when the participant detaches, or when nobody has waited for a
// longSleep.
func (d *dispatcher) lead(done chan struct{}) {
	defer close(done)
	bell := &d.p.slot.bell
	busy := time.Now()
	lastFull := busy
	for {
		d.mu.Lock()
		now := time.Now()
		if d.stopped || len(d.entries) == 0 && now.Sub(busy) > longSleep {
			d.running = false
			storeGuarded(bell, bellAwake)
			d.mu.Unlock()
			return
		}
		if len(d.entries) != 0 {
			busy = now
		}
		// Every longSleep the leader reads every waiter's inbox, rung or not: a head or tail
		// damaged by a scribble, or a rung set scribbled clear, delays a wake-up by no more.
		full := now.Sub(lastFull) >= longSleep
		if full {
			lastFull = now
		}
		fired, faulted := d.scan(full)
		d.mu.Unlock()
		if faulted {
			time.Sleep(pollSleep) // the region faulted: its waiters will find out themselves
			continue
		}
		if fired {
			// Let the goroutines just woken run on this thread's P now: a P held by a
			// thread asleep in a system call passes to another thread only when the
			// runtime's monitor notices, tens of microseconds to milliseconds later. The
			// bell stays asleep meanwhile: a ring in between makes the sleep below return
			// at once.
			runtime.Gosched()
		}
		futexWaitOn(bell, bellAsleep, longSleep)
	}
}

// scan stores bellAsleep in the bell, takes the participant's rung set, then wakes each
// waiter on a rung inbox (on any inbox if full) that is ready, or every waiter if reading the
// region faults, and reports whether it woke any. d.mu is held.
func (d *dispatcher) scan(full bool) (fired, faulted bool) {
	var err error
	func() {
		defer unguard(guard(), &err)
		p := d.p
		p.slot.bell.Store(bellAsleep)
		words := rungWords(p.r.cfg.Inboxes)
		for sum := p.slot.rungSum.Swap(0); sum != 0; sum &= sum - 1 {
			k := uint64(bits.TrailingZeros64(sum))
			if k >= words {
				continue // a scribbled bit: no such word
			}
			for m := p.r.rungWord(p.idx, k).Swap(0); m != 0; m &= m - 1 {
				// An index past the table (a scribbled bit, or one past Inboxes in the
				// last word) names no inbox; heads is nil before anyone waited.
				if idx := k*64 + uint64(bits.TrailingZeros64(m)); !full && idx < uint64(len(d.heads)) {
					for j := d.heads[idx]; j != 0; j = d.entries[j-1].next {
						fired = d.check(&d.entries[j-1]) || fired
					}
				}
			}
		}
		if full {
			for j := range d.entries {
				fired = d.check(&d.entries[j]) || fired
			}
		}
	}()
	if err != nil {
		for j := range d.entries {
			d.fire(d.entries[j].w)
		}
		return true, true
	}
	return fired, false
}

// check wakes e's waiter if e's inbox is ready, and reports whether it did. d.mu is held.
func (d *dispatcher) check(e *waitEntry) bool {
	if e.w.fired {
		return false
	}
	d.reads++
	if !readyFor(e.kind, e.in) {
		return false
	}
	d.fire(e.w)
	return true
}

// storeGuarded stores v in w, a word of the region, doing nothing if that faults.
func storeGuarded(w *atomic.Uint32, v uint32) {
	var err error
	defer unguard(guard(), &err)
	w.Store(v)
}

// fire wakes w. d.mu is held.
func (d *dispatcher) fire(w *waiter) {
	if w.fired {
		return
	}
	w.fired = true
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// stop wakes every waiter, refuses new ones and waits for the leader to return: the
// participant is detaching, and its region may be unmapped next.
func (d *dispatcher) stop() {
	d.mu.Lock()
	d.stopped = true
	if d.watchStop != nil {
		d.watchStop()
	}
	if d.direct != nil {
		w := &d.direct.v.hdr.wake
		storeGuarded(w, bellAwake)
		futexWakeAll(w)
	}
	for j := range d.entries {
		d.fire(d.entries[j].w)
	}
	running, done := d.running, d.done
	d.mu.Unlock()
	if running {
		storeGuarded(&d.p.slot.bell, bellAwake)
		futexWakeAll(&d.p.slot.bell)
		<-done
	}
}

// sleepDirect is how the participant's first waiting consumer waits (a lone waiter, the usual
// case of a latency-sensitive one): it sleeps in the kernel itself, on its inbox's wake word,
// as every sleeping consumer did before the doorbell. A woken goroutine that had parked would
// cost a second kernel wake-up when it is locked to its thread (runtime.LockOSThread): the
// leader's thread wakes, then hands the goroutine to its own. One consumer per participant
// sleeps directly, so each inbox has at most one sleeper on its wake word and the word can be
// rung like a bell (stored asleep, re-checked, swapped awake by the one waker that calls
// FUTEX_WAKE): a process killed asleep costs one futex call, not one per message. Every
// other waiter parks (await). It reports false, having done nothing, if another consumer
// sleeps directly already.
//
// A cancellable ctx is watched with context.AfterFunc, which wakes the direct sleeper; the
// watch stays for the next wait with the same ctx, so that a consumer waiting again and again
// with one context allocates nothing.
func (d *dispatcher) sleepDirect(ctx context.Context, in *Inbox) (bool, error) {
	hd := in.v.hdr
	d.mu.Lock()
	if d.stopped || d.direct != nil {
		d.mu.Unlock()
		return false, nil
	}
	d.direct = in
	if done := ctx.Done(); done != nil && done != d.watchDone {
		if d.watchStop != nil {
			d.watchStop()
		}
		d.watchDone = done
		d.watchStop = context.AfterFunc(ctx, d.wakeDirect)
	}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.direct = nil
		d.mu.Unlock()
	}()
	if !announce(&hd.sleepers, in.gen) {
		return true, nil // the inbox was closed: the caller finds out
	}
	defer retract(&hd.sleepers, in.gen, 1)
	for {
		hd.wake.Store(bellAsleep)
		if readyFor(waitMessage, in) {
			break
		}
		if err := ctx.Err(); err != nil {
			return true, err
		}
		futexWaitOn(&hd.wake, bellAsleep, longSleep)
	}
	// The word is left as it is: storing awake here could land after the inbox was closed
	// and its entry reopened by another participant whose consumer has stored asleep, and
	// its producers would then not ring it (a wake-up lost for up to longSleep). A word left
	// asleep costs at most one needless FUTEX_WAKE, by a producer that still saw us announced.
	return true, nil
}

// wakeDirect wakes the direct sleeper: its context is done.
func (d *dispatcher) wakeDirect() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped || d.direct == nil {
		return
	}
	w := &d.direct.v.hdr.wake
	storeGuarded(w, bellAwake)
	futexWakeAll(w)
}
