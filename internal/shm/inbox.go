package shm

import (
	"context"
	"fmt"
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// Policy says what a producer does when an inbox is full.
type Policy uint32

const (
	// DropOldest: the producer evicts the oldest message, releases it, and pushes. Counted as
	// dropped, reason "oldest". The default: real-time data wants the newest value.
	DropOldest Policy = iota
	// DropNewest: the push fails with ErrFull; counted as dropped, reason "newest".
	DropNewest
	// Block: the producer waits for room until its context is done or the inbox's block
	// limit passes, then fails with ErrTimeout; counted as dropped, reason "timeout".
	Block
)

func (p Policy) String() string {
	switch p {
	case DropOldest:
		return "drop-oldest"
	case DropNewest:
		return "drop-newest"
	case Block:
		return "block"
	}
	return fmt.Sprintf("Policy(%d)", uint32(p))
}

// Inbox states (low byte of inboxHeader.state; a 14-bit generation is above it).
const (
	inboxFree    = 0
	inboxOpening = 1
	inboxOpen    = 2
	inboxClosing = 3
	inboxGenMask = 1<<14 - 1
)

// inboxWord builds an inbox state word: status (bits 0-7), generation (8-21) and the owning
// participant + 1 (32-47). The owner is in the state word, not only in a field beside it, so
// that an inbox claimed by a process that then died is attributed to that process by the
// same compare-and-swap that claimed it.
func inboxWord(status, gen uint64, owner uint32) uint64 {
	return uint64(owner)<<32 | (gen&inboxGenMask)<<8 | status
}

func wordStatus(st uint64) uint64 { return st & 0xff }
func wordGen(st uint64) uint64    { return st >> 8 & inboxGenMask }
func wordOwner(st uint64) uint32  { return uint32(st>>32) & 0xffff }

// A ring cell is one 64-bit word holding either a handle or a marker:
//
//	bit 63 = 0: a handle; bit 62 is the lap parity of its position ((pos / capacity) & 1)
//	bit 63 = 1, bit 62 = 0: empty, ready for position pos (bits 0-47) of generation gen (48-61)
//	bit 63 = 1, bit 62 = 1: claimed by the consumer into held entry (bits 0-15) for position
//	(its low 32 bits in bits 16-47) of generation gen (48-61) (see take)
//
// Producers fill a cell with one compare-and-swap from "empty for position t" to the handle,
// then advance the tail; the consumer takes with one compare-and-swap from the handle to
// "empty for position h+capacity", then advances the head. The cell is the commit point, and
// any process that finds the tail or head lagging behind a committed cell advances it, so a
// process killed between the two steps never stalls the others. The generation in the empty
// marker makes a producer that still holds a closed (and perhaps reused) inbox fail instead of
// delivering into a stranger's ring; positions keep counting across reuses for the same reason.
const (
	markBit   = 1 << 63
	parityBit = 1 << 62
	posMask   = 1<<48 - 1
)

// InboxID names an inbox across processes: table index and generation.
type InboxID uint32

// Index returns the inbox's table index.
func (id InboxID) Index() int { return int(id & 0xffff) }

func makeInboxID(idx, gen uint32) InboxID { return InboxID(gen&inboxGenMask<<16 | idx&0xffff) }

// inboxView is this process's fixed view of one inbox-table entry.
type inboxView struct {
	r     *Region
	index uint32
	hdr   *inboxHeader
	cells unsafe.Pointer
}

// Inbox is a checked handle on an open inbox ring: a small value, cheap to copy and to keep
// per destination. Push may be called from any process and goroutine; Pop and Wait are for the
// inbox's consumer (its owner), though concurrent calls are safe.
type Inbox struct {
	v      *inboxView
	gen    uint64
	mask   uint64
	cap    uint64
	shift  uint
	policy Policy
	block  time.Duration
}

func (in *Inbox) cell(pos uint64) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Add(in.v.cells, (pos&in.mask)*8))
}

func (in *Inbox) empty(pos uint64) uint64 { return markBit | in.gen<<48 | pos&posMask }
func (in *Inbox) parity(pos uint64) uint64 {
	return (pos >> in.shift & 1) << 62
}

// InboxConfig says how a new inbox behaves.
type InboxConfig struct {
	// Capacity is a power of two no larger than the region's InboxCapacity; 0 means the
	// region's InboxCapacity.
	Capacity int
	// Policy is what producers do when the inbox is full.
	Policy Policy
	// BlockLimit bounds a producer's wait under Block (0: only the producer's context bounds it).
	BlockLimit time.Duration
	// Pattern is the subscription pattern publishers match topics against (up to 128 bytes).
	Pattern string
}

// OpenInbox claims a free inbox for p. It fails with ErrTableFull when none is free.
func (p *Participant) OpenInbox(c InboxConfig) (_ Inbox, err error) {
	defer unguard(guard(), &err)
	r := p.r
	capacity := uint64(c.Capacity)
	if capacity == 0 {
		capacity = uint64(r.cfg.InboxCapacity)
	}
	if capacity < 2 || capacity > uint64(r.cfg.InboxCapacity) || bits.OnesCount64(capacity) != 1 {
		return Inbox{}, fmt.Errorf("offq: inbox capacity %d: want a power of two from 2 to %d", c.Capacity, r.cfg.InboxCapacity)
	}
	if len(c.Pattern) > patternSize {
		return Inbox{}, fmt.Errorf("offq: inbox pattern of %d bytes: the limit is %d", len(c.Pattern), patternSize)
	}
	if c.Policy > Block {
		return Inbox{}, fmt.Errorf("offq: inbox policy %v: unknown", c.Policy)
	}
	for i := range r.inboxes {
		v := &r.inboxes[i]
		step()
		st := v.hdr.state.Load()
		if wordStatus(st) != inboxFree {
			continue
		}
		gen := (wordGen(st) + 1) & inboxGenMask
		if !v.hdr.state.CompareAndSwap(st, inboxWord(inboxOpening, gen, p.owner)) {
			continue
		}
		h := v.hdr
		h.capacity = uint32(capacity)
		h.policy = uint32(c.Policy)
		h.owner = p.owner
		h.topic = 0
		h.blockNanos = int64(c.BlockLimit)
		pat := r.pattern(uint32(i))
		*pat = [patternSize]byte{}
		copy(pat[:], c.Pattern)
		h.patternLen = uint32(len(c.Pattern))
		h.sleepers.Store(0)
		h.spaceWaiters.Store(0)
		h.dropOldest.Store(0)
		h.dropNewest.Store(0)
		h.dropTimeout.Store(0)
		h.corrupt.Store(0)
		h.skipped.Store(0)
		in := v.inbox(gen, uint32(capacity), c.Policy, c.BlockLimit)
		// Positions continue from where the previous user of this entry stopped, so that no
		// position is ever reused for another generation.
		step()
		t := h.tail.Load()
		for pos := t; pos < t+capacity; pos++ {
			step()
			in.cell(pos).Store(in.empty(pos))
		}
		step()
		h.head.Store(t)
		h.base = t
		step()
		h.state.Store(inboxWord(inboxOpen, gen, p.owner))
		r.hdr.subGen.Add(1)
		return in, nil
	}
	return Inbox{}, fmt.Errorf("offq: open inbox in %q: %w: all %d inboxes in use", r.name, ErrTableFull, len(r.inboxes))
}

func (v *inboxView) inbox(gen uint64, capacity uint32, policy Policy, block time.Duration) Inbox {
	return Inbox{v: v, gen: gen, mask: uint64(capacity) - 1, cap: uint64(capacity),
		shift: uint(bits.TrailingZeros32(capacity)), policy: policy, block: block}
}

// Inbox returns a handle on the open inbox id, checking that the entry is open with the same
// generation and that its recorded capacity and policy are valid. It allocates nothing.
func (r *Region) Inbox(id InboxID) (Inbox, error) {
	idx := uint32(id) & 0xffff
	if idx >= uint32(len(r.inboxes)) {
		return Inbox{}, fmt.Errorf("%w: inbox index %d out of range", ErrCorrupt, idx)
	}
	v := &r.inboxes[idx]
	st := v.hdr.state.Load()
	gen := uint64(id >> 16)
	if wordStatus(st) != inboxOpen || wordGen(st) != gen {
		return Inbox{}, ErrClosed
	}
	c := v.hdr.capacity
	if c < 2 || c > r.cfg.InboxCapacity || c&(c-1) != 0 || v.hdr.policy > uint32(Block) {
		v.hdr.corrupt.Add(1)
		return Inbox{}, fmt.Errorf("%w: inbox %d: capacity %d, policy %d", ErrCorrupt, idx, c, v.hdr.policy)
	}
	return v.inbox(gen, c, Policy(v.hdr.policy), time.Duration(max(v.hdr.blockNanos, 0))), nil
}

// ID returns the inbox's cross-process name.
func (in *Inbox) ID() InboxID { return makeInboxID(in.v.index, uint32(in.gen)) }

// Capacity returns the ring's capacity.
func (in *Inbox) Capacity() int { return int(in.cap) }

// Policy returns the inbox's overflow policy.
func (in *Inbox) Policy() Policy { return in.policy }

// Len returns the number of messages waiting (a snapshot).
func (in *Inbox) Len() int {
	t, h := in.v.hdr.tail.Load(), in.v.hdr.head.Load()
	if t <= h {
		return 0
	}
	return int(min(t-h, in.cap))
}

// Push appends h to the inbox. On a full inbox the policy decides: DropOldest evicts (and
// releases) the oldest message and pushes; DropNewest fails with ErrFull; Block waits for
// room until ctx is done or the inbox's block limit passes, then fails with ErrTimeout. Every
// drop is counted in the inbox. Push wakes a sleeping consumer, and makes no system call when
// none sleeps. It allocates nothing.
//
// The caller's reference to h passes to the inbox when Push returns nil; on an error it stays
// with the caller.
func (in *Inbox) Push(ctx context.Context, h Handle) (err error) {
	defer unguard(guard(), &err)
	if h == 0 || uint64(h)&^handleMask != 0 {
		return errHandleBits
	}
	return in.push(ctx, h, nil)
}

// Deliver appends h to the inbox like Push, but with a reference of the inbox's own: it adds
// one to h's reference count immediately before the compare-and-swap that commits h to its
// cell (and gives it back if that fails), so the reference exists only while the message is
// in the ring or about to be. The caller keeps its own reference whatever happens, and must
// hold one for the call (a loan, typically). A publisher fanning out with Deliver holds no
// reference for a subscriber it has not reached yet: killed half-way, it leaves nothing for
// anyone but its loan, which a reaper ends. Only a kill between the two atomic operations of
// one delivery (a few instructions) leaves one reference unowned, for a reaper's sweep to
// free (see Region.Reap). It allocates nothing.
func (in *Inbox) Deliver(ctx context.Context, h Handle) (err error) {
	defer unguard(guard(), &err)
	_, s, _, err := in.v.r.decode(h)
	if err != nil {
		return err
	}
	return in.push(ctx, h, s)
}

// DeliverBuffer is Deliver for a caller that has b's Buffer (a publisher, from its loan): it
// skips decoding the handle again for each inbox of a fan-out.
func (in *Inbox) DeliverBuffer(ctx context.Context, b Buffer) error {
	if b.s == nil {
		return errHandleZero
	}
	return in.push(ctx, b.h, b.s)
}

// push is Push and Deliver: with ref set, a reference is added to ref's state word right
// before each attempt to commit h, and dropped again if the attempt fails.
func (in *Inbox) push(ctx context.Context, h Handle, ref *slotHeader) error {
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
			if ref != nil {
				step()
				if err := ref.addRefs(h, 1); err != nil {
					return err
				}
			}
			step()
			if !c.CompareAndSwap(v, uint64(h)|in.parity(t)) {
				if ref != nil {
					step()
					in.v.r.releaseDropped(h) // the caller's reference keeps the buffer
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
						if ref != nil {
							step()
							in.v.r.releaseDropped(h)
						}
						hd.corrupt.Add(1)
						in.v.r.hdr.corrupt.Add(1)
						continue // taken back: push again
					}
				}
			}
			if hd.sleepers.Load() != 0 {
				hd.wake.Add(1)
				futexWakeAll(&hd.wake)
			}
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
				if err := in.full(ctx, &deadline); err != nil {
					return err
				}
				continue
			}
			// Otherwise it was taken since the read, or no handle can be here (below).
		case v&parityBit == 0 && (v>>48)&inboxGenMask != in.gen:
			if !in.isOpen() {
				return ErrClosed
			}
			// Our generation is open, yet the cell has another's marker: a stale producer is
			// about to put back a handle it took by mistake (see take). Wait for it, briefly.
			if foreign++; foreign < foreignSpins {
				runtime.Gosched()
				continue
			}
		case v&parityBit == 0 && v&posMask == (t+in.cap)&posMask && hn >= t:
			// Position t was filled and already taken (a take of t writes this marker, and
			// happens only once the head has reached t); the tail lags. With the head short
			// of t, the marker is scribbled (below).
			step()
			hd.tail.CompareAndSwap(t, t+1)
			continue
		case v&parityBit != 0 && (v>>48)&inboxGenMask == in.gen:
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
			// taking the message of t-capacity, and the ring is full for a moment more. Wait
			// for it briefly, then apply the policy.
			if foreign++; foreign < foreignSpins {
				runtime.Gosched()
				continue
			}
			if err := in.full(ctx, &deadline); err != nil {
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
			if in.repair(c, v, t) {
				if repairs++; repairs > in.maxRepairs() {
					return in.wrecked()
				}
			}
			continue
		}
		if in.policy != DropNewest {
			if err := in.full(ctx, &deadline); err != nil {
				return err
			}
			continue
		}
		hd.corrupt.Add(1)
		in.v.r.hdr.corrupt.Add(1)
		return errCellCorrupt
	}
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

// full applies the overflow policy. A nil return means: try again.
func (in *Inbox) full(ctx context.Context, deadline *time.Time) error {
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
		if err := in.waitSpace(ctx, *deadline); err != nil {
			hd.dropTimeout.Add(1)
			if err == ErrTimeout || err == ErrClosed {
				return err
			}
			return fmt.Errorf("%w: %w", ErrTimeout, err) // the context's error, as a timeout
		}
		return nil
	default: // DropOldest
		h, ok, err := in.take(nil, 0)
		if err != nil {
			if err == errClaimed {
				hd.dropNewest.Add(1)
			}
			return err
		}
		if ok {
			hd.dropOldest.Add(1)
			step()
			in.v.r.releaseDropped(h)
		}
		return nil
	}
}

// releaseDropped releases a handle taken out of a ring by someone other than a consumer; a
// handle that does not decode is counted, not dereferenced. A buffer found already free (or
// freed and reused) is not counted: the orphan sweep may have freed it while our reference was
// on its way to this release (see Region.Reap).
func (r *Region) releaseDropped(h Handle) {
	switch err := r.release(h); err {
	case nil:
	case errHandleFree, errHandleStale:
		if testHookReleaseSwept != nil {
			testHookReleaseSwept()
		}
	default:
		r.hdr.corrupt.Add(1)
	}
}

// testHookReleaseSwept, if set, runs when a release finds its buffer already freed by a sweep
// (or freed twice by a faulty process): tests count the sweeps that raced a release.
var testHookReleaseSwept func()

// TryPop takes the oldest message without waiting. ok is false when the inbox is empty. The
// caller receives the inbox's reference to the handle and must Release it. The handle is
// untrusted: check it with Region.Buffer before use. A consumer that must survive its own
// crash without leaking uses TryPopInto. The reference TryPop hands out is recorded nowhere
// in the region, so the first TryPop or Pop in a region turns off its orphan sweep (see
// Region.Reap) until the next audit.
func (in *Inbox) TryPop() (h Handle, ok bool, err error) {
	defer unguard(guard(), &err)
	in.v.r.noteUnrecorded()
	return in.take(nil, 0)
}

// noteUnrecorded marks the region as having consumers that hold references nobody can see
// (TryPop, Pop): the orphan sweep, which frees buffers no record names, must then stay off.
func (r *Region) noteUnrecorded() {
	if r.hdr.unrecorded.Load() == 0 { // written once, not on every call
		r.hdr.unrecorded.Store(1)
	}
}

// TryPopInto is TryPop for a consumer that records what it takes: the message's reference
// moves from the inbox to entry idx of p's held list (taken with Participant.Reserve) in a way
// a reaper can follow at every instruction, so neither a crash nor a race loses or doubles it.
// Release it with Participant.Unhold. On ok == false or an error the entry stays reserved.
func (in *Inbox) TryPopInto(p *Participant, idx int) (h Handle, ok bool, err error) {
	defer unguard(guard(), &err)
	w, err := p.heldWord(idx)
	if err != nil {
		return 0, false, err
	}
	return in.take(w, uint64(idx))
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
	hd := in.v.hdr
	foreign := 0
	repairs := 0
	for turns := 0; ; turns++ {
		if repairs > in.maxRepairs() || turns > maxTurns {
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
					hd.head.CompareAndSwap(h0, h0+1)
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
				step()
				w.Store(heldPending | uint64(h))
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
				w.Store(uint64(h))
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
			if hd.spaceWaiters.Load() != 0 {
				hd.space.Add(1)
				futexWakeAll(&hd.space)
			}
			return h, true, nil
		}
		step()
		switch {
		case v == in.empty(h0):
			if hd.tail.Load() <= h0 {
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
			repairs++
			in.skip(c, v, h0)
			continue
		case v == in.empty(h0+in.cap):
			hd.head.CompareAndSwap(h0, h0+1)
			continue
		case v&parityBit == 0 && (v>>48)&inboxGenMask != in.gen:
			if !in.isOpen() {
				return 0, false, ErrClosed
			}
			// A stale producer's marker, about to be put back (see above): wait briefly.
			if foreign++; foreign < foreignSpins {
				runtime.Gosched()
				continue
			}
		case v&parityBit != 0 && (v>>48)&inboxGenMask == in.gen:
			// Claimed: the consumer (another goroutine of it, if we are the consumer) is
			// taking this message, if the held entry the marker names says so; if not, the
			// marker is scribbled (skipped below).
			if !in.takeInProgress(v) {
				break
			}
			if foreign++; foreign < foreignSpins {
				runtime.Gosched()
				continue
			}
			if w == nil {
				// An evicting producer does not wait on: the consumer is slow (descheduled
				// mid-take) or dead (then only the reaper finishes the take). The new
				// message is dropped instead.
				return 0, false, errClaimed
			}
			// Another goroutine of our own process claimed it long ago, or the marker is a
			// scribble naming an entry that holds a message: skip it (the other goroutine,
			// if any, still gets its message; see the claim above).
		}
		// In a ring being closed, an evicting producer may have put back a handle behind the
		// head (see the claim above): leave the cell to the closer, which drains it.
		if !in.isOpen() {
			return 0, false, ErrClosed
		}
		repairs++
		in.skip(c, v, h0)
	}
}

// errClaimed: the head cell stays claimed by a consumer that does not finish its take (slow
// or dead), so a drop-oldest producer cannot evict it.
var errClaimed = fmt.Errorf("%w: the oldest message is being taken by a consumer that does not finish", ErrFull)

// takeInProgress reports whether a claimed marker v in one of this ring's cells belongs to a
// take in progress: the held entry it names, in the inbox owner's held list, holds (or is
// about to hold) a handle. Anything else is a scribble.
func (in *Inbox) takeInProgress(v uint64) bool {
	step()
	owner := wordOwner(in.v.hdr.state.Load())
	idx := v & claimedIdxMask
	r := in.v.r
	if owner == 0 || owner > r.cfg.Participants || idx >= uint64(r.cfg.Held) {
		return false
	}
	step()
	hv := (*atomic.Uint64)(r.at(r.lay.sec.held.off + (uint64(owner-1)*uint64(r.cfg.Held)+idx)*8)).Load()
	return hv&heldReserved == 0 && hv&handleMask != 0
}

// claimed is the marker of a cell whose handle a consumer is moving into held entry idx.
// claimed is the marker of a take of position pos into held entry idx. The position (its low
// 32 bits) makes markers of different takes into the same entry differ, so that a process that
// read a claim long ago cannot mistake a later one for it.
func (in *Inbox) claimed(idx, pos uint64) uint64 {
	return markBit | parityBit | in.gen<<48 | (pos&claimedPosMask)<<16 | idx&claimedIdxMask
}

const (
	claimedIdxMask = 1<<16 - 1 // Config.Held is at most 1<<16
	claimedPosMask = 1<<32 - 1
)

// skip deals with a scribbled value v in the head's cell c: it is dropped and counted. If the
// ring is otherwise empty the cell becomes empty for h0; if not, the message at h0 was
// destroyed and the head moves past it.
func (in *Inbox) skip(c *atomic.Uint64, v, h0 uint64) {
	hd := in.v.hdr
	step()
	if hd.tail.Load() <= h0 {
		in.repair(c, v, h0)
		return
	}
	step()
	if c.CompareAndSwap(v, in.empty(h0+in.cap)) {
		hd.corrupt.Add(1)
		hd.skipped.Add(1)
		in.v.r.hdr.corrupt.Add(1)
		step()
		hd.head.CompareAndSwap(h0, h0+1)
	}
}

// maxTurns bounds the turns of one Push or take, whatever they are: far more than any
// contention needs (each lost turn is someone else's progress), and few enough that a loop over
// values scribbled into a consistent-looking but impossible state ends within milliseconds.
const maxTurns = 1 << 20

// maxRepairs bounds how many scribbled cells one Push or take repairs or skips before it
// gives up on the ring. Every other turn of their loops follows someone else's progress (a lost
// compare-and-swap, a head or tail moved on); repairs are the turns that could go on for 2^64
// positions if the head and tail were scribbled far apart.
func (in *Inbox) maxRepairs() int { return 2*int(in.cap) + 64 }

// wrecked counts and reports a ring whose positions or cells are too damaged to use.
func (in *Inbox) wrecked() error {
	in.v.hdr.corrupt.Add(1)
	in.v.r.hdr.corrupt.Add(1)
	return errRingWrecked
}

var errRingWrecked = fmt.Errorf("%w: inbox positions or cells damaged beyond repair", ErrCorrupt)

// foreignSpins bounds the wait for a stale producer to put back a handle it claimed by mistake;
// a foreign marker that stays longer is corruption.
const foreignSpins = 1 << 10

// isOpen reports whether the inbox entry is still open with this Inbox's generation.
func (in *Inbox) isOpen() bool {
	st := in.v.hdr.state.Load()
	return wordStatus(st) == inboxOpen && wordGen(st) == in.gen
}

// ready reports whether a message is waiting, without taking it. It reads only the head and
// the head's cell, which is what a spinning consumer should touch.
func (in *Inbox) ready() bool {
	h0 := in.v.hdr.head.Load()
	return in.cell(h0).Load() != in.empty(h0)
}

// pending reports whether a message is waiting, or the tail says one should be (a scribbled
// cell at the head can hide it from ready; take repairs it).
func (in *Inbox) pending() bool { return in.ready() || in.v.hdr.tail.Load() > in.v.hdr.head.Load() }

// Close closes an inbox owned by p: producers that still hold it get ErrClosed from then on,
// and every message left in it is released. Close is idempotent for a given Inbox value.
func (in *Inbox) Close() (err error) {
	defer unguard(guard(), &err)
	hd := in.v.hdr
	step()
	st := hd.state.Load()
	if wordStatus(st) != inboxOpen || wordGen(st) != in.gen || !hd.state.CompareAndSwap(st, inboxWord(inboxClosing, in.gen, wordOwner(st))) {
		return nil
	}
	in.drainClosed()
	// Wake anyone still waiting on the words, then free the entry (the generation stays).
	hd.wake.Add(1)
	futexWakeAll(&hd.wake)
	hd.space.Add(1)
	futexWakeAll(&hd.space)
	step()
	hd.state.Store(inboxWord(inboxFree, in.gen, 0))
	in.v.r.hdr.subGen.Add(1)
	return nil
}

// drainClosed turns every cell into an empty marker of the next generation, which no producer
// of this generation will fill, releasing the handles it finds; afterwards the ring is inert.
func (in *Inbox) drainClosed() { in.drainCount() }

// drainCount is drainClosed, reporting how many handles it released.
func (in *Inbox) drainCount() int {
	n := 0
	hd := in.v.hdr
	next := (in.gen + 1) & inboxGenMask
	poison := func(pos uint64) uint64 { return markBit | next<<48 | pos&posMask }
	for i := uint64(0); i < in.cap; i++ {
		c := (*atomic.Uint64)(unsafe.Add(in.v.cells, i*8))
		for {
			step()
			v := c.Load()
			if v&markBit != 0 && v&parityBit == 0 && (v>>48)&inboxGenMask == next {
				break
			}
			step()
			if !c.CompareAndSwap(v, poison(i)) {
				continue
			}
			if v&markBit == 0 {
				step()
				in.v.r.releaseDropped(Handle(v &^ parityBit))
				n++
			}
			break
		}
	}
	// Move the tail past everything that was ever filled, and the head to it.
	step()
	t := max(hd.tail.Load(), hd.head.Load()) + in.cap
	step()
	hd.tail.Store(t)
	step()
	hd.head.Store(t)
	return n
}

// InboxStats is a snapshot of one inbox's counters.
type InboxStats struct {
	ID          InboxID
	Owner       int    // participant index
	OwnerName   string // participant name (filled in by Region.Stats)
	Pattern     string
	Policy      Policy
	Capacity    int
	Depth       int
	Pushed      uint64 // messages accepted (tail position since the ring was opened)
	Popped      uint64 // messages taken by the consumer
	DropOldest  uint64
	DropNewest  uint64
	DropTimeout uint64
	Corrupt     uint64
	Sleeping    bool // a consumer is asleep on the wake word
	Blocked     int  // producers asleep waiting for room (Block policy): publishers this subscriber holds back
}

// InboxStats returns the counters of every open inbox. It reads shared memory only. It fails
// with an error wrapping ErrCorrupt if the region's memory faults (its file was truncated).
func (r *Region) InboxStats() (_ []InboxStats, err error) {
	if !r.enterRead() {
		return nil, nil
	}
	defer r.exitRead()
	defer unguard(guard(), &err)
	return r.inboxStats(), nil
}

func (r *Region) inboxStats() []InboxStats {
	var out []InboxStats
	for i := range r.inboxes {
		h := r.inboxes[i].hdr
		st := h.state.Load()
		if wordStatus(st) != inboxOpen {
			continue
		}
		t, hd := h.tail.Load(), h.head.Load()
		depth := uint64(0)
		if t > hd {
			depth = min(t-hd, uint64(h.capacity))
		}
		pushed := t - min(h.base, t)
		taken := hd - min(h.base, hd)
		s := InboxStats{
			Pushed: pushed, Popped: taken - min(taken, h.dropOldest.Load()+h.skipped.Load()),
			ID: makeInboxID(uint32(i), uint32(wordGen(st))), Owner: int(wordOwner(st)) - 1,
			Pattern: r.patternString(uint32(i)), Policy: Policy(h.policy), Capacity: int(h.capacity),
			Depth: int(depth), DropOldest: h.dropOldest.Load(), DropNewest: h.dropNewest.Load(),
			DropTimeout: h.dropTimeout.Load(), Corrupt: h.corrupt.Load(), Sleeping: h.sleepers.Load() != 0,
			Blocked: int(h.spaceWaiters.Load()),
		}
		out = append(out, s)
	}
	return out
}

func (r *Region) pattern(i uint32) *[patternSize]byte {
	return (*[patternSize]byte)(r.at(r.lay.sec.patterns.off + uint64(i)*patternSize))
}

func (r *Region) patternString(i uint32) string {
	n := min(int(r.inboxes[i].hdr.patternLen), patternSize)
	return string(r.pattern(i)[:n])
}

// SubscriptionGen returns the region's subscription generation, which every OpenInbox and
// Inbox.Close bumps after the change is visible. A publisher that caches the inboxes matching
// its topic rebuilds the cache when the generation moves: one shared, rarely written word read
// per publish.
func (r *Region) SubscriptionGen() uint64 { return r.hdr.subGen.Load() }

// Subscription is an open inbox and the pattern it subscribes to.
type Subscription struct {
	ID      InboxID
	Pattern string
}

// Subscriptions appends every open inbox and its pattern to dst and returns it. A pattern
// that a faulty process made too long is cut to the room it has. It fails with an error
// wrapping ErrCorrupt if the region's memory faults (its file was truncated).
func (r *Region) Subscriptions(dst []Subscription) (_ []Subscription, err error) {
	defer unguard(guard(), &err)
	for i := range r.inboxes {
		st := r.inboxes[i].hdr.state.Load()
		if wordStatus(st) != inboxOpen {
			continue
		}
		dst = append(dst, Subscription{ID: makeInboxID(uint32(i), uint32(wordGen(st))), Pattern: r.patternString(uint32(i))})
	}
	return dst, nil
}

// WaitEmpty returns when the inbox holds no message (its consumer has taken everything), ctx
// is done, or the inbox is closed. It polls: it is for draining, not the data path.
func (in *Inbox) WaitEmpty(ctx context.Context) (err error) {
	defer unguard(guard(), &err)
	for pause := 20 * time.Microsecond; ; pause = min(2*pause, 5*time.Millisecond) {
		if in.Len() == 0 || !in.isOpen() {
			return nil
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
