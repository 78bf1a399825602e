package shm

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// push is Push and Deliver: with ref set, a reference is added to ref's state word right
// before each attempt to commit h, and dropped again if the attempt fails. With owner set as
// well (hand-off mode, see handoff.go), ref is a loan of owner's whose only reference goes to
// the cell: the owner is cleared right before each attempt and set again if it fails, so push
// returns nil exactly when the loan has ended into the cell. The caller's hand-off word names
// h throughout.
func (in *Inbox) push(ctx context.Context, h Handle, ref *slotHeader, owner uint32) error {
	hd := in.v.hdr
	var deadline time.Time
	foreign := 0
	repairs := 0
	for turns := 0; ; turns++ {
		if turns > maxTurns {
			return in.wrecked()
		}
		step()
		t := hd.tail.Load()
		c := in.cell(t)
		step()
		v := c.Load()
		if v == in.empty(t) {
			// The marker keeps only 14 bits of the generation: check the whole of it, after
			// the tail was read, so that an Inbox kept across 16,384 reopenings of its entry
			// cannot fill a cell of the ring that holds it now. (The state word's line is
			// written only when the inbox opens or closes: reading it costs no transfer.)
			step()
			if !in.isOpen() {
				return ErrClosed
			}
			// The tail again, after the cell: a producer whose t is old (it read the tail, then
			// waited) may find the empty marker of its t in a cell that a later lap owns, if
			// another process wrote that marker there; committed, its message would sit in the
			// ring under a position long past, and a consumer could take it laps later, after
			// messages sent after it. Once the tail has moved past t, position t was filled, so
			// the marker is not ours to fill. (The tail's line is the producers': this is a read
			// of a line just read.)
			step()
			if hd.tail.Load() != t {
				continue
			}
			if owner != 0 {
				step()
				if err := in.v.r.handOff(ref, h, owner); err != nil {
					return err
				}
				if testHookHandedOff != nil {
					testHookHandedOff(h)
				}
			} else if ref != nil {
				step()
				if err := in.v.r.addRefs(ref, h, 1); err != nil {
					return err
				}
			}
			step()
			if !c.CompareAndSwap(v, uint64(h)|in.parity(t)) {
				if err := in.takeBack(h, ref, owner); err != nil {
					return err
				}
				continue
			}
			step()
			if !hd.tail.CompareAndSwap(t, t+1) {
				// Someone moved the tail on: a producer that saw our handle (helping), or,
				// if the head is past t, a scribble had made a finished position look
				// empty, and our message is behind the head, where nobody would take it.
				step()
				if hd.head.Load() > t {
					step()
					if c.CompareAndSwap(uint64(h)|in.parity(t), in.empty(t+in.cap)) {
						if err := in.takeBack(h, ref, owner); err != nil {
							return err
						}
						hd.corrupt.Add(1)
						in.v.r.hdr.corrupt.Add(1)
						continue // taken back: push again
					}
				}
			}
			wakeConsumer(in.v)
			return nil
		}
		step()
		if hd.tail.Load() != t {
			continue // t is stale; what we read may belong to a later position
		}
		// The cell is not empty for t. What it may hold depends on the head: a head past t
		// proves position t is done (the tail lags); a head past t-capacity proves the message
		// of the previous lap is gone. The head is read after the cell, so it may be newer than
		// what the cell shows; where a conclusion needs the head as it was before the cell was
		// read, the cell is read again and must not have changed.
		step()
		hn := hd.head.Load()
		if (hn > t+in.cap || t > hn+2*in.cap+2) && in.repairPositions() {
			continue // head and tail were scribbled apart: put back where the cells agree
		}
		if hn > t {
			// The consumer has gone past t, so t was filled (and taken): the tail lags. Help
			// it, whatever the cell holds.
			step()
			hd.tail.CompareAndSwap(t, t+1)
			continue
		}
		prevGone := t-hn < in.cap // by now; not necessarily when the cell was read
		step()
		switch {
		case v&markBit == 0: // a handle
			if v&parityBit == in.parity(t) {
				// Filled for t by a producer that has not advanced the tail yet: help it, if
				// the word is a handle at all (a scribbled one is repaired below).
				if _, _, _, err := in.v.r.decode(Handle(v &^ parityBit)); err == nil {
					step()
					hd.tail.CompareAndSwap(t, t+1)
					continue
				}
			} else if !prevGone {
				// The message of position t-capacity (the head had not passed it when the
				// cell was read, since it has not now): the ring is full.
				if t-hn > 2*in.cap+1024 {
					return in.wrecked() // head and tail scribbled too far apart
				}
				if err := in.full(ctx, &deadline, &turns, ref); err != nil {
					return err
				}
				continue
			}
			// Otherwise it was taken since the read, or no handle can be here (below).
		case v&parityBit == 0 && v&cellGenBits != in.tag:
			if !in.isOpen() {
				return ErrClosed
			}
			// Our generation is open, yet the cell has another's marker: a stale producer is
			// about to put back a handle it took by mistake (see take). Wait for it, briefly.
			if foreign++; foreign < foreignSpins {
				yield()
				continue
			}
		case v&parityBit == 0 && v&posMask == (t+in.cap)&posMask && (hn >= t || in.takenRun(hn, t)):
			// Position t was filled and already taken (a take of t writes this marker, and
			// happens only once the head has reached t, or in a batch once every cell from
			// the head to t is taken: ringrun.go); the tail lags. Otherwise the marker is
			// scribbled (below).
			step()
			hd.tail.CompareAndSwap(t, t+1)
			continue
		case v&parityBit != 0 && v&cellGenBits == in.tag:
			// Claimed by a consumer: the take of t-capacity (the ring is full) or of t (t was
			// filled; the tail lags).
			if prevGone {
				// A claim is made at the head. If the cell still shows it now that the head
				// is past t-capacity, it is the take of t.
				step()
				if c.Load() == v {
					step()
					hd.tail.CompareAndSwap(t, t+1)
				}
				continue
			}
			// The head had not passed t-capacity when the cell was read: the consumer is
			// taking the message of t-capacity, and the ring is full for a moment more. If
			// the take has only its last steps left, do them for it; otherwise wait for it
			// briefly (an evicting take waits in its turn), then apply the policy.
			switch in.claimState(v, t-in.cap) {
			case claimHeld:
				in.finishClaim(c, v, t-in.cap)
				continue
			case claimPending:
				if foreign++; foreign < claimSpins && in.policy != DropOldest {
					yield()
					continue
				}
			}
			if err := in.full(ctx, &deadline, &turns, ref); err != nil {
				return err
			}
			foreign = 0
			continue
		}
		// A value that cannot be at this position: scribbled (if the cell still holds it).
		// If no message of the previous lap belongs in this cell, make it empty for t and go
		// on; otherwise the consumer, or an evicting producer, deals with it when it gets
		// there. In a ring being closed, an evicting producer may have put back a handle
		// behind the head (see take): the closer drains and releases it, so leave it.
		step()
		if c.Load() != v {
			continue
		}
		if !in.isOpen() {
			return ErrClosed
		}
		if prevGone { // the head was past t-capacity before the cell was read again
			// With the head at t, position t may already be done: filled by a producer that
			// has not moved the tail yet, and taken by a consumer that has not moved the
			// head yet, before the scribble. Made empty for t, it would be filled again and
			// the consumer's head move would then leave that message behind the head, where
			// nobody takes it. So mark it done instead (empty for the next lap): everyone
			// passes it. Nothing is lost that the scribble had not destroyed already; a
			// position never filled is skipped. A batched take goes past the head (ringrun.go):
			// with every cell from the head to t taken, it may have taken t too, and moves the
			// head past t at the end of its line.
			pos := t
			if hn == t || in.takenRun(hn, t) {
				pos = t + in.cap
			}
			if in.repair(c, v, pos) {
				if repairs++; repairs > in.maxRepairs() {
					return in.wrecked()
				}
			}
			continue
		}
		if in.policy != DropNewest {
			if err := in.full(ctx, &deadline, &turns, ref); err != nil {
				return err
			}
			continue
		}
		// The cell stays as it is until the consumer gets there: count it once, not at every
		// push that meets it.
		in.v.countDamage(damageKey(1, v, t))
		return errCellCorrupt
	}
}

// takeBack undoes what push did for an attempt to commit h that failed or was taken back
// from behind the head: in hand-off mode the reference returns to the loan; with ref set the
// reference added for the cell is dropped (the caller's keeps the buffer).
func (in *Inbox) takeBack(h Handle, ref *slotHeader, owner uint32) error {
	switch {
	case owner != 0:
		step()
		return in.v.r.reOwn(ref, h, owner)
	case ref != nil:
		step()
		in.v.r.releaseDropped(h)
	}
	return nil
}

// repair replaces a scribbled value v in cell c, which must be empty for position pos, and
// counts it. The compare-and-swap makes it a no-op if the cell changed since v was read.
func (in *Inbox) repair(c *atomic.Uint64, v, pos uint64) bool {
	step()
	if c.CompareAndSwap(v, in.empty(pos)) {
		in.v.hdr.corrupt.Add(1)
		in.v.r.hdr.corrupt.Add(1)
		return true
	}
	return false
}

var errCellCorrupt = fmt.Errorf("%w: inbox cell holds an impossible value", ErrCorrupt)

// full applies the overflow policy. A nil return means: try again. A Block producer woken
// with room that the head made (the consumer's progress, not a turn of the caller's loop) has
// its turns reset: only a loop over unchanging state is bounded by maxTurns.
func (in *Inbox) full(ctx context.Context, deadline *time.Time, turns *int, ref *slotHeader) error {
	hd := in.v.hdr
	if !in.isOpen() {
		return ErrClosed // a ring being closed looks full for a moment: not a drop
	}
	switch in.policy {
	case DropNewest:
		hd.dropNewest.Add(1)
		return ErrFull
	case Block:
		if deadline.IsZero() {
			*deadline = time.Now().Add(in.block)
			if in.block == 0 {
				*deadline = time.Unix(1<<40, 0)
			}
			if d, ok := ctx.Deadline(); ok && d.Before(*deadline) {
				*deadline = d
			}
		}
		h0 := hd.head.Load()
		if err := in.waitSpace(ctx, *deadline, ref); err != nil {
			hd.dropTimeout.Add(1)
			if err == ErrTimeout || err == ErrClosed {
				return err
			}
			return fmt.Errorf("%w: %w", ErrTimeout, err) // the context's error, as a timeout
		}
		if hd.head.Load() != h0 {
			*turns = 0
		}
		if testHookBlockWoken != nil {
			testHookBlockWoken()
		}
		return nil
	default: // DropOldest
		rec := in.evictRecord(ref) // see evictRecord: a kill from here on counts the drop
		h, ok, err := in.take(nil, 0)
		if ok && testHookEvicted != nil {
			testHookEvicted()
		}
		if ok {
			hd.dropOldest.Add(1)
		}
		if rec != nil {
			leaveWait(rec)
		}
		if err != nil {
			if err == errClaimed {
				hd.dropNewest.Add(1)
			}
			return err
		}
		if ok {
			step()
			in.v.r.releaseDropped(h)
		}
		return nil
	}
}

// testHookEvicted, if set, runs in an evicting producer between taking the oldest message and
// counting it: a test kills the producer there.
var testHookEvicted func()

// releaseDropped releases a handle taken out of a ring by someone other than a consumer; a
// handle that does not decode is counted, not dereferenced. A buffer found already free (or
// freed and reused) is not counted: the orphan sweep may have freed it while our reference was
// on its way to this release (see Region.Reap).
func (r *Region) releaseDropped(h Handle) {
	switch err := r.release(h); err {
	case nil:
	case errHandleFree, errHandleStale:
		if testHookReleaseSwept != nil {
			testHookReleaseSwept(h)
		}
	default:
		r.hdr.corrupt.Add(1)
	}
}

// testHookBlockWoken, if set, runs when a Block producer's wait for room ends with room.
var testHookBlockWoken func()

// testHookReleaseSwept, if set, runs when a release finds its buffer already freed by a sweep
// (or freed twice by a faulty process): tests count the sweeps that raced a release.
var testHookReleaseSwept func(h Handle)
