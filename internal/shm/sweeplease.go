package shm

import (
	"fmt"
	"time"
)

// Sweeping on request, by one process at a time, a step at a time.
//
// The orphan sweep (Region.sweep) reads every slot's state word, which costs what the region
// is big: a periodic full sweep in every process made every idle process pay for every buffer
// of the bus every second. So the periodic work (Maintain) sweeps only when asked:
//
//   - A request (RequestSweep; a reaper that reclaimed a dead participant, whose kill may have
//     left a reference nobody holds; a loan that found its pools exhausted) bumps the header's
//     request counter and raises the sweep goal, a count of passes, to two complete passes
//     from now: the first sees each candidate, the second confirms it (a candidate is freed
//     only if the same process saw it the same way before, see sweep).
//   - A participant whose process runs Maintain while passes completed < goal takes the
//     header's lease (holder's participant + expiry) and runs steps of sweepStep slots from the shared cursor, renewing
//     the lease at each step, until the goal is reached or the lease is lost. Others leave the
//     work to it. The lease goes to another process when its holder lets it go, when its
//     expiry passes, or when its holder's participant is dead (the kernel's lock test).
//   - The cursor (passes completed, position) is in the header, so a holder killed mid-pass
//     leaves its progress there; the next holder resumes from it, and raises the goal so that
//     it makes two passes of its own (its confirmations are its own).
//
// The lease saves work; it does not make the sweep safe. A sweep is safe beside anything,
// another sweep included (see sweep): every free is a compare-and-swap from a state word read
// before the records, so two sweepers at once (a lease that expired under a slow holder) free
// nothing twice.

// Lent marks: lentPerWord pools' marks of lentBits bits in each of the header's lentWords
// words.
const (
	lentWords     = 3
	lentPerWord   = 3
	lentBits      = 21 // a mark is at most MaxClassCount = 1<<20
	lentFieldMask = 1<<lentBits - 1
	lentBlock     = 64 // marks rise by whole blocks of slots
)

// A mark must hold MaxClassCount, and every class needs one.
var _ [lentFieldMask - MaxClassCount]struct{}
var _ [lentWords*lentPerWord - MaxClasses]struct{}

// sweepStep is how many slots one step of a requested sweep reads. Tests make it small.
var sweepStep uint64 = 32768

// leaseTerm is how long a sweep lease lasts without being renewed; its holder renews it at
// every step, which takes milliseconds.
const leaseTerm = 2 * time.Second

const (
	leaseHolderShift = 48
	leaseExpiryMask  = 1<<leaseHolderShift - 1
	cursorPosMask    = 1<<32 - 1
)

// testHookSweepStep, if set, runs before each step of a requested sweep, with the position
// the step starts at.
var testHookSweepStep func(pos uint64)

func leaseNow() uint64 { return uint64(Now()) / uint64(time.Millisecond) }

// RequestSweep asks for the orphan sweep: some process running Maintain (every bus does, every
// second) will make two complete passes over the pools, a step at a time, starting now. A
// caller that suspects a buffer nobody holds (a pool emptier than its users explain) calls it.
// It is safe for concurrent use and cheap: two atomic operations on the header.
func (r *Region) RequestSweep() (err error) {
	if r.readOnly {
		return &Error{Op: "request sweep", Name: r.name, Err: fmt.Errorf("%w: region opened read-only", ErrPermission)}
	}
	if !r.enterRead() {
		return &Error{Op: "request sweep", Name: r.name, Err: ErrClosed}
	}
	defer r.exitRead()
	defer unguard(guard(), &err)
	r.requestSweep()
	return nil
}

func (r *Region) requestSweep() {
	r.hdr.sweepReq.Add(1)
	r.raiseGoal()
}

// raiseGoal makes the goal at least two complete passes that start after now: the pass under
// way, if any, began before.
func (r *Region) raiseGoal() {
	c := r.hdr.cursor.Load()
	want := uint32(2)
	if c&cursorPosMask != 0 {
		want++
	}
	for {
		g := r.hdr.goal.Load()
		if owed := passesOwed(c, g); (owed >= want && owed <= 3) || r.hdr.goal.CompareAndSwap(g, uint64(uint32(c>>32)+want)) {
			return
		}
	}
}

// passesOwed is how many passes the goal g is ahead of the cursor c. Pass numbers are 32
// bits and wrap (a region whose pools keep running short sweeps often, for years): they are
// compared modulo 2^32, where a goal more than 3 ahead is a scribble.
func passesOwed(c, g uint64) uint32 { return uint32(g) - uint32(c>>32) }

// sweepPending reports whether a requested sweep has passes left to make. A goal further
// ahead than any request sets (a scribble) is brought back, and counted.
func (r *Region) sweepPending() bool {
	c, g := r.hdr.cursor.Load(), r.hdr.goal.Load()
	owed := passesOwed(c, g)
	if owed > 3 {
		if r.hdr.goal.CompareAndSwap(g, uint64(uint32(c>>32)+3)) {
			r.hdr.corrupt.Add(1)
		}
		return true
	}
	return owed != 0
}

// takeLease takes the sweep lease for holder (a participant of this process + 1): if nobody
// holds it, if its term ran out, or if its holder's participant is dead. The caller holds r.sweepMu, so a lease naming holder is a leftover of
// this process's own (a sweep that faulted) and is taken back. It returns the lease word it
// stored.
func (r *Region) takeLease(holder uint32) (uint64, bool) {
	term := uint64(leaseTerm / time.Millisecond)
	for {
		// The clock is read at each try: a holder that renewed while we checked whether it
		// lives has a term that starts after our first reading, which is not a scribble.
		now := leaseNow()
		mine := uint64(holder)<<leaseHolderShift | (now + term)
		l := r.hdr.lease.Load()
		if l != 0 && (holder == 0 || uint32(l>>leaseHolderShift) != holder) {
			h, exp := uint32(l>>leaseHolderShift), l&leaseExpiryMask
			// A term longer than a holder ever sets is a scribble: the lease is void.
			if now < exp && exp <= now+term+leaseSlack {
				if h == 0 || h > r.cfg.Participants {
					return 0, false // a holder without a participant: its term decides
				}
				if alive, err := r.Alive(int(h - 1)); err != nil || alive {
					return 0, false
				}
			}
		}
		if r.hdr.lease.CompareAndSwap(l, mine) {
			return mine, true
		}
	}
}

// leaseSlack is how far past a full term a lease's expiry may be before it reads as a
// scribble: a holder renews between our reading of the clock and of its word.
const leaseSlack = 1000 // milliseconds

// renewLease extends a lease this process holds (its word is l); it reports false if the
// lease was taken meanwhile.
func (r *Region) renewLease(l uint64) (uint64, bool) {
	n := l&^leaseExpiryMask | (leaseNow() + uint64(leaseTerm/time.Millisecond))
	if !r.hdr.lease.CompareAndSwap(l, n) {
		return 0, false
	}
	return n, true
}

// sweepOnRequest runs the requested sweep's steps if passes are left to make and this
// process gets the lease, and returns how many buffers they freed. Without a request it costs
// two loads.
func (r *Region) sweepOnRequest() int {
	if !r.sweepPending() || r.hdr.unrecorded.Load() != 0 {
		return 0 // nothing asked; or nothing can be swept until the next audit
	}
	// Participants sweep: they run Maintain periodically. A process without one (a tool, or
	// a bus opening, which reaps before it attaches) leaves the work to them, so that
	// attaching never waits for a sweep.
	owner := r.anyOwner()
	if owner == 0 {
		return 0
	}
	r.sweepMu.Lock()
	defer r.sweepMu.Unlock()
	lease, ok := r.takeLease(owner)
	if !ok {
		return 0
	}
	defer func() { r.hdr.lease.CompareAndSwap(lease, 0) }()
	// This process's confirmations are its own: whoever held the lease before may have made
	// the pass under way, and the passes still owed may be fewer than this process needs.
	r.raiseGoal()
	// The passes owed now, and no more: requests made while we sweep (other processes finding
	// the pools exhausted every 10ms) raise the goal again, and chasing it would keep this
	// call, which may be a Loan's, sweeping without end. What they add is left to the next
	// call (the periodic Maintain, or the next exhausted loan).
	goal := r.hdr.goal.Load()
	n := 0
	for r.sweepPending() {
		c := r.hdr.cursor.Load()
		pass, pos := c>>32, min(c&cursorPosMask, r.totalSlots)
		if owed := passesOwed(c, goal); owed == 0 || owed > 3 {
			break
		}
		end := min(pos+sweepStep, r.totalSlots)
		if testHookSweepStep != nil {
			testHookSweepStep(pos)
		}
		n += r.sweepRange(pos, end)
		r.hdr.sweepSteps.Add(1)
		next := pass<<32 | end
		if end >= r.totalSlots {
			next = (pass + 1) << 32
		}
		if !r.hdr.cursor.CompareAndSwap(c, next) {
			break // another sweeper (our lease ran out under us) moved on: it has the work
		}
		if lease, ok = r.renewLease(lease); !ok {
			break
		}
	}
	return n
}

// sweepDone records, after an audit, that no requested sweep is left: the audit recomputed
// every reference count from the records.
func (r *Region) sweepDone() {
	pass := uint64(uint32(r.hdr.cursor.Load()>>32 + 1))
	r.hdr.cursor.Store(pass << 32)
	r.hdr.goal.Store(pass)
	r.hdr.lease.Store(0)
}

// SweepStats are the requested sweep's counters.
type SweepStats struct {
	Requests uint64 // sweeps requested (deaths seen, pools exhausted, RequestSweep)
	Passes   uint64 // complete passes over the pools made on request
	Steps    uint64 // steps made (each reads up to 32768 slots)
	Pending  bool   // passes are left to make
	Holder   int    // participant holding the lease, -1: none
}

// SweepStats returns the requested sweep's counters. It reads shared memory only.
func (r *Region) SweepStats() (_ SweepStats) {
	defer unguard(guard(), nil) // a fault (the file truncated) returns the zero value
	if !r.enterRead() {
		return SweepStats{}
	}
	defer r.exitRead()
	return r.sweepStats()
}

func (r *Region) sweepStats() SweepStats {
	c, g, l := r.hdr.cursor.Load(), r.hdr.goal.Load(), r.hdr.lease.Load()
	s := SweepStats{Requests: shown(r.hdr.sweepReq.Load()), Passes: shown(c >> 32), Steps: shown(r.hdr.sweepSteps.Load()),
		Pending: passesOwed(c, g) != 0, Holder: -1}
	if h := uint32(l >> leaseHolderShift); l != 0 && h != 0 && h <= r.cfg.Participants && l&leaseExpiryMask > leaseNow() {
		s.Holder = int(h - 1)
	}
	return s
}
