package shm

import (
	"fmt"
	"math/bits"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// A ring cell is one 64-bit word holding either a handle or a marker:
//
//	bit 63 = 0: a handle; bit 62 is the lap parity of its position ((pos / capacity) & 1)
//	bit 63 = 1, bit 62 = 0: empty, ready for position pos (bits 0-47) of generation gen (48-61)
//	bit 63 = 1, bit 62 = 1: claimed by the consumer into held entry (bits 0-15) for position
//	(its low 32 bits in bits 16-47) of generation gen (48-61) (see take)
//
// A marker keeps the low 14 bits of the entry's 40-bit generation. That is enough to tell the
// rings of two generations apart inside a cell; a producer checks the whole generation in the
// state word before it commits (see push), so an Inbox kept across 16,384 reopenings still
// finds its generation closed.
//
// Producers fill a cell with one compare-and-swap from "empty for position t" to the handle,
// then advance the tail; the consumer takes with one compare-and-swap from the handle to
// "empty for position h+capacity", then advances the head. The cell is the commit point, and
// any process that finds the tail or head lagging behind a committed cell advances it, so a
// process killed between the two steps never stalls the others. The generation in the empty
// marker makes a producer that still holds a closed (and perhaps reused) inbox fail instead of
// delivering into a stranger's ring; positions keep counting across reuses for the same reason.
const (
	markBit     = 1 << 63
	parityBit   = 1 << 62
	posMask     = 1<<48 - 1
	cellGenMask = 1<<14 - 1         // the generation bits a marker keeps
	cellGenBits = cellGenMask << 48 // where it keeps them
)

// cellGen returns the generation bits of a marker.
func cellGen(v uint64) uint64 { return v >> 48 & cellGenMask }

func (in *Inbox) cell(pos uint64) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Add(in.v.cells, (pos&in.mask)*8))
}

func (in *Inbox) empty(pos uint64) uint64 { return markBit | in.tag | pos&posMask }
func (in *Inbox) parity(pos uint64) uint64 {
	return (pos >> in.shift & 1) << 62
}

// claimed is the marker of a take of position pos into held entry idx. The position (its low
// 32 bits) makes markers of different takes into the same entry differ, so that a process that
// read a claim long ago cannot mistake a later one for it.
func (in *Inbox) claimed(idx, pos uint64) uint64 {
	return markBit | parityBit | in.tag | (pos&claimedPosMask)<<16 | idx&claimedIdxMask
}

const (
	claimedIdxMask = 1<<16 - 1 // Config.Held is at most 1<<16
	claimedPosMask = 1<<32 - 1
)

// maxTurns bounds the turns of one Push or take, whatever they are: far more than any
// contention needs (each lost turn is someone else's progress), and few enough that a loop over
// values scribbled into a consistent-looking but impossible state ends within milliseconds.
var maxTurns = 1 << 20 // a variable only so that tests can lower it

// maxRepairs bounds how many scribbled cells one Push or take repairs or skips before it
// gives up on the ring. Every other turn of their loops follows someone else's progress (a lost
// compare-and-swap, a head or tail moved on); repairs are the turns that could go on for 2^64
// positions if the head and tail were scribbled far apart.
func (in *Inbox) maxRepairs() int { return 2*int(in.cap) + 64 }

// wrecked counts and reports a ring whose positions or cells are too damaged to use. The same
// damage (the same head and tail) is counted once, however many calls give up on it.
func (in *Inbox) wrecked() error {
	in.v.countDamage(damageKey(2, in.v.hdr.head.Load(), in.v.hdr.tail.Load()))
	return errRingWrecked
}

// countDamage counts damage that stays where it was found, and that every push or take (in
// every process) would otherwise count again each time it meets it: an impossible cell a
// producer cannot repair, a ring given up on, an impossible inbox header. The inbox remembers
// the last such damage it counted (key: what was damaged, and how) and does not count it again.
// Damage that is repaired where it is found (a cell made empty, a message skipped, positions
// put back) is counted by whoever repairs it, once, since it is gone afterwards.
func (v *inboxView) countDamage(key uint64) {
	hd := v.hdr
	if hd.noted.Load() == key || hd.noted.Swap(key) == key {
		return
	}
	hd.corrupt.Add(1)
	v.r.hdr.corrupt.Add(1)
}

// damageKey names one damage for countDamage: its kind and two words that say where and what.
func damageKey(kind, a, b uint64) uint64 {
	return (a*0x9e3779b97f4a7c15 ^ bits.RotateLeft64(b, 29)*0xbf58476d1ce4e5b9) + kind<<60 | 1
}

var errRingWrecked = fmt.Errorf("%w: inbox positions or cells damaged beyond repair", ErrCorrupt)

// foreignSpins bounds the wait for a stale producer to put back a handle it claimed by mistake;
// a foreign marker that stays longer is corruption.
const foreignSpins = 1 << 10

// yield lets another goroutine run while push or take waits for someone else's step.
func yield() {
	if testHookYield != nil {
		testHookYield()
	}
	runtime.Gosched()
}

// misfitCells is how many cells misfits reads at most: enough to tell two positions apart
// (each cell that names a position tells them apart at once, each message by one bit) without
// reading a ring of a million cells.
const misfitCells = 64

// misfits counts the cells that do not fit the head at from (asHead: the positions from, from
// +1, … are the ring's) or the tail at from (the positions before it are), reading at most
// misfitCells cells next to it. After the head a cell holds a message of its lap, a claimed
// marker for its position, or is ready for its position (the cell of the head itself, and in a
// batch those of fewer than headEvery positions after it, may also have been taken by a
// consumer that has not yet moved the head: ringrun.go); before the tail a cell
// holds a message of its lap or a claimed marker, or was taken from its position, ready for
// the next lap (the cell of the tail's own position, which is that of the oldest one, may
// also hold the message of a producer that has not yet moved the tail).
func (in *Inbox) misfits(from uint64, asHead bool) int {
	n := min(in.cap, misfitCells)
	bad := 0
	taken := asHead // the run of taken cells from the head on, so far
	for k := range n {
		q, edge := from+k, k == 0
		if !asHead {
			// The cell of the oldest position before the tail is also the cell of the
			// tail's own position.
			q, edge = from-n+k, k == 0 && n == in.cap
		}
		step()
		v := in.cell(q).Load()
		taken = taken && k < in.headEvery() && v == in.empty(q+in.cap)
		var fits bool
		switch {
		case v&markBit == 0: // a message
			fits = v&parityBit == in.parity(q) || edge && !asHead && v&parityBit == in.parity(q+in.cap)
		case v&parityBit != 0: // a claimed marker
			fits = v&cellGenBits == in.tag && (v>>16)&claimedPosMask == q&claimedPosMask
		case asHead:
			fits = v == in.empty(q) || taken
		default:
			fits = v == in.empty(q+in.cap)
		}
		if !fits {
			bad++
		}
	}
	return bad
}

// testHookYield, if set, runs at every yield: tests count how long a push or take waits.
var testHookYield func()

// positionsDamaged reports whether the head and the tail are further apart than the protocol
// ever leaves them: the head at most one past the tail (a producer that died between filling
// a cell and moving the tail), the tail at most capacity + headEvery past the head (a consumer
// that died between emptying cells and moving the head, in a batch: ringrun.go; headEvery is
// at most half the capacity). It allows more, for values read at different instants;
// repairPositions decides on values of one instant.
func (in *Inbox) positionsDamaged() bool {
	h, t := in.v.hdr.head.Load(), in.v.hdr.tail.Load()
	return h > t+in.cap || t > h+2*in.cap+2
}

// repairPositions puts back a head or tail that was scribbled far from the other (see
// positionsDamaged), counting the damage once: without it, producers and the consumer would
// walk one position at a time towards each other for up to 2^48 positions, or give up on
// every call, and the consumer would hear nothing. Of the two, it keeps the one that the ring's
// cells agree with best and moves the other to it (a head moved forward stops capacity short
// of the tail, below): the cells after the head must hold messages of their lap or be ready
// for their position, the cells before the tail must hold messages of their lap or have been
// taken (see misfits). A cell ready for a position or taken from one names the position (48
// bits); a cell with a message says only the parity of its lap, so one cell alone, which is
// what this judged by before, was wrong for a head scribbled back by a multiple of two laps
// onto a message of the right parity (the checker, seed 3). If the cells do not decide, the
// one that the cell at the lower position agrees with is kept. Messages that were in the ring when
// it was damaged may be lost (their cells are repaired, and counted, when the next lap finds
// them); those pushed afterwards arrive. It reads the head before and after the tail, so that
// it judges values of one instant, and changes them with a compare-and-swap, so a head or tail
// that moved meanwhile is left alone. It reports whether it changed anything.
func (in *Inbox) repairPositions() bool {
	hd := in.v.hdr
	step()
	h := hd.head.Load()
	step()
	t := hd.tail.Load()
	step()
	if hd.head.Load() != h || !(h > t+in.cap || t > h+2*in.cap+2) {
		return false
	}
	lo := min(h, t)
	step()
	v := in.cell(lo).Load()
	loAgrees := v == in.empty(lo) || v == in.empty(lo+in.cap) || v&markBit == 0 && v&parityBit == in.parity(lo) ||
		v&(markBit|parityBit) == markBit|parityBit && v&cellGenBits == in.tag && (v>>16)&claimedPosMask == lo&claimedPosMask
	keepTail := loAgrees == (h > t)
	if hm, tm := in.misfits(h, true), in.misfits(t, false); hm != tm {
		keepTail = tm < hm
	}
	var ok bool
	if keepTail {
		// The head moves: back to the tail, or on towards a tail far ahead of it. Forward, it
		// stops capacity short of the tail: every message the ring can hold is at a position
		// in [t-capacity, t), and one committed there after the damage (by a producer that
		// put the tail back first) would be stranded behind a head moved to t. Cells there
		// that hold nothing of their position are skipped, and counted, by the takes.
		to := t
		if t > h {
			to = t - in.cap
		}
		// The tail must still be the one judged: a repairer that read it before another one
		// moved it (the other repair, then pushes) would put the head back behind messages
		// committed since. (Between this load and the compare-and-swap the same can happen;
		// then the head is behind the tail, and the next take repairs forward from there,
		// keeping the last capacity positions as above.)
		step()
		if hd.tail.Load() != t {
			return false
		}
		step()
		ok = hd.head.CompareAndSwap(h, to)
	} else {
		step()
		ok = hd.tail.CompareAndSwap(t, h) // the tail moves to the head
	}
	if !ok {
		return false
	}
	hd.corrupt.Add(1)
	in.v.r.hdr.corrupt.Add(1)
	// Whoever sleeps may find something to do now.
	wakeConsumer(in.v)
	wakeProducers(in.v)
	return true
}
