package shm

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// noteUnrecorded marks the region as having consumers that hold references nobody can see
// (TryPop, Pop): the orphan sweep, which frees buffers no record names, must then stay off.
func (r *Region) noteUnrecorded() {
	if r.hdr.unrecorded.Load() == 0 { // written once, not on every call
		r.hdr.unrecorded.Store(1)
	}
}

// take claims the oldest handle; used by the consumer and by evicting producers.
//
// A consumer that passes its held entry w (index idx) takes in four steps, each a single
// atomic store or compare-and-swap: the entry becomes "pending h"; the cell becomes "claimed
// into entry idx"; the entry becomes h; the cell becomes empty for the next lap. Whatever step
// a crash interrupts, a reaper finds the reference in exactly one place: a pending entry whose
// cell still holds h belongs to the cell; a claimed cell belongs to the entry it names; a
// pending entry whose cell is neither was evicted by a producer, which released it. Evicting
// producers (w == nil) claim straight to empty.
func (in *Inbox) take(w *atomic.Uint64, idx uint64) (Handle, bool, error) {
	return in.takeAs(w, idx, false)
}

// takeAs is take, quick or thorough. A quick take is for a consumer that waits when it finds
// nothing (popInto, TakeAny): a head cell empty for the head is taken at its word, without
// reading the tail. The tail tells an empty ring from a head cell scribbled empty over a
// message, but reading it brings the producer's tail line into this CPU's cache, and the
// producer's next compare-and-swap on the tail waits for the line to come back: a round trip
// paid that transfer on every message (docs/performance.md). The wait after a quick take reads
// the tail for it (pending: every tailEvery turns of its spin and before it sleeps), and the
// take after a wait is thorough, so a hidden message is still found and the cell repaired.
func (in *Inbox) takeAs(w *atomic.Uint64, idx uint64, quick bool) (Handle, bool, error) {
	hd := in.v.hdr
	foreign := 0
	repairs := 0
	repositioned := false
	for turns := 0; ; turns++ {
		if repairs > in.maxRepairs() || turns > maxTurns {
			if !repositioned && in.repairPositions() {
				repositioned, repairs = true, 0
				continue
			}
			return 0, false, in.wrecked()
		}
		step()
		h0 := hd.head.Load()
		c := in.cell(h0)
		step()
		v := c.Load()
		step()
		if hd.head.Load() != h0 {
			continue
		}
		if v&markBit == 0 {
			if v&parityBit != in.parity(h0) {
				// The handle of position h0+capacity: h0 was taken and the head lags. Then
				// the tail has reached h0+capacity; if it has not, the handle is scribbled.
				// The cell must still hold it after the tail is read: a scribble repaired
				// and filled for h0 meanwhile (which moves the tail too) is a message to take.
				step()
				if hd.tail.Load() >= h0+in.cap {
					step()
					if c.Load() != v {
						continue
					}
					step()
					if hd.head.CompareAndSwap(h0, h0+1) {
						wakeProducers(in.v)
					}
					continue
				}
				if !in.isOpen() {
					return 0, false, ErrClosed // the closer drains what is there
				}
				repairs++
				in.skip(c, v, h0)
				continue
			}
			// Handles carry no generation, so check that the ring is still the one this
			// Inbox names before and after claiming one: a producer holding a closed inbox
			// must not evict from the ring of the next subscriber to open that entry.
			step()
			if !in.isOpen() {
				return 0, false, ErrClosed
			}
			h := Handle(v &^ parityBit)
			if w != nil {
				// Ask for the buffer's first line (its header and first bytes, written by the
				// producer) now: it travels while the claim below waits for the cell's line,
				// instead of after it. Exclusive: the release writes the header.
				if _, s, _, err := in.v.r.decode(h); err == nil {
					prefetchWrite(unsafe.Pointer(s))
				}
				// The two stores into the entry are release stores (storeRelease): each is
				// followed by the cell's compare-and-swap with no load between, so they are
				// seen as if made atomically right before it.
				step()
				storeRelease(w, heldPending|uint64(h))
				step()
				if !c.CompareAndSwap(v, in.claimed(idx, h0)) {
					step()
					w.Store(heldReserved)
					continue
				}
				// The same handle can be in this cell again two laps later (a buffer pushed
				// twice): if the head moved since it was checked, the claim is of a later
				// position. Put it back.
				step()
				if hd.head.Load() != h0 {
					step()
					if c.CompareAndSwap(in.claimed(idx, h0), v) {
						step()
						w.Store(heldReserved)
						continue
					}
					// Close drained the cell meanwhile: the message is ours (below).
				}
				step()
				storeRelease(w, uint64(h))
				step()
				if !c.CompareAndSwap(in.claimed(idx, h0), in.empty(h0+in.cap)) {
					// Close drained the ring meanwhile; the message is ours all the same.
					return h, true, nil
				}
			} else {
				step()
				if !c.CompareAndSwap(v, in.empty(h0+in.cap)) {
					continue
				}
				step()
				if !in.isOpen() {
					// Closed (and perhaps reopened) between the check and the claim. Put
					// the handle back; if the closer has already drained the cell, the
					// handle is ours to release.
					step()
					if !c.CompareAndSwap(in.empty(h0+in.cap), v) {
						step()
						in.v.r.releaseDropped(h)
					}
					return 0, false, ErrClosed
				}
			}
			step()
			hd.head.CompareAndSwap(h0, h0+1)
			wakeProducers(in.v)
			return h, true, nil
		}
		step()
		switch {
		case v == in.empty(h0):
			if quick {
				return 0, false, nil
			}
			if t := hd.tail.Load(); t <= h0 {
				if h0 > t+in.cap && in.repairPositions() {
					continue // the head was scribbled past the tail
				}
				return 0, false, nil
			}
			// The tail moves past h0 only after h0 is filled, so the cell should not read
			// empty-for-h0 any more: re-read it, and if it still does, the message there was
			// overwritten. Skip it.
			step()
			if c.Load() != v {
				continue
			}
			if !in.isOpen() {
				return 0, false, ErrClosed
			}
			if in.repairPositions() {
				continue // the tail was scribbled far ahead
			}
			repairs++
			in.skip(c, v, h0)
			continue
		case v == in.empty(h0+in.cap):
			if hd.head.CompareAndSwap(h0, h0+1) {
				wakeProducers(in.v) // room, if the take that emptied the cell did not say so
			}
			continue
		case v&parityBit == 0 && v&cellGenBits != in.tag:
			if !in.isOpen() {
				return 0, false, ErrClosed
			}
			// A stale producer's marker, about to be put back (see above): wait briefly.
			if foreign++; foreign < foreignSpins {
				yield()
				continue
			}
		case v&parityBit != 0 && v&cellGenBits == in.tag:
			// Claimed: the consumer (another goroutine of it, if we are the consumer) is
			// taking this message, if the held entry the marker names says so; if not, the
			// marker is scribbled (skipped below). A take in progress is nobody's fault,
			// however long its goroutine stays descheduled: it is never counted.
			switch in.claimState(v, h0) {
			case claimHeld:
				// The entry holds the message already: the take has only to empty the cell
				// and move the head. Do that for it (its own compare-and-swap then fails,
				// and it returns the message it holds), and go on to the next message.
				in.finishClaim(c, v, h0)
				continue
			case claimPending:
				if foreign++; foreign < claimSpins {
					yield()
					continue
				}
				if w == nil {
					// An evicting producer does not wait on: the consumer is slow
					// (descheduled mid-take) or dead (then only the reaper finishes the
					// take). The new message is dropped instead.
					return 0, false, errClaimed
				}
				// The message is the other goroutine's, and nothing is ours to take until
				// its take is done (it moves the head).
				return 0, false, nil
			}
		}
		// In a ring being closed, an evicting producer may have put back a handle behind the
		// head (see the claim above): leave the cell to the closer, which drains it.
		if !in.isOpen() {
			return 0, false, ErrClosed
		}
		if in.repairPositions() {
			continue // not the cell: the head or the tail was scribbled
		}
		repairs++
		in.skip(c, v, h0)
	}
}

// errClaimed: the head cell stays claimed by a consumer that does not finish its take (slow
// or dead), so a drop-oldest producer cannot evict it.
var errClaimed = fmt.Errorf("%w: the oldest message is being taken by a consumer that does not finish", ErrFull)

// What a claimed marker in the head's cell stands for (see claimState).
const (
	claimScribbled = iota // no take: the marker is scribbled
	claimPending          // a take between its first and third steps: the entry is "pending h"
	claimHeld             // a take between its third and fourth steps: the entry holds h
)

// claimSpins bounds how long a producer or consumer waits for a take in progress that it
// cannot finish for the taker (claimPending) before it does something else: a take that is
// not descheduled finishes within a few instructions, and one that is may stay so for
// milliseconds, which a publisher must not wait out on every Send.
const claimSpins = 16

// claimState says what a claimed marker v in the cell of position pos stands for, from the
// held entry it names in the inbox owner's held list: a take in progress whose entry is
// pending, one whose entry holds the handle already (then the marker must name pos), or a
// scribble.
func (in *Inbox) claimState(v, pos uint64) int {
	step()
	owner := wordOwner(in.v.hdr.state.Load())
	idx := v & claimedIdxMask
	r := in.v.r
	if owner == 0 || owner > r.cfg.Participants || idx >= uint64(r.cfg.Held) {
		return claimScribbled
	}
	step()
	hv := r.heldWordAt(owner-1, uint32(idx)).Load()
	switch {
	case hv&heldReserved != 0 || hv&handleMask == 0:
		return claimScribbled
	case hv&heldPending != 0:
		return claimPending
	case (v>>16)&claimedPosMask == pos&claimedPosMask:
		return claimHeld
	}
	return claimScribbled
}

// finishClaim does the last two steps of a take whose held entry already holds the handle
// (claimHeld): the cell c of position pos becomes empty for the next lap and the head moves
// past pos. The taker's own compare-and-swap on the cell then fails, which tells it that the
// message it holds is its own all the same (see take). A reaper does the same for a taker
// that died there.
func (in *Inbox) finishClaim(c *atomic.Uint64, v, pos uint64) {
	hd := in.v.hdr
	step()
	if !c.CompareAndSwap(v, in.empty(pos+in.cap)) {
		return
	}
	step()
	hd.head.CompareAndSwap(pos, pos+1)
	wakeProducers(in.v)
}

// skip deals with a scribbled value v in the head's cell c: it is dropped and counted. If the
// ring is otherwise empty the cell becomes empty for h0 (with the tail at h0: done, empty for
// the next lap, see below); if not, the message at h0 was destroyed and the head moves past it.
func (in *Inbox) skip(c *atomic.Uint64, v, h0 uint64) {
	hd := in.v.hdr
	step()
	if t := hd.tail.Load(); t <= h0 {
		// Nothing committed at h0 as far as the tail says: make the cell ready for it. But
		// with the tail at h0, h0 may be done already (filled by a producer that has not
		// moved the tail, taken by a consumer that has not moved the head, then scribbled):
		// made ready for h0, it would be filled again behind the head that consumer is about
		// to move. Mark it done instead; a position never filled is skipped (see push).
		pos := h0
		if t == h0 {
			pos = h0 + in.cap
		}
		in.repair(c, v, pos)
		return
	}
	step()
	if c.CompareAndSwap(v, in.empty(h0+in.cap)) {
		hd.corrupt.Add(1)
		hd.skipped.Add(1)
		in.v.r.hdr.corrupt.Add(1)
		step()
		if hd.head.CompareAndSwap(h0, h0+1) {
			wakeProducers(in.v) // the skip made room: a Block producer may be asleep on it
		}
	}
}
