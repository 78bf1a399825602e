package shm

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// heldList is this process's view of a participant's held list: Held 64-bit words in the
// region, each zero (free), heldReserved (taken by Reserve, not yet filled) or a handle the
// participant took out of an inbox and has not released. The words are what a reaper reads
// when the participant dies. Entries are found without a lock: a compare-and-swap on the word
// claims it, starting from a per-process hint where the last free entry was seen.
type heldList struct {
	words unsafe.Pointer
	n     uint32
	hint  atomic.Uint32 // where to start looking for a free entry
}

// Held words: 0 free; heldReserved taken by Reserve; heldPending|h a take of h in progress
// (see Inbox.take) or a history reference about to be taken (Topic.HoldHistory); h (bits 62
// and 63 clear) a held message.
const (
	heldReserved = 1 << 63
	heldPending  = 1 << 62
)

func (p *Participant) heldWord(i int) (*atomic.Uint64, error) {
	if i < 0 || uint32(i) >= p.held.n {
		return nil, fmt.Errorf("held entry %d out of range", i)
	}
	return p.held.word(uint32(i)), nil
}

// heldWordAt returns word k of participant i's held list: the one place that computes a held
// word's address (the owner's heldList, a reaper's read of a dead participant's list and a
// take's check of another consumer's claim all come here). i and k must be in range.
func (r *Region) heldWordAt(i, k uint32) *atomic.Uint64 {
	return (*atomic.Uint64)(r.at(r.lay.sec.held.off + (uint64(i)*heldStride(r.cfg.Held)+uint64(k))*8))
}

// heldStride is the words between two participants' held lists: Held rounded up to a cache
// line, so that no two processes' lists share one. (With Held 4, as in offq bench's ping-pong
// bus, two processes' lists shared a line, and every take and release of one moved it away
// from the other.)
func heldStride(held uint32) uint64 { return (uint64(held) + 7) &^ 7 }

func (r *Region) newHeldList(idx uint32) *heldList {
	n := r.cfg.Held
	l := &heldList{words: unsafe.Pointer(r.heldWordAt(idx, 0)), n: n}
	for i := range n {
		l.word(i).Store(0)
	}
	return l
}

func (l *heldList) word(i uint32) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Add(l.words, uint64(i)*8))
}

// ErrHeldFull is returned by Participant.Reserve when the participant already holds
// Config.Held messages: the consumer is not releasing what it receives.
var ErrHeldFull = errors.New("too many messages held unreleased")

// reserve takes an empty entry of p's held list, so that a consumer knows it has room before it
// takes a message out of an inbox. Fill the entry with Inbox.PopInto or TryPopInto, or give it
// back with Unreserve. It fails with ErrHeldFull when p already holds Config.Held messages. It allocates nothing.
func (p *Participant) reserve() (int, error) {
	l := p.held
	i := l.hint.Load()
	for range l.n {
		if i >= l.n {
			i = 0
		}
		w := l.word(i)
		if w.Load() == 0 && w.CompareAndSwap(0, heldReserved) {
			// The hint stays: a consumer that releases each message before taking the next
			// finds the same entry free again, and no shared word is written for the hint.
			return int(i), nil
		}
		i++
	}
	return -1, ErrHeldFull
}

// unreserve gives back an entry taken by Reserve and not filled.
func (p *Participant) unreserve(i int) {
	l := p.held
	if i >= 0 && uint32(i) < l.n && l.word(uint32(i)).CompareAndSwap(heldReserved, 0) {
		l.setHint(uint32(i))
	}
}

// forget turns entry i back into a reserved entry without releasing what it held: for a
// handle that turned out not to name a live buffer (so there is nothing to release).
func (p *Participant) forget(i int) {
	if w, err := p.heldWord(i); err == nil {
		w.Store(heldReserved)
	}
}

// unhold releases the held message in entry i, which must hold h: the entry is cleared and
// the reference released.
func (p *Participant) unhold(i int, h Handle) error {
	l := p.held
	step()
	if i < 0 || uint32(i) >= l.n || !l.word(uint32(i)).CompareAndSwap(uint64(h), 0) {
		return fmt.Errorf("%w: not held in entry %d (released twice?)", ErrBadHandle, i)
	}
	l.setHint(uint32(i))
	step()
	if err := p.r.release(h); err != errHandleFree && err != errHandleStale {
		return err
	}
	if testHookReleaseSwept != nil {
		testHookReleaseSwept(h)
	}
	// Already free: between clearing the entry and releasing, the reference was in no record
	// and the orphan sweep freed the buffer for us (see Region.Reap). It was ours; it is gone.
	return nil
}

// setHint points the next Reserve at a freed entry, writing the hint only if it changes.
func (l *heldList) setHint(i uint32) {
	if l.hint.Load() != i {
		l.hint.Store(i)
	}
}

// Held returns how many messages p holds (or has reserved room for). It reads the whole held
// list: it is for Close and tools, not the data path.
func (p *Participant) Held() (n int) {
	var err error
	defer unguard(guard(), &err)
	for i := range p.held.n {
		if p.held.word(i).Load() != 0 {
			n++
		}
	}
	return n
}

// releaseAllHeld releases every message p still holds (on Detach).
func (p *Participant) releaseAllHeld() {
	l := p.held
	for i := range l.n {
		if h := l.word(i).Swap(0); h != 0 && h&(heldReserved|heldPending) == 0 {
			p.r.releaseDropped(Handle(h))
		}
	}
}
