package shm

import (
	"sync/atomic"
	"unsafe"
)

// A batched take moves the head once per line of cells rather than once per message.
//
// After the first message of a batch (a take as take does it, which leaves the head just past
// it), TakeBatchInto takes the following ones with takeNext at a position of its own, pos,
// leaving the head where it was, and moves the head to pos with advanceHead once every
// headEvery positions and when the batch ends. Between two moves the head lags behind cells
// the consumer has emptied (each holds "empty for the next lap") by fewer than headEvery
// positions. Everyone already copes with one such cell, the head's own, since a take empties
// its cell before it moves the head; the lag makes it a run:
//
//   - a take at the lagging head (a second goroutine of the consumer, an evicting producer)
//     finds its cell empty for the next lap and moves the head past it, as always;
//   - a producer fills a cell once it is empty for the producer's position, whatever the head
//     says; one that finds its tail's cell already taken while the head is short of the tail
//     (the tail lags, and the batch took the message there) helps the tail if every cell from
//     the head on is taken too (takenRun), and takes the cell for a scribble otherwise; one
//     that repairs a scribbled cell at its tail marks the position done if the head is at the
//     tail or every cell from the head on is taken, since the batch may have taken it (push);
//   - the tail stays within capacity + headEvery of the head, inside what positionsDamaged
//     allows (2 × capacity + 2), and misfits counts a run of taken cells after a head as fitting
//     it;
//   - a consumer killed in a run leaves a claimed marker fewer than headEvery positions past
//     the head: the reaper finishes a half-done take at each of those cells (reapSlot).
//
// The head's line then moves between the consumer and a producer waiting for room once per
// headEvery messages instead of once per message, and the consumer makes one locked
// instruction fewer for each of the others (docs/performance.md, "Issue 15, eighth round").
// A head moved once per batch was measured in the sixth round and not kept: a producer that
// finds the ring full sleeps until the head moves (waitSpace), and with the head a whole batch
// behind, the two sides took turns instead of overlapping. Eight takes (about half a
// microsecond) end well within a producer's brief spin for room (waitSpace's 64 yields), so a
// producer waiting for a line need not go to sleep.

// takeRun is a batched take between its messages: the position of the next one, and whether
// the head has been moved to it.
type takeRun struct {
	in    *Inbox
	pos   uint64
	every uint64
	moved bool
}

// startRun begins a run after a take at the head, which moved the head past its message.
func (in *Inbox) startRun() takeRun {
	step()
	return takeRun{in: in, pos: in.v.hdr.head.Load(), every: in.headEvery(), moved: true}
}

// next takes the run's next message into held entry w (index idx): with takeNext if the run's
// position holds a plain message of its lap, and otherwise, with the head brought to the run's
// position, as take does (which copes with everything else, and may find nothing: false, nil).
func (r *takeRun) next(w *atomic.Uint64, idx uint64) (Handle, bool, error) {
	if h, ok := r.in.takeNext(w, idx, r.pos); ok {
		r.moved = false
		if r.pos++; r.pos&(r.every-1) == 0 { // every is a power of two
			r.end()
		}
		return h, true, nil
	}
	r.end()
	h, ok, err := r.in.take(w, idx)
	if ok && err == nil {
		step()
		r.pos = r.in.v.hdr.head.Load() // the take moved it past its message
	}
	return h, ok, err
}

// end moves the head to the run's position if the run has gone past it: at every headEvery
// positions, and when the batch ends.
func (r *takeRun) end() {
	if !r.moved {
		r.in.advanceHead(r.pos)
		r.moved = true
	}
}

// headEvery is how many positions a batched take goes past the head before it moves it: a
// line of cells (eight 8-byte cells), at most half the ring, at least one.
func (in *Inbox) headEvery() uint64 { return max(1, min(8, in.cap/2)) }

// takeNext takes the message at pos, a position at or past the head (by less than headEvery)
// whose earlier cells this consumer has emptied, into held entry w (index idx), in take's four
// steps, and does not move the head. It reports false, having changed nothing, if the cell
// does not hold a message of pos's lap or someone else's step comes between: the caller moves
// the head to pos (advanceHead) and takes as take does, which copes with everything else.
func (in *Inbox) takeNext(w *atomic.Uint64, idx, pos uint64) (Handle, bool) {
	hd := in.v.hdr
	c := in.cell(pos)
	step()
	v := c.Load()
	if v&markBit != 0 || v&parityBit != in.parity(pos) {
		return 0, false
	}
	// The inbox must still be the one this Inbox names (see take).
	step()
	if !in.isOpen() {
		return 0, false
	}
	h := Handle(v &^ parityBit)
	if _, s, _, err := in.v.r.decode(h); err == nil {
		prefetchWrite(unsafe.Pointer(s)) // see take
	}
	step()
	storeRelease(w, heldPending|uint64(h))
	step()
	if !c.CompareAndSwap(v, in.claimed(idx, pos)) {
		step()
		w.Store(heldReserved)
		return 0, false
	}
	// A message of pos's lap with the head not past pos is the message of pos: the tail is
	// within capacity + headEvery of the head. The head past pos (an evicting producer, or a
	// second goroutine of the consumer, moved it on) means the cell may hold a later lap's
	// message of the same parity: put it back, as take does.
	step()
	if hd.head.Load() > pos {
		step()
		if c.CompareAndSwap(in.claimed(idx, pos), v) {
			step()
			w.Store(heldReserved)
			return 0, false
		}
		// Closed and drained, or finished for us (finishClaim): the message is ours.
	}
	step()
	storeRelease(w, uint64(h))
	step()
	// If this fails, the closer drained the cell or a helper finished the take (finishClaim,
	// which also moved the head past pos): the message is ours all the same.
	c.CompareAndSwap(in.claimed(idx, pos), in.empty(pos+in.cap))
	return h, true
}

// takenRun reports whether the cells of positions from to to-1 (fewer than headEvery) have all
// been taken: a batch's lag (see push). A cell taken from position q is ready for q+capacity,
// and stays so while the tail is short of that, so the answer holds as long as the tail the
// caller judges by.
func (in *Inbox) takenRun(from, to uint64) bool {
	if to-from >= in.headEvery() {
		return false
	}
	for q := from; q < to; q++ {
		step()
		if in.cell(q).Load() != in.empty(q+in.cap) {
			return false
		}
	}
	return true
}

// advanceHead moves the head on to pos, the position after the last message a batched take
// took, if it is behind it: cells before pos are all done (emptied by this consumer or
// passed by others). A head already at or past pos is left alone; so is one more than a ring
// behind it, which is damaged, and which the next take repairs.
func (in *Inbox) advanceHead(pos uint64) {
	hd := in.v.hdr
	for {
		step()
		h := hd.head.Load()
		if h >= pos || h+in.cap < pos {
			return
		}
		step()
		if hd.head.CompareAndSwap(h, pos) {
			wakeProducers(in.v)
			return
		}
	}
}
