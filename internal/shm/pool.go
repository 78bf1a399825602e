package shm

import (
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"
)

// pool is one process's view of a size class. Its state is all in shared memory except next,
// a per-process allocation cursor: it lets consecutive allocations and a free followed by an
// allocation land on the same (cache-hot) slot without any shared word being written for it.
type pool struct {
	r      *Region
	class  int
	hdr    *poolHeader
	size   uint32 // payload bytes per slot
	count  uint32
	stride uint32 // bytes from one slot header to the next
	slots  uint64 // region offset of slot 0
	end    uint64 // region offset just past the last slot
	next   atomic.Uint32
	// lent is the pool's lent mark as this process last read or raised it: a slot below it
	// may be claimed without looking at the region's mark (see markLent).
	lent atomic.Uint32
	// scanned is when this process last scanned the whole pool although its counters said
	// every buffer was allocated (see exhausted); distrust is set once such a scan found a
	// free buffer the counters missed: from then on this process scans as if they said nothing.
	scanned  atomic.Int64
	distrust atomic.Bool
	// short is set when a claim in this process found the pool exhausted, and cleared when
	// the counters next show claimProbe buffers free; while it is set, budget is how many
	// claims the counters last allowed (see claim).
	short  atomic.Bool
	budget atomic.Int64
}

func (p *pool) slot(i uint32) *slotHeader {
	return (*slotHeader)(p.r.at(p.slots + uint64(i)*uint64(p.stride)))
}

// handle returns the handle of slot i under generation gen.
func (p *pool) handle(i uint32, gen uint64) Handle { return makeHandle(uint32(p.class), i, gen) }

// buffer returns the view of slot i under handle h.
func (p *pool) buffer(h Handle, i uint32) Buffer {
	s := p.slot(i)
	return Buffer{h: h, s: s, p: p, data: unsafe.Add(unsafe.Pointer(s), slotHeaderSize)}
}

// alloc claims a free slot for owner (a participant index + 1) with one reference, the
// owner's. The claim is a single compare-and-swap on the slot's state word, which also
// records the owner: there is no moment at which the slot is taken but ownerless, so a crash
// at any instruction leaves it either free or findable by a reaper.
func (p *pool) alloc(owner uint32) (Buffer, bool) {
	b, ok := p.claim(owner, 0)
	if ok {
		p.noteAlloc()
	}
	return b, ok
}

// claim is alloc without counting the allocation: a batch counts its allocations once (see
// Participant.LoanBatch); pending is how many of the caller's claims on p are not counted yet.
func (p *pool) claim(owner uint32, pending int64) (Buffer, bool) {
	start := p.next.Load()
	if start >= p.count {
		start = 0
	}
	i := start
	verify := false
	if p.short.Load() && p.budget.Add(-1) < 0 {
		// The pool ran short: ask the counters before reading any slot (see claimShort).
		full, v := p.claimShort(pending)
		if full {
			if testHookClaimFailed != nil {
				testHookClaimFailed(0)
			}
			return Buffer{}, false
		}
		verify = v
	}
	for n := range p.count {
		if n == claimProbe && !verify {
			full, v := p.exhausted(pending)
			if full {
				if testHookClaimFailed != nil {
					testHookClaimFailed(n)
				}
				p.budget.Store(0)
				p.short.Store(true)
				return Buffer{}, false
			}
			verify = v
		}
		s := p.slot(i)
		v := s.state.Load()
		if v&(refsMask|ownerMask) == 0 {
			if i >= p.lent.Load() {
				p.markLent(i) // before the claim: a slot is never lent past the mark
			}
			gen := nextGen(stateGen(v))
			if s.state.CompareAndSwap(v, gen<<genShift|uint64(owner)<<ownerShift|1) {
				if n := i + 1; n < p.count {
					storeHint(&p.next, n)
				} else {
					storeHint(&p.next, 0)
				}
				if verify && p.inUse() >= int64(p.count) {
					// The counters said full and were wrong (our claim is not counted yet):
					// a free that was never counted, by a process killed after freeing, or
					// scribbled counters. Stop relying on them in this process. (A release in
					// another process, between its free and its count, can also land here:
					// the process then scans as it did before the counters were consulted,
					// which costs time, never a buffer.)
					p.distrust.Store(true)
				}
				return p.buffer(p.handle(i, gen), i), true
			}
		}
		if i++; i == p.count {
			i = 0
		}
	}
	if testHookClaimFailed != nil {
		testHookClaimFailed(p.count)
	}
	return Buffer{}, false
}

// claimProbe is how many slots a claim reads from the cursor before it asks the pool's
// counters whether any buffer is free at all. A claim on an exhausted pool used to read every
// slot, so a publisher retrying a Loan on a pool of a million buffers spent milliseconds and
// pulled the whole pool through its cache on each try; now it reads claimProbe slots and the
// counter shards.
const claimProbe = 64

// claimShort decides a claim made while the pool is short in this process (short set, the
// budget spent): it reads the counters, and either leaves short mode (claimProbe or more
// buffers free, or the counters distrusted), or sets the budget to the buffers free and lets
// the claim scan, or, with none free, fails the claim without reading a slot, as exhausted
// does (verify: scan the whole pool anyway, once every exhaustedRescan).
//
// Why: a publisher that outruns its subscribers finds the pool exhausted again and again. Its
// claims start at its cursor, which in a stream is where the oldest buffers are: those its
// subscribers have taken and are about to release. Reading their state words takes their
// lines away from the subscribers, whose releases (a compare-and-swap each) then wait for
// them one by one; the stream ran at the pace of those transfers. In short mode a claim reads
// a slot only when the counters say that a buffer is free, and in a stream the buffers freed
// first are the ones at the cursor.
func (p *pool) claimShort(pending int64) (full, verify bool) {
	free := int64(p.count) - p.inUse() - pending
	if free >= claimProbe || p.distrust.Load() {
		p.short.Store(false)
		return false, false
	}
	if free > 0 {
		p.budget.Store(free - 1) // this claim is one of them
		return false, false
	}
	return p.rescanDue()
}

// exhaustedRescan is how often a process scans the whole pool when the counters say it is
// exhausted, in case they are wrong (a variable for tests).
var exhaustedRescan = int64(time.Second)

// exhausted reports whether the pool's counters say every buffer is allocated, so that a claim
// that found none near its cursor can give up without reading the rest. The counters are
// exact when the pool is quiet, may read high by the frees of a release under way (the
// claim then fails as if it had come a moment earlier), and stay high if a process was killed
// between freeing buffers and counting them (until an audit recounts) or if they are
// scribbled. So once every exhaustedRescan a claim scans anyway (verify), and if that scan
// finds a buffer free the process stops trusting the counters (see claim).
func (p *pool) exhausted(pending int64) (full, verify bool) {
	if p.distrust.Load() || p.inUse()+pending < int64(p.count) {
		return false, false
	}
	return p.rescanDue()
}

// rescanDue is exhausted's verdict on a pool whose counters say every buffer is allocated.
func (p *pool) rescanDue() (full, verify bool) {
	now, last := Now(), p.scanned.Load()
	if now-last >= exhaustedRescan && p.scanned.CompareAndSwap(last, now) {
		return false, true
	}
	return true, false
}

// testHookClaimFailed, if set, is told how many slots a claim that found no free buffer read.
var testHookClaimFailed func(read uint32)

// lentMark returns the pool's lent mark, read from the region: every slot at or past it is
// free and was never lent, so scans for loans and references (endLoans, the audit, the sweep,
// Stats) stop there, and cost what the pool has been used for, not its size. A scribbled mark
// past the pool's end reads as the end.
func (p *pool) lentMark() uint32 {
	shift := lentBits * (uint(p.class) % lentPerWord)
	m := uint32(p.r.hdr.lent[p.class/lentPerWord].Load()>>shift) & lentFieldMask
	return min(m, p.count)
}

// markLent raises the pool's lent mark past slot i, to the end of i's block of lentBlock
// slots (so that filling a fresh pool writes the shared word once per block, not once per
// slot). alloc calls it before it claims slot i, so a crash in between leaves the mark high
// and the slot free: harmless. The mark only rises.
func (p *pool) markLent(i uint32) {
	want := min((i/lentBlock+1)*lentBlock, p.count)
	word := &p.r.hdr.lent[p.class/lentPerWord]
	shift := lentBits * (uint(p.class) % lentPerWord)
	for {
		w := word.Load()
		if m := uint32(w>>shift) & lentFieldMask; m >= want {
			p.lent.Store(min(m, p.count))
			return
		}
		if word.CompareAndSwap(w, w&^(lentFieldMask<<shift)|uint64(want)<<shift) {
			p.lent.Store(want)
			return
		}
	}
}

// noteAlloc counts an allocation in the process's shard, and samples the high-water mark when
// the shard's count passes a multiple of highWaterEvery: the count's own add says when, so the
// sampling costs no locked operation of its own.
func (p *pool) noteAlloc() {
	if p.hdr.shards[p.r.shard].allocs.Add(1)&(highWaterEvery-1) == 0 {
		p.sampleHighWater()
	}
}

// highWaterEvery is how many allocations counted in a shard (a process's, or those of the few
// processes whose pids share it) pass between two samples of the pool's occupancy for its
// high-water mark; a sample reads every shard, which is too much for each allocation.
const highWaterEvery = 256

func (p *pool) sampleHighWater() {
	n := p.inUse()
	for {
		hw := p.hdr.highWater.Load()
		if n <= hw || p.hdr.highWater.CompareAndSwap(hw, n) {
			return
		}
	}
}

// inUse sums the shards: allocations minus frees. It may be off by the operations under way
// while it reads; it is exact when the pool is quiet.
func (p *pool) inUse() int64 {
	var a, f uint64
	for i := range p.hdr.shards {
		f += p.hdr.shards[i].frees.Load()
		a += p.hdr.shards[i].allocs.Load()
	}
	return int64(a - f)
}

func (p *pool) noteFree(idx uint32) {
	p.hdr.shards[p.r.shard].frees.Add(1)
	storeHint(&p.next, idx)
}

// Alloc is the low-level allocation used by Participant.Alloc: the smallest class that fits n
// bytes and has a free buffer, else the next larger one.
func (r *Region) alloc(owner uint32, n int) (Buffer, error) {
	if n < 0 {
		return Buffer{}, fmt.Errorf("alloc of %d bytes", n)
	}
	if n > int(r.maxSize) {
		return Buffer{}, r.poolError(n, ErrTooLarge)
	}
	if err := r.Check(); err != nil {
		return Buffer{}, err // a zeroed region's pools look free: allocating from them helps nobody
	}
	for i := range r.pools {
		p := &r.pools[i]
		if n > int(p.size) {
			continue
		}
		if b, ok := p.alloc(owner); ok {
			return b, nil
		}
	}
	for i := range r.pools {
		if n <= int(r.pools[i].size) {
			r.pools[i].hdr.allocFails.Add(1)
			r.pools[i].sampleHighWater()
			break
		}
	}
	return Buffer{}, r.poolError(n, ErrPoolExhausted)
}

// poolError builds the error for a failed allocation: one allocation, the error itself (the
// class list is shared, so a publisher under backpressure does not pay for it each time).
func (r *Region) poolError(n int, err error) error {
	e := &PoolError{Size: n, Largest: r.maxSize, Err: err}
	for i := range r.pools {
		if n <= int(r.pools[i].size) {
			e.Classes = r.classSizes[i:]
			break
		}
	}
	return e
}

// addRefsHandle adds n references to the buffer h names, which the caller must hold a reference to
// (so its generation cannot change underneath). A publisher fanning out to n inboxes adds n
// at once, then gives back one for each push that fails.
func (r *Region) addRefsHandle(h Handle, n int) error {
	_, s, _, err := r.decode(h)
	if err != nil {
		return err
	}
	return r.addRefs(s, h, n)
}

// addRefs adds n references to the slot s, whose generation must still be h's and which must
// be allocated (the caller holds a reference, so it is unless the word was scribbled).
//
// A buffer not on loan gains references only from a holder passing one on (a held entry's
// message delivered again or remembered, a history message joined), and the holder may then
// drop its own, leaving the state word as it was and the reference in another record: the
// orphan sweep cannot tell that from nothing happening. So such an addition first bumps the
// region's moves counter, which the sweep reads before and after it looks (see Region.sweep).
// A publisher's fan-out adds references under its loan and writes nothing more.
func (r *Region) addRefs(s *slotHeader, h Handle, n int) error {
	moved := false
	for {
		v := s.state.Load()
		switch {
		case stateGen(v) != h.gen():
			return errHandleStale
		case stateRefs(v) == 0:
			return errHandleFree
		case int(stateRefs(v))+n > maxRefs || n < 0:
			return errHandleRefs
		}
		if stateOwner(v) == 0 && !moved {
			r.hdr.moves.Add(1)
			moved = true
		}
		if s.state.CompareAndSwap(v, v+uint64(n)) {
			return nil
		}
	}
}

// release drops one reference to the buffer h names; the last release returns the buffer to
// its pool. It fails with ErrBadHandle, changing nothing, for a handle that does not decode, a
// stale generation, a buffer that is already free, or a buffer whose only reference is its
// loan (the loan's holder ends that with Participant.Unloan). Safe for concurrent use from
// any process.
func (r *Region) release(h Handle) error {
	p, idx, freed, err := r.drop(h)
	if freed {
		p.noteFree(idx)
	}
	return err
}

// drop is release without counting a free: it reports whether the buffer became free, and the
// caller counts it (a batch counts its frees once, see Participant.ReleaseBatch).
func (r *Region) drop(h Handle) (_ *pool, _ uint32, freed bool, _ error) {
	p, s, idx, err := r.decode(h)
	if err != nil {
		return nil, 0, false, err
	}
	for {
		v := s.state.Load()
		refs := stateRefs(v)
		switch {
		case stateGen(v) != h.gen():
			return nil, 0, false, errHandleStale
		case refs == 0:
			return nil, 0, false, errHandleFree
		case refs == 1 && stateOwner(v) != 0:
			return nil, 0, false, errHandleOwner
		}
		if s.state.CompareAndSwap(v, v-1) {
			return p, idx, refs == 1, nil
		}
	}
}

// checkOwner says why state word v is not buffer h's with owner owner (0: handed over), or
// returns nil if it is.
func checkOwner(v uint64, h Handle, owner uint32) error {
	switch {
	case stateGen(v) != h.gen():
		return errHandleStale
	case stateRefs(v) == 0:
		return errHandleFree
	case stateOwner(v) != owner:
		return errHandleOwner
	}
	return nil
}

// unloan drops the loan reference held by owner: clears the owner and drops one reference in
// one compare-and-swap, so it happens exactly once even if a reaper races the owner.
func (r *Region) unloan(owner uint32, h Handle) error {
	p, s, idx, err := r.decode(h)
	if err != nil {
		return err
	}
	for {
		v := s.state.Load()
		if err := checkOwner(v, h, owner); err != nil {
			return err
		}
		nv := v&^ownerMask - 1
		if s.state.CompareAndSwap(v, nv) {
			if stateRefs(nv) == 0 {
				p.noteFree(idx)
			}
			return nil
		}
	}
}

// PoolStats is a snapshot of one pool's counters.
type PoolStats struct {
	Class      int
	Size       int   // payload bytes per buffer
	Capacity   int   // buffers in the pool
	InUse      int64 // buffers allocated now
	HighWater  int64 // most buffers seen in use at once: sampled every 256 allocations counted in a process's shard, by every PoolStats call, and at exhaustion
	LowWater   int64 // fewest buffers ever free at once: Capacity - HighWater
	AllocFails uint64
}

// PoolStats returns a snapshot of every pool's counters. It reads shared memory only; a
// process that has not attached as a participant may call it.
func (r *Region) PoolStats() (_ []PoolStats) {
	defer unguard(guard(), nil) // a fault (the file truncated) returns the zero value
	return r.poolStats()
}

func (r *Region) poolStats() []PoolStats {
	if !r.enterRead() {
		return nil
	}
	defer r.exitRead()
	out := make([]PoolStats, len(r.pools))
	for i := range r.pools {
		p := &r.pools[i]
		if !r.readOnly {
			p.sampleHighWater()
		}
		hw := max(p.hdr.highWater.Load(), p.inUse())
		out[i] = PoolStats{
			Class:      i,
			Size:       int(p.size),
			Capacity:   int(p.count),
			InUse:      p.inUse(),
			HighWater:  hw,
			LowWater:   int64(p.count) - hw,
			AllocFails: p.hdr.allocFails.Load(),
		}
	}
	return out
}

// CountAllocated walks every slot and counts those with references, per class. Unlike
// PoolStats it reads the slots themselves, all of them (past the lent marks too), so it is
// exact even if a counter or a mark was damaged; it is for tests and audits, not the data
// path: its cost grows with the region.
func (r *Region) CountAllocated() (_ []int) {
	defer unguard(guard(), nil) // a fault (the file truncated) returns the zero value
	return r.countAllocated()
}

func (r *Region) countAllocated() []int {
	out := make([]int, len(r.pools))
	for i := range r.pools {
		p := &r.pools[i]
		for j := range p.count {
			if stateRefs(p.slot(j).state.Load()) != 0 {
				out[i]++
			}
		}
	}
	return out
}

// endLoans ends every loan recorded for owner, by scanning the slots' state words: the owner
// field is the record, so nothing escapes, whether the loan was abandoned by a live process or
// left by a dead one. It reads the slots below the lent marks only: no loan is past them.
func (r *Region) endLoans(owner uint32) int {
	n := 0
	for i := range r.pools {
		p := &r.pools[i]
		for j := range p.lentMark() {
			s := p.slot(j)
			v := s.state.Load()
			if stateRefs(v) != 0 && stateOwner(v) == owner {
				if r.unloan(owner, p.handle(j, stateGen(v))) == nil {
					n++
				}
			}
		}
	}
	return n
}
