package shm

import (
	"sync/atomic"
)

// The hand-off: a send to one inbox gives the loan's own reference to the ring cell, instead
// of adding a reference for the cell and ending the loan after the delivery.
//
// A send with several targets (or a history) adds a reference per target right before the
// target's cell commits, and drops the loan's reference last: the buffer is owned by the loan
// throughout, so a crash at any instruction leaves the loan for a reaper to end. That last
// step, the end of the loan, is a compare-and-swap on the buffer's state word after the
// subscriber may already have the message: in a stream whose subscriber keeps up, the
// subscriber has by then asked for the buffer's line (to read the message and release it),
// and the publisher's compare-and-swap takes it back, once per message, each time waiting for
// the transfer (docs/performance.md, "Issue 15, fifth round").
//
// With one target there is nothing to add a reference for: the loan's reference can become
// the cell's. The state word's owner is cleared (the loan ends, its reference stays) right
// before the cell's compare-and-swap, and the publisher does not touch the buffer again. For
// the few instructions between the two, the reference is in no record the sweep reads (not a
// loan, not yet in a cell), so a sweep could take the buffer for an orphan if the publisher
// stalled there across two sweeps. The hand-off word closes that gap: before clearing the
// owner the publisher stores the handle into one of its participant's hand-off words, which
// the sweep reads before the ring cells (a reference moves from the word to a cell and then to
// a held entry, the order of the sweep's reads). A word is left naming the last handle handed
// off until its sender is done; a stale word only spares a buffer whose generation it names.
//
// If the cell's compare-and-swap fails, the publisher takes the reference back into its loan
// (sets the owner again) before it does anything else: every slow path of a push (a full
// ring's policy, a wait for room, repairs) runs with the loan owned, as a send to several
// targets does. A push in hand-off mode therefore returns nil exactly when the reference went
// to the cell and the loan is over; on any error the loan is still the caller's to end.
//
// The word's store must be seen before the owner is cleared: a batch rewrites its word with
// storeRelease before each hand-off, and the hand-off is a compare-and-swap, a locked
// instruction that on amd64 drains the store buffer first (elsewhere storeRelease is an atomic
// store). Loads in between (a push reads the tail and the cell) do not matter.
//
// A participant has handoffWords words (one cache line, written only by its own process) and
// a sender takes a free one with a compare-and-swap from 0 to its first handle; with every
// word taken (as many sends at once in one process) a send uses the classic path. A reaper
// zeroes a dead participant's words after ending its loans: a reference it handed off and had
// not committed is then in no record, and the sweep frees it, as it does a reference a
// publisher killed between adding it and committing the cell leaves. Detach, a new
// participant's attach and an audit zero words too (only a scribble leaves one set).

// handoffWords is the number of hand-off words of a participant: one cache line.
const handoffWords = 8

// handoffWord returns hand-off word k of participant i.
func (r *Region) handoffWord(i uint32, k int) *atomic.Uint64 {
	return (*atomic.Uint64)(r.at(r.lay.sec.handoff.off + (uint64(i)*handoffWords+uint64(k))*8))
}

// takeHandoff takes a free hand-off word of p for a send whose first handle is h, or returns
// nil if every word is taken.
func (p *Participant) takeHandoff(h Handle) *atomic.Uint64 {
	k0 := int(p.handoffHint.Load())
	for d := range handoffWords {
		k := (k0 + d) % handoffWords
		w := p.r.handoffWord(p.idx, k)
		if w.Load() == 0 && w.CompareAndSwap(0, uint64(h)) {
			if d != 0 {
				p.handoffHint.Store(uint32(k))
			}
			return w
		}
	}
	return nil
}

// giveHandoff gives the word back once the send no longer hands anything off. (A plain store
// on amd64: it follows the send's last compare-and-swap, and x86 keeps stores in order.)
func giveHandoff(w *atomic.Uint64) { storeRelease(w, 0) }

// handOff ends the loan of the buffer s (handle h, on loan to owner) and leaves its reference
// in place for the ring cell about to be committed: it clears the owner in the state word. The
// caller has stored h into its hand-off word before. It fails with ErrBadHandle if the state
// word does not name the loan (scribbled).
func (r *Region) handOff(s *slotHeader, h Handle, owner uint32) error {
	want := h.gen()<<genShift | uint64(owner)<<ownerShift | 1 // the loan's own reference only
	if s.state.CompareAndSwap(want, want&^ownerMask) {
		return nil
	}
	for {
		v := s.state.Load()
		if err := checkOwner(v, h, owner); err != nil {
			return err
		}
		if s.state.CompareAndSwap(v, v&^ownerMask) {
			return nil
		}
	}
}

// reOwn takes back a reference handed off for a cell that was not committed (or was taken back
// from behind the head): it sets the owner again, so that the loan holds it. Only the hand-off
// word names the reference in between, so nobody else may have freed it; a state word that
// says otherwise was scribbled (ErrBadHandle).
func (r *Region) reOwn(s *slotHeader, h Handle, owner uint32) error {
	for {
		v := s.state.Load()
		if err := checkOwner(v, h, 0); err != nil {
			return err
		}
		if s.state.CompareAndSwap(v, v|uint64(owner)<<ownerShift) {
			return nil
		}
	}
}

// clearHandoff zeroes the hand-off words of participant i, which is dead (see reapSlot).
func (r *Region) clearHandoff(i uint32) {
	for k := range handoffWords {
		r.handoffWord(i, k).Store(0)
	}
}

// testHookHandedOff, if set, runs in a push in hand-off mode between the hand-off (the owner
// cleared) and the cell's compare-and-swap: a test stalls or kills the publisher there.
var testHookHandedOff func(h Handle)

// SetTestHookHandedOff sets the hook a send to one inbox runs between handing its loan's
// reference off and committing the cell (nil removes it). It is for tests in other packages
// that kill a publisher there; it is not safe to call while sends are running.
func SetTestHookHandedOff(fn func()) {
	if fn == nil {
		testHookHandedOff = nil
		return
	}
	testHookHandedOff = func(Handle) { fn() }
}
