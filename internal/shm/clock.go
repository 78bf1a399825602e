package shm

import (
	"math/bits"
	"sync/atomic"
	"time"
	_ "unsafe" // for go:linkname
)

// nanotime is the runtime's monotonic clock (CLOCK_MONOTONIC through the vDSO): one clock read,
// where time.Now makes two (wall and monotonic). It is one of the runtime symbols the Go
// project keeps linkable for compatibility.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// Now returns the time used to stamp messages: CLOCK_MONOTONIC in nanoseconds. The clock is
// system-wide, so stamps from different processes on one host compare, and a change of the
// wall clock does not skew latencies. Where the processor's time-stamp counter is invariant
// and the kernel's clock is built on it (tscClockable), Now reads it and converts (see
// tscClock): 11 ns where the kernel's clock (kvm-clock through the vDSO) costs 28 on the
// team's VM, paid by every Send for its stamp.
func Now() int64 {
	if ns, ok := tsc.now(); ok {
		return ns
	}
	return nanotime()
}

// StampClock names the clock Now reads: "tsc" (the time-stamp counter, converted) or
// "kernel" (CLOCK_MONOTONIC through the vDSO). offq bench reports it: a machine whose kernel
// changes clocksource changes the cost of every Send.
func StampClock() string {
	if tsc.on {
		return "tsc"
	}
	return "kernel"
}

// tscClock reads CLOCK_MONOTONIC through the time-stamp counter: at an anchor (a counter
// reading taken around a read of the kernel's clock) it records both, and for the next
// tscAnchorEvery it converts counter ticks to nanoseconds at a rate measured against the
// kernel's clock over the last tscRateWindow to tscRateRoll; then the next call anchors again.
// So it follows the kernel's clock, NTP's slewing included, to within the rate's error over
// one millisecond (well under a nanosecond for a rate measured over 50 ms with 30 ns of read
// jitter) and the anchor's own read jitter (a few nanoseconds, either way: two readings a few
// nanoseconds apart across an anchor can come out in the other order, where the kernel's clock
// never does). An anchor that finds the conversion more than tscTolerance off the kernel's
// clock (a counter that jumped) starts the calibration over; until a rate is known, and while
// another goroutine anchors, Now reads the kernel's clock. Whether the counter is a clock is
// decided once, when the process starts: a kernel that later gives up on it (marks it
// unstable and changes clocksource) is caught only by the anchors' check, which bounds the
// error to tscTolerance.
//
// The fields are a sequence lock: seq is odd while the one goroutine that won the anchor
// writes them, and a reader that sees seq change under it reads the kernel's clock instead.
type tscClock struct {
	on   bool          // the counter is a clock (tscClockable): set at start
	seq  atomic.Uint64 // even: the fields below are whole
	tsc0 atomic.Uint64 // the anchor's counter reading
	ns0  atomic.Int64  // CLOCK_MONOTONIC at tsc0
	mult atomic.Uint64 // nanoseconds per tick << 32; 0: not calibrated
	span atomic.Uint64 // ticks after tsc0 that the anchor serves
	// warm is when a first rate can be measured (CLOCK_MONOTONIC): before it, Now reads the
	// kernel's clock without trying to anchor.
	warm atomic.Int64
	// rtsc, rns: the pair the rate is measured from; only the anchoring goroutine (seq odd)
	// reads and writes them.
	rtsc uint64
	rns  int64
}

const (
	tscAnchorEvery = time.Millisecond
	tscRateWindow  = 50 * time.Millisecond
	tscRateRoll    = time.Second
	tscTolerance   = 10 * time.Microsecond
	tscReadWindow  = 200 * time.Nanosecond // the widest pair of counter reads an anchor takes
)

var tsc = tscClock{on: tscInvariant()}

// now returns CLOCK_MONOTONIC read through the counter, or false where the counter is not a
// clock.
func (c *tscClock) now() (int64, bool) {
	if !c.on {
		return 0, false
	}
	s := c.seq.Load()
	t0, n0, m, sp := c.tsc0.Load(), c.ns0.Load(), c.mult.Load(), c.span.Load()
	t := rdtsc()
	if m != 0 && s&1 == 0 && c.seq.Load() == s {
		if d := t - t0; d < sp {
			return n0 + int64(scaleTicks(d, m)), true
		}
	}
	return c.anchor(s, m), true
}

// anchor takes a new anchor if no other goroutine is taking one, and returns the kernel's
// clock.
func (c *tscClock) anchor(s, m uint64) int64 {
	n := nanotime()
	if m == 0 && n < c.warm.Load() {
		return n // calibrating: no rate yet
	}
	if s&1 != 0 || !c.seq.CompareAndSwap(s, s+1) {
		return n
	}
	m = c.mult.Load()
	t, n, w := readPair()
	if m == 0 {
		// No rate to judge a pair by yet: the narrowest of three, since the rate is
		// measured from it.
		for range 2 {
			if t2, n2, w2 := readPair(); w2 < w {
				t, n, w = t2, n2, w2
			}
		}
	}
	if m != 0 && scaleTicks(w, m) > uint64(tscReadWindow) {
		// Interrupted between the reads: the pair is too loose to anchor on. Keep the last
		// anchor (the next call tries again).
		c.seq.Store(s + 2)
		return n
	}
	if m != 0 {
		// The last anchor's conversion must still agree with the kernel's clock.
		if d := t - c.tsc0.Load(); d >= 1<<62 || absDiff(c.ns0.Load()+int64(scaleTicks(d, m)), n) > int64(tscTolerance) {
			m, c.rtsc = 0, 0
		}
	}
	switch {
	case c.rtsc == 0 || t <= c.rtsc || n <= c.rns:
		c.rtsc, c.rns = t, n // (re)start the rate's measurement
		if m == 0 {
			c.warm.Store(n + int64(tscRateWindow))
		}
	case n-c.rns >= int64(tscRateWindow):
		dn, dt := uint64(n-c.rns), t-c.rtsc
		if hi := dn >> 32; hi < dt {
			m, _ = bits.Div64(hi, dn<<32, dt)
		}
		if n-c.rns >= int64(tscRateRoll) {
			c.rtsc, c.rns = t, n
		}
	}
	if m != 0 {
		c.tsc0.Store(t)
		c.ns0.Store(n)
		c.span.Store(uint64(tscAnchorEvery) << 32 / m)
	}
	c.mult.Store(m)
	c.seq.Store(s + 2)
	return n
}

// readPair reads the kernel's clock between two reads of the counter, and returns the counter
// at the kernel's reading (as near as the two reads tell), the kernel's reading and the ticks
// between the two counter reads.
func readPair() (t uint64, n int64, width uint64) {
	t1 := rdtsc()
	n = nanotime()
	t2 := rdtsc()
	return t1 + (t2-t1)/2, n, t2 - t1
}

// scaleTicks converts d ticks at m nanoseconds per tick << 32 to nanoseconds.
func scaleTicks(d, m uint64) uint64 {
	hi, lo := bits.Mul64(d, m)
	return hi<<32 | lo>>32
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}

// monoToWall is the wall-clock time at monotonic zero, as this process sees it.
var monoToWall = time.Now().UnixNano() - nanotime()

// Time converts a stamp from Now to wall-clock time.
func Time(stamp int64) time.Time { return time.Unix(0, stamp+monoToWall) }

// Stamp converts a wall-clock time to a stamp of Now's clock: the inverse of Time, for a
// message forwarded with its origin's publish time (Loan.WithStamp). The zero time gives 0
// (no stamp).
func Stamp(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano() - monoToWall
}
