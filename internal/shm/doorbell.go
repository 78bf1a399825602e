package shm

import (
	"math/bits"
	"sync/atomic"
)

// The doorbell. Every participant has one futex word, its bell, in its slot (offset 224). A
// process's waiting goroutines do not sleep in the kernel: they park on Go channels (see
// dispatcher), and one leader goroutine per participant sleeps on the bell, so that any
// number of waiting subscriptions costs one OS thread. A waker rings the bell of the
// participant that owns the inbox (a message committed) or of each participant with a
// producer waiting for room in it (the head moved), and the leader then wakes exactly the
// goroutines whose condition holds.
//
// The bell has two values: bellAsleep while the leader sleeps on it or is about to, else
// bellAwake. The leader stores bellAsleep, then scans its waiters' inboxes, then sleeps
// while the bell is still bellAsleep. A waker first makes its change (commits a message,
// moves the head), then checks that a waiter is announced in the inbox's waiter word, and
// only then reads the bell: if it is bellAsleep, the waker swaps it for bellAwake and calls
// FUTEX_WAKE. All of these are sequentially consistent atomics, so either the waker's read
// follows the leader's store (it swaps and wakes, or a waker before it did, and the futex
// compares the word in the kernel, so a swap just before the sleep makes the sleep return at
// once), or it precedes it and the leader's scan sees the change. No wake-up is lost, and
// while messages flow nobody announces a wait and nobody makes a system call.
//
// A process killed while its leader sleeps leaves its bell at bellAsleep: the first waker
// swaps it and makes one futex call, and every later one finds bellAwake and makes none. A
// reaper takes the dead process's announcements back (its inboxes are closed and their
// waiter words start again at zero; its space waits are in its slot's wait records, and
// undoWaits also clears its spaceBells bits), so nothing keeps ringing a dead bell.
const (
	bellAwake  = 0
	bellAsleep = 1
)

// bellWakes counts the FUTEX_WAKE calls rings made in this process (for tests).
var bellWakes atomic.Uint64

// bellOf returns the bell of the participant whose index + 1 is owner, or nil if owner names
// no slot (a value read from the region is checked before it is used).
func (r *Region) bellOf(owner uint32) *atomic.Uint32 {
	if owner == 0 || owner > r.cfg.Participants {
		return nil
	}
	return &(*participantSlot)(r.at(r.participantOffset(owner - 1))).bell
}

// ring wakes the leader sleeping on bell, if one is. Ringing a bell nobody sleeps on costs
// one read.
func ring(bell *atomic.Uint32) {
	if bell != nil && bell.Load() == bellAsleep && bell.CompareAndSwap(bellAsleep, bellAwake) {
		bellWakes.Add(1)
		futexWakeAll(bell)
	}
}

// ringSpaceBells rings the bell of each participant whose bit is set in the inbox's
// spaceBells word.
func (r *Region) ringSpaceBells(hd *inboxHeader) {
	for m := hd.spaceBells.Load(); m != 0; m &= m - 1 {
		ring(r.bellOf(uint32(bits.TrailingZeros64(m)) + 1))
	}
}

// spaceBellBit is the bit of participant index i in a spaceBells word (0 if i >= 64: such a
// participant's producers poll for room).
func spaceBellBit(i uint32) uint64 {
	if i >= 64 {
		return 0
	}
	return 1 << i
}

// participantOf returns this process's Participant attached in slot s, or (s nil) the first
// attached, or nil if none is.
func (r *Region) participantOf(s *participantSlot) *Participant {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.parts {
		if p.slot == s || s == nil {
			return p
		}
	}
	return nil
}

// localOwner returns the Participant of this process that owns in (whose bell a producer
// rings for it), or nil.
func (r *Region) localOwner(in *Inbox) *Participant {
	owner := wordOwner(in.v.hdr.state.Load())
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.parts {
		if p.owner == owner {
			return p
		}
	}
	return nil
}
