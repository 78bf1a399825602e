package transport

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"
)

// heldList is this process's index of a participant's held list, a section of Held 64-bit
// words in the region: each non-zero word is a handle the participant took out of an inbox and
// has not released yet. The words are what a reaper reads when the participant dies; the free
// stack is only this process's way of finding an empty word without scanning.
type heldList struct {
	mu    sync.Mutex
	words unsafe.Pointer
	free  []uint32
	n     uint32
}

func (r *Region) newHeldList(idx uint32) *heldList {
	n := r.cfg.Held
	l := &heldList{words: r.at(r.lay.sec.held.off + uint64(idx)*uint64(n)*8), n: n, free: make([]uint32, n)}
	for i := range n {
		l.free[i] = n - 1 - i
		l.word(i).Store(0)
	}
	return l
}

func (l *heldList) word(i uint32) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Add(l.words, uint64(i)*8))
}

// ErrHeldFull is returned by Participant.Hold when the participant already holds Config.Held
// messages: the consumer is not releasing what it receives.
var ErrHeldFull = fmt.Errorf("offq: too many messages held unreleased")

// Reserve takes an empty entry of p's held list, so that a consumer knows it has room before it
// takes a message out of an inbox. Fill the entry with Hold or give it back with Unreserve.
// It fails with ErrHeldFull when p already holds Config.Held messages. It allocates nothing.
func (p *Participant) Reserve() (int, error) {
	l := p.held
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.free) == 0 {
		return -1, ErrHeldFull
	}
	i := l.free[len(l.free)-1]
	l.free = l.free[:len(l.free)-1]
	return int(i), nil
}

// Unreserve gives back an entry taken by Reserve and not filled.
func (p *Participant) Unreserve(i int) {
	l := p.held
	l.mu.Lock()
	l.free = append(l.free, uint32(i))
	l.mu.Unlock()
}

// Hold records h, to which the caller holds a reference taken from an inbox, in the reserved
// entry i of p's held list.
func (p *Participant) Hold(i int, h Handle) {
	p.held.word(uint32(i)).Store(uint64(h))
}

// Unhold releases the held message in entry i, which must hold h: the entry is cleared and
// the reference released.
func (p *Participant) Unhold(i int, h Handle) error {
	l := p.held
	if i < 0 || uint32(i) >= l.n || !l.word(uint32(i)).CompareAndSwap(uint64(h), 0) {
		return fmt.Errorf("%w: not held in entry %d (released twice?)", ErrBadHandle, i)
	}
	l.mu.Lock()
	l.free = append(l.free, uint32(i))
	l.mu.Unlock()
	return p.r.Release(h)
}

// Held returns how many messages p holds.
func (p *Participant) Held() int {
	l := p.held
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.n) - len(l.free)
}

// releaseAllHeld releases every message p still holds (on Detach).
func (p *Participant) releaseAllHeld() {
	l := p.held
	for i := range l.n {
		if h := Handle(l.word(i).Swap(0)); h != 0 {
			p.r.releaseDropped(h)
		}
	}
	l.mu.Lock()
	l.free = l.free[:0]
	for i := range l.n {
		l.free = append(l.free, l.n-1-i)
	}
	l.mu.Unlock()
}
