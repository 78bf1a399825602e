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
// bellAwake. The leader stores bellAsleep, then reads the inboxes rung (below) that its
// waiters wait on, then sleeps while the bell is still bellAsleep. A waker first makes its
// change (commits a message, moves the head), then checks that a waiter is announced in the
// inbox's waiter word, marks the inbox rung, and only then reads the bell: if it is
// bellAsleep, the waker swaps it for bellAwake and calls FUTEX_WAKE. All of these are sequentially consistent atomics, so either the waker's read
// follows the leader's store (it swaps and wakes, or a waker before it did, and the futex
// compares the word in the kernel, so a swap just before the sleep makes the sleep return at
// once), or it precedes it and the leader's scan sees the change. No wake-up is lost, and
// while messages flow nobody announces a wait and nobody makes a system call.
//
// A process killed while its leader sleeps leaves its bell at bellAsleep: the first waker
// swaps it and makes one futex call, and every later one finds bellAwake and makes none. A
// reaper takes the dead process's announcements back (its inboxes are closed and their
// waiter words start again at zero; its space waits are in its slot's wait records, and
// undoWaits also clears its room bells), so nothing keeps ringing a dead bell.
//
// A participant's room bell in an inbox says that it has producers waiting for room there:
// bit i of the header's spaceBells for participant index i < 64, and for 64 and up a bit of
// the inbox's row of the bells section, which a consumer reads only when a producer is
// announced (and which is empty in a region of 64 participants or fewer).
const (
	bellAwake  = 0
	bellAsleep = 1
)

// bellWakes counts the FUTEX_WAKE calls rings made in this process (for tests).
var bellWakes atomic.Uint64

// The rung set. A leader that is rung must find the waiters whose condition now holds, and
// reading every parked waiter's inbox would make each ring cost as many inbox reads as there
// are parked subscriptions. So a waker first marks the inbox in the rung set of the
// participant whose bell it rings: bit idx%64 of word idx/64 of the participant's row of the
// rung section, then bit idx/64 of the rung summary in its slot, then rings. The leader, after
// storing bellAsleep, swaps the summary for zero, swaps each word it names for zero, and reads
// only the inboxes whose bits it took: a ring costs the inboxes that were rung, not the
// waiters parked. A mark made before the waker's read of the bell is taken by the leader's
// next swap, which follows the leader's store of bellAsleep (the same argument as for the
// bell: the waker's read follows the store and it rings, so the leader scans again; or it
// precedes it, and so does the mark). A mark that a waker finds set already is one the
// leader has not taken yet. Every value the leader takes from the set is bounds-checked
// against the region's config before it names an inbox, and it looks an inbox up only in
// its own table of waiters: a scribbled set costs visits of inboxes nobody rang, a
// scribble that clears it a wake-up late by up to longSleep, when the leader reads every
// waiter's inbox anyway (as it does when it faults). A dead waker leaves at most a mark
// and no ring: its change is seen by the leader's next scan (or the waiter's own
// re-check), as a dead waker's change always was.

// rungWords is the number of 64-bit words in one participant's row of the rung section, a bit
// per inbox. The summary's 64 bits cover a row of MaxInboxes inboxes.
func rungWords(inboxes uint32) uint64 { return (uint64(inboxes) + 63) / 64 }

var _ [64 - (MaxInboxes+63)/64]struct{} // a rung row is at most 64 words

// rungWord returns word k of participant i's row of the rung section (i < Participants,
// k < rungWords: the caller checks).
func (r *Region) rungWord(i uint32, k uint64) *atomic.Uint64 {
	return (*atomic.Uint64)(r.at(r.lay.sec.rung.off + (uint64(i)*rungWords(r.cfg.Inboxes)+k)*8))
}

// slotOf returns participant slot i (i < Participants: the caller checks).
func (r *Region) slotOf(i uint32) *participantSlot {
	return (*participantSlot)(r.at(r.participantOffset(i)))
}

// bellOf returns the bell of the participant whose index + 1 is owner, or nil if owner names
// no slot (a value read from the region is checked before it is used).
func (r *Region) bellOf(owner uint32) *atomic.Uint32 {
	if owner == 0 || owner > r.cfg.Participants {
		return nil
	}
	return &r.slotOf(owner - 1).bell
}

// ring wakes the leader sleeping on bell, if one is. Ringing a bell nobody sleeps on costs
// one read.
func ring(bell *atomic.Uint32) {
	if bell != nil && bell.Load() == bellAsleep && bell.CompareAndSwap(bellAsleep, bellAwake) {
		bellWakes.Add(1)
		futexWakeAll(bell)
	}
}

// ringFor marks inbox idx in the rung set of participant i, then rings i's bell. i and idx
// must be in range (the caller checks a value read from the region).
func (r *Region) ringFor(i, idx uint32) {
	s := r.slotOf(i)
	w, bit := r.rungWord(i, uint64(idx/64)), uint64(1)<<(idx%64)
	if w.Load()&bit == 0 {
		w.Or(bit)
	}
	if sum := uint64(1) << (idx / 64); s.rungSum.Load()&sum == 0 {
		s.rungSum.Or(sum)
	}
	ring(&s.bell)
}

// ringOwner marks the inbox rung for its owner and rings the owner's bell, if the owner read
// from the inbox's state word names a slot.
func (v *inboxView) ringOwner() {
	r := v.r
	if owner := wordOwner(v.hdr.state.Load()); owner != 0 && owner <= r.cfg.Participants {
		r.ringFor(owner-1, v.index)
	}
}

// ringSpaceBells marks the inbox rung for, and rings the bell of, each participant whose
// room bell is set in it: the bits of the header's spaceBells word (participants 0 to 63),
// then those of the inbox's row of the bells section (64 and up).
func (v *inboxView) ringSpaceBells() {
	r := v.r
	for m := v.hdr.spaceBells.Load(); m != 0; m &= m - 1 {
		if i := uint32(bits.TrailingZeros64(m)); i < r.cfg.Participants {
			r.ringFor(i, v.index)
		}
	}
	for k := range highBellWords(r.cfg.Participants) {
		for m := r.highBellWord(v.index, k).Load(); m != 0; m &= m - 1 {
			if i := 64*(k+1) + uint64(bits.TrailingZeros64(m)); i < uint64(r.cfg.Participants) {
				r.ringFor(uint32(i), v.index)
			}
		}
	}
}

// highBellWords is the number of 64-bit words in one inbox's row of the bells section: a bit
// per participant index of 64 and up (none in a region of at most 64 participants).
func highBellWords(participants uint32) uint64 { return (uint64(participants)+63)/64 - 1 }

// highBellWord returns word k of inbox idx's row of the bells section (idx < Inboxes,
// k < highBellWords: the caller checks).
func (r *Region) highBellWord(idx uint32, k uint64) *atomic.Uint64 {
	return (*atomic.Uint64)(r.at(r.lay.sec.bells.off + (uint64(idx)*highBellWords(r.cfg.Participants)+k)*8))
}

// roomBell returns the word and the bit that say participant i (i < Participants) waits for
// room in inbox idx: bit i of the header's spaceBells for i < 64, else a bit of the inbox's
// row of the bells section.
func (r *Region) roomBell(idx, i uint32) (*atomic.Uint64, uint64) {
	if i < 64 {
		return &r.inboxes[idx].hdr.spaceBells, 1 << i
	}
	return r.highBellWord(idx, uint64(i/64-1)), 1 << (i % 64)
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
