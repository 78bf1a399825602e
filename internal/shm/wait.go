package shm

import (
	"context"
	"errors"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// WaitStrategy says how a consumer waits for a message (and a Block producer for room).
type WaitStrategy uint8

const (
	// SpinThenSleep spins for a short while (Spin, about 50µs by default), then sleeps (see
	// dispatcher). The default: low latency while traffic flows, no CPU while idle. After
	// the first 5µs (spinAlone) the spin also offers the CPU to other processes now and
	// then, so that waiters sharing a core do not take it from those with work to do.
	SpinThenSleep WaitStrategy = iota
	// BusySpin never sleeps: the lowest latency, one core per waiting consumer.
	BusySpin
	// Sleep sleeps at once: the least CPU, a wake-up system call per message.
	Sleep
)

func (w WaitStrategy) String() string {
	switch w {
	case SpinThenSleep:
		return "spin-then-sleep"
	case BusySpin:
		return "busy-spin"
	case Sleep:
		return "sleep"
	}
	return "WaitStrategy(?)"
}

// DefaultSpin is how long SpinThenSleep spins before sleeping. A futex wake-up costs about
// 15µs on a virtual machine; spinning several times that keeps a flowing stream awake.
const DefaultSpin = 50 * time.Microsecond

// Waiter configures waiting on an inbox.
type Waiter struct {
	Strategy WaitStrategy
	Spin     time.Duration // for SpinThenSleep; 0 means DefaultSpin
}

// tailEvery is how many turns of a consumer's spin pass between its looks at the tail (a power
// of two). The spin reads the head and its cell; the tail, which only tells a message hidden by
// a scribbled head cell from none, is read every tailEvery turns and before a sleep. Reading it
// at the start of every wait cost a round trip 19% (docs/performance.md); every 256 turns costs
// nothing measurable, and 4,096 measured no better (2–5% worse, within the noise).
const tailEvery = 1 << 8

// longSleep bounds one futex wait, so a deadline far away is still re-checked now and then.
var longSleep = time.Second // a variable only so that tests can make a lost wake-up hang

func (in *Inbox) wait(ctx context.Context, w Waiter) error {
	// ready, not pending: the quick take before this wait has just read the head and its
	// cell, and the tail is read below before any sleep (see takeAs).
	if in.ready() {
		return nil
	}
	if w.Strategy != Sleep {
		spin := w.Spin
		if spin <= 0 {
			spin = DefaultSpin
		}
		var until, yieldFrom time.Time
		for i := 1; ; i++ {
			if in.ready() {
				return nil
			}
			if i&(tailEvery-1) == 0 {
				if in.pending() {
					return nil
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				if !in.isOpen() {
					return ErrClosed
				}
				if w.Strategy == BusySpin {
					// Yield now and then only: on a goroutine locked to its thread a
					// Gosched costs two thread wake-ups, and asynchronous preemption lets
					// other goroutines run anyway.
					if i&(1<<16-1) == 0 {
						runtime.Gosched()
					}
					continue
				}
				now := time.Now()
				if until.IsZero() {
					until, yieldFrom = now.Add(spin), now.Add(min(spin/2, spinAlone))
				} else if now.After(until) {
					break
				} else if now.After(yieldFrom) {
					osYield()
				}
			}
		}
	}
	p := in.v.r.localOwner(in)
	if p != nil {
		if ok, err := p.disp.sleepDirect(ctx, in); ok {
			return err
		}
	}
	return p.sleep(ctx, time.Time{}, waitMessage, in, waitRecord{})
}

// sleep waits as await says for kind in one inbox, on p's dispatcher. Without a participant
// (a consumer whose inbox's owner is not attached by this process, a producer in a process
// with none attached) it polls instead.
func (p *Participant) sleep(ctx context.Context, deadline time.Time, kind waitKind, in *Inbox, rec waitRecord) error {
	if p == nil {
		return pollUntil(ctx, deadline, func() bool { return readyFor(kind, in) })
	}
	ins := [1]*Inbox{in}
	return p.disp.await(ctx, deadline, kind, ins[:], rec)
}

// pollUntil re-checks cond every pollSleep until it holds, ctx is done or deadline (if set)
// passes.
func pollUntil(ctx context.Context, deadline time.Time, cond func() bool) error {
	for !cond() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return ErrTimeout
		}
		time.Sleep(pollSleep)
	}
	return nil
}

// popInto takes the oldest message into entry idx of p's held list, waiting as w says
// (see take). The entry stays reserved if popInto fails.
func (in *Inbox) popInto(ctx context.Context, w Waiter, p *Participant, idx int) (Handle, error) {
	hw, err := p.heldWord(idx)
	if err != nil {
		return 0, err
	}
	for quick := true; ; quick = false {
		h, ok, err := in.takeAs(hw, uint64(idx), quick)
		if ok || err != nil {
			return h, err
		}
		// A wait that returns at once, for ever (a word another process wrote over), must not
		// make the take deaf to its context: the wait looks at it only between its turns.
		// Looked at after the take, so that a message that is there wins.
		if !quick {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
		if err := in.wait(ctx, w); err != nil {
			return 0, err
		}
		if in.ring != nil && in.ring.ready() {
			return 0, errRingReady
		}
	}
}

// errRingReady is popInto's word that the inbox's slot ring has something: the caller takes
// from the ring (InboxRing.take) and, if it found nothing after all, takes again.
var errRingReady = errors.New("slot ring ready")

// waitSpace sleeps until the inbox is not full, ctx is done or deadline passes. A producer
// delivering from its loan s records its announcement in its participant slot, where a reaper
// finds it if the producer is killed while it waits.
func (in *Inbox) waitSpace(ctx context.Context, deadline time.Time, s *slotHeader) error {
	hd := in.v.hdr
	notFull := func() bool {
		t, h := hd.tail.Load(), hd.head.Load()
		return t < h+in.cap || !in.isOpen()
	}
	// A brief spin first: the consumer is usually just behind.
	for range 64 {
		if notFull() {
			return nil
		}
		runtime.Gosched()
	}
	rec := in.spaceRecord(s)
	// The dispatcher keeps the inbox while it waits: give it a copy, so that in itself does
	// not escape and a caller's Inbox on the stack (Participant.Reply's) stays there.
	cp := *in
	return in.v.r.participantOf(rec.slot).sleep(ctx, deadline, waitRoom, &cp, rec)
}

// ready reports whether a message is waiting, without taking it. It reads only the head and
// the head's cell, which is what a spinning consumer should touch.
func (in *Inbox) ready() bool {
	h0 := in.v.hdr.head.Load()
	return in.cell(h0).Load() != in.empty(h0) || in.ring != nil && in.ring.active() && in.ring.ready()
}

// inboxPending is pending without the inbox's slot ring: a message in the inbox itself.
func (in *Inbox) inboxPending() bool {
	h0 := in.v.hdr.head.Load()
	return in.cell(h0).Load() != in.empty(h0) || in.v.hdr.tail.Load() > h0
}

// pending reports whether a message is waiting, or the tail says one should be (a scribbled
// cell at the head can hide it from ready; take repairs it).
func (in *Inbox) pending() bool {
	return in.ready() || in.v.hdr.tail.Load() > in.v.hdr.head.Load() || in.ring != nil && in.ring.stalled()
}

// WaitEmpty returns when the inbox holds no message (its consumer has taken everything), ctx
// is done, or the inbox is closed. It polls: it is for draining, not the data path.
func (in *Inbox) WaitEmpty(ctx context.Context) (err error) {
	defer unguard(guard(), &err)
	for pause := 20 * time.Microsecond; ; pause = min(2*pause, 5*time.Millisecond) {
		if in.length() == 0 && (in.ring == nil || in.ring.backlog() == 0) || !in.isOpen() {
			return nil
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// waitAny returns when one of ins has a message waiting (or is closed, or damaged), ctx is
// done, or the leader woke the caller: the caller takes and, finding nothing, calls again. It
// spins as w says, then waits on the dispatcher of the participant that owns them all (polling
// if no participant of this process owns every one).
func waitAny(ctx context.Context, ins []*Inbox, w Waiter) error {
	ready := func() bool {
		for _, in := range ins {
			if in.pending() || !in.isOpen() {
				return true
			}
		}
		return false
	}
	// The quick takes before this wait have just read each head and its cell: look again
	// the same way; the tail is read (ready) every 64 turns and before any sleep.
	for _, in := range ins {
		if in.ready() || !in.isOpen() {
			return nil
		}
	}
	if w.Strategy != Sleep {
		spin := w.Spin
		if spin <= 0 {
			spin = DefaultSpin
		}
		var until, yieldFrom time.Time
		for i := 1; ; i++ {
			for _, in := range ins {
				if in.ready() {
					return nil
				}
			}
			if i&63 == 0 {
				if ready() {
					return nil
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				if w.Strategy == BusySpin {
					if i&(1<<14-1) == 0 {
						runtime.Gosched()
					}
					continue
				}
				now := time.Now()
				if until.IsZero() {
					until, yieldFrom = now.Add(spin), now.Add(min(spin/2, spinAlone))
				} else if now.After(until) {
					break
				} else if now.After(yieldFrom) {
					osYield()
				}
			}
		}
	}
	p := ins[0].v.r.localOwner(ins[0])
	for _, in := range ins[1:] {
		if p != nil && (in.v.r != p.r || wordOwner(in.v.hdr.state.Load()) != p.owner) {
			p = nil
		}
	}
	if p == nil {
		return pollUntil(ctx, time.Time{}, ready)
	}
	return p.disp.await(ctx, time.Time{}, waitMessage, ins, waitRecord{})
}

// spinAlone is how long SpinThenSleep spins before each turn of its spin also offers the CPU
// to other processes (osYield): a subscriber among several on one core held the core for the
// whole spin while the others had messages waiting (docs/performance.md, "Issue 15, seventh
// round"), and a round trip, whose waits are shorter, pays no system call.
const spinAlone = 5 * time.Microsecond

// osYield gives the CPU to another runnable thread of any process (sched_yield), if there is
// one; runtime.Gosched yields only to goroutines of this process. It is a system call the Go
// scheduler knows of (not a raw one): the other process may keep the CPU for a time slice,
// and meanwhile this thread's processor can be handed to another goroutine.
func osYield() {
	if testHookOSYield != nil {
		testHookOSYield()
	}
	unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
}

// testHookOSYield, if set, runs at every osYield: tests count them.
var testHookOSYield func()
