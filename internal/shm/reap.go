package shm

import (
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"
)

// ReapReport says what Reap reclaimed.
type ReapReport struct {
	Participants int // dead participants whose slots were freed
	Inboxes      int // their inboxes, closed and drained
	Queued       int // messages released from those inboxes
	Held         int // messages they had received and not released
	Loans        int // buffers they had on loan (allocated, not yet sent)
	Topics       int // topic entries they had half-created, and type fingerprints half-claimed
	// TopicsFreed counts topic entries the audit reclaimed: no history and no buffer naming
	// them (a topic somebody published once, or mistyped, and nobody uses now).
	TopicsFreed int
	// Audited is set when nobody was attached, so Reap could also audit the region: every
	// buffer's reference count was recomputed from the references that exist (topic
	// histories), which repairs any reference a crash at an unlucky instruction left behind.
	Audited bool
	// Recounted is set when the audit also read every slot ever lent (the part of an audit
	// whose cost grows with the region): always for Reap; for Maintain, when a participant was
	// reclaimed, a sweep was requested, a take was not recorded, or the pools' counters
	// disagreed with what the topic histories keep.
	Recounted bool
	Repaired  int // buffers whose reference count or owner the audit corrected
	// Swept counts buffers the orphan sweep freed: allocated, not on loan, with one reference
	// that no ring cell, held entry or history cell names (see Reap).
	Swept int
}

// presenceByte is the byte of the region file on which every participant holds a shared lock,
// and an audit an exclusive one.
const presenceByte = 1

// Add adds b's counts to a (for a caller that reaps more than once).
func (a *ReapReport) Add(b ReapReport) {
	a.Participants += b.Participants
	a.Inboxes += b.Inboxes
	a.Queued += b.Queued
	a.Held += b.Held
	a.Loans += b.Loans
	a.Topics += b.Topics
	a.TopicsFreed += b.TopicsFreed
	a.Audited = a.Audited || b.Audited
	a.Recounted = a.Recounted || b.Recounted
	a.Repaired += b.Repaired
	a.Swept += b.Swept
}

// Reap reclaims everything held by participants whose processes have died: their inboxes are
// closed and drained, the messages they held and the buffers they had on loan are released,
// topic entries they left half-created are freed, and their slots are freed for reuse.
// Afterwards the pools hold exactly what live participants (and topic histories) hold.
//
// Death is read from the kernel: a participant holds a lock on its slot for as long as its
// process lives. Reap takes that lock itself before touching a slot, so a slot is reaped
// exactly once however many processes reap at the same time, and never while its owner lives.
// Reap is safe to call at any time from any process attached to the region, or from a tool
// that opened it (not read-only). It counts each reclaimed participant in the region's header.
//
// Reap also sweeps for orphans. A reference count is a number, not a record, so moving a
// reference between a count and the place that names it takes two atomic operations, and a
// process killed between them (a few instructions: see docs/architecture.md) leaves a
// reference that nobody holds. The sweep frees a buffer whose count is one, that is not on
// loan, and that no ring cell, held entry or history cell names, when this process's previous
// sweep saw it the same way (same state word). That is safe while others run because every
// process that will read a buffer records its reference first (a loan, a held entry, a
// pending held entry for a take or a history join); the only references in no record are
// those about to be released, and a release that finds its buffer already freed is a no-op.
// A region in which a process used Inbox.TryPop or Pop, whose references are in no record,
// is not swept until its next audit.
//
// Reap's cost grows with the region: its sweep (or audit) reads every slot that was ever lent.
// Maintain is the part of it a process runs periodically, at a cost that does not.
func (r *Region) Reap() (ReapReport, error) { return r.reap(true) }

// Maintain is what a participant runs periodically (package bus: every second, and when a
// loan finds the pools exhausted), at a cost that does not grow with the region when nothing
// happened: it reclaims dead participants as Reap does (a kernel lock test per attached
// slot), and requests a sweep when it reclaimed one. It audits only if nobody else is present
// and something calls for it (a participant reclaimed, a sweep requested, a take not
// recorded), and sweeps only on request (RequestSweep), one process at a time (and only a
// process with a participant attached), a step at a time, resuming where a sweeper that died
// stopped (see sweeplease.go). Safe to call at any
// time from any process attached to the region, or from a tool that opened it (not
// read-only).
func (r *Region) Maintain() (ReapReport, error) { return r.reap(false) }

func (r *Region) reap(full bool) (_ ReapReport, err error) {
	var rep ReapReport
	if r.readOnly {
		return rep, &Error{Op: "reap", Name: r.name, Err: fmt.Errorf("%w: region opened read-only", ErrPermission)}
	}
	if r.closed.Load() {
		return rep, &Error{Op: "reap", Name: r.name, Err: ErrClosed}
	}
	defer unguard(guard(), &err)
	if err := r.Check(); err != nil {
		return rep, &Error{Op: "reap", Name: r.name, Err: err}
	}
	lf, err := reopen(r.f)
	if err != nil {
		return rep, &Error{Op: "reap", Name: r.name, Err: err}
	}
	defer lf.Close() // drops every lock taken through it
	// A reaper is present like a participant (shared presence lock), so that an audit, which
	// needs the region to itself, never runs beside it.
	for deadline := time.Now().Add(5 * time.Second); ; {
		got, err := ofdLockShared(lf, presenceByte)
		if err != nil {
			return rep, &Error{Op: "reap", Name: r.name, Err: err}
		}
		if got {
			break
		}
		if time.Now().After(deadline) {
			return rep, &Error{Op: "reap", Name: r.name, Err: fmt.Errorf("%w: an audit of the region did not finish", ErrNotReady)}
		}
		time.Sleep(100 * time.Microsecond)
	}
	for i := range r.cfg.Participants {
		s := (*participantSlot)(r.at(r.participantOffset(i)))
		if s.state.Load()&0xff != partAttached {
			continue
		}
		if alive, err := r.Alive(int(i)); err != nil || alive {
			continue
		}
		off := int64(r.participantOffset(i))
		got, err := ofdLock(lf, off)
		if err != nil {
			return rep, &Error{Op: "reap", Name: r.name, Err: err}
		}
		if !got {
			continue // another reaper, or a new participant attaching
		}
		if s.state.Load()&0xff == partAttached {
			rep.Add(r.reapSlot(i))
		}
		ofdUnlock(lf, off)
	}
	if rep.Participants > 0 {
		// A process killed between two steps of moving a reference leaves one nobody holds.
		r.requestSweep()
	}
	// If nobody else is present (no participant, no other reaper), the shared lock converts
	// to an exclusive one, and nothing can move while we hold it: audit. The tables always
	// (they are small); the slots when Reap was called, when something happened that calls for
	// it (a participant reclaimed, a sweep requested, a take not recorded), or when the pools'
	// counters disagree with what the histories keep.
	if got, err := ofdLock(lf, presenceByte); err == nil && got {
		rep.Add(r.audit(full || rep.Participants > 0 || r.sweepPending() || r.hdr.unrecorded.Load() != 0))
		return rep, nil
	}
	if full {
		rep.Swept = r.sweep()
		return rep, nil
	}
	rep.Swept = r.sweepOnRequest()
	return rep, nil
}

// testHookSweepStatesRead, if set, runs in a sweep between reading the slots' state words and
// reading the records: a test takes a reference there.
var testHookSweepStatesRead func()

// testHookSweepCellsRead, if set, runs in a sweep between reading the ring cells and reading
// the held lists: a test moves a reference from one to the other there.
var testHookSweepCellsRead func()

// sweep frees orphaned buffers (see Reap) and returns how many. The order of its reads is
// what makes it safe while others run:
//
//  1. It reads every slot's state word first (every slot below its pool's lent mark; a step
//     of a requested sweep, those of its range). A candidate has one reference and no owner,
//     and had the same state word at this process's previous sweep.
//  2. It then reads every place a reference can be recorded, in the order references move
//     between them: history cells (a late joiner's reference moves from there to a held entry),
//     hand-off words (a send to one inbox moves its loan's reference through one to a cell,
//     see handoff.go), ring cells (a take moves a reference from a cell to a held entry), held
//     entries. A reference that moves while the sweep reads is therefore seen at least once;
//     seeing one twice only spares a buffer. A candidate named anywhere is spared.
//  3. It frees a remaining candidate with a compare-and-swap from the state word read in
//     step 1, so a buffer whose count, owner or generation changed since is left alone.
//
// Only a take and a hand-off move a reference without touching the buffer's state word after
// step 1 could have seen it as a candidate: a take from a cell to a held entry, a hand-off from
// its word to a cell (the owner is cleared after the word is written), in the order of the
// reads. Every other move (a held message delivered again or remembered in a history, then
// released; a history message joined) adds
// a reference first, and the holder's release can bring the state word back to what step 1
// read, with the reference in a record already read. Adding a reference to a buffer not on
// loan therefore bumps the region's moves counter first; the sweep reads it before step 1 and
// after step 2, and frees nothing if it moved. (A move whose bump comes after the second read
// had its reference in its source record throughout, where step 2 saw it.)
func (r *Region) sweep() int {
	r.sweepMu.Lock()
	defer r.sweepMu.Unlock()
	return r.sweepRange(0, r.totalSlots)
}

// sweepRange is one sweep over the slots at positions [from, to) (pools in class order, each
// read up to its lent mark only: past it nothing was ever lent), confirming candidates against
// what this process saw there before. The caller holds r.sweepMu.
func (r *Region) sweepRange(from, to uint64) int {
	if r.hdr.unrecorded.Load() != 0 {
		r.sweepPrev = nil
		return 0
	}
	moves := r.hdr.moves.Load()
	if r.sweepPrev == nil {
		r.sweepPrev = make(map[uint32]uint64)
	}
	prev := r.sweepPrev
	var stale map[uint32]uint64
	base := uint64(0)
	for i := range r.pools {
		p := &r.pools[i]
		lo, hi := max(from, base), min(to, base+uint64(p.lentMark()))
		for pos := lo; pos < hi; pos++ {
			j := uint32(pos - base)
			v := p.slot(j).state.Load()
			k := p.handle(j, 0).slot()
			if stateRefs(v) != 1 || stateOwner(v) != 0 {
				delete(prev, k)
				continue
			}
			if pv, ok := prev[k]; ok && pv == v {
				if stale == nil {
					stale = make(map[uint32]uint64)
				}
				stale[k] = v
			}
			prev[k] = v
		}
		base += uint64(p.count)
	}
	if len(stale) == 0 {
		return 0
	}
	if testHookSweepStatesRead != nil {
		testHookSweepStatesRead()
	}
	seen := func(w uint64) {
		h := Handle(w & handleMask)
		if h == 0 {
			return // most words: free entries, empty history
		}
		if v, ok := stale[h.slot()]; ok && h.gen() == stateGen(v) {
			delete(stale, h.slot())
		}
	}
	for t := range r.cfg.Topics {
		_, cells := r.topicEntry(t)
		for k := range uint64(r.cfg.HistoryDepth) {
			seen((*atomic.Uint64)(unsafe.Add(cells, k*8)).Load())
		}
	}
	for i := range r.cfg.Participants {
		for k := range handoffWords {
			seen(r.handoffWord(i, k).Load()) // a reference on its way from a loan to a cell
		}
	}
	for j := range r.inboxes {
		v := &r.inboxes[j]
		if wordStatus(v.hdr.state.Load()) == inboxFree {
			continue // drained when it was freed: nobody takes from it
		}
		for k := range uint64(r.cfg.InboxCapacity) { // its whole share, whatever its capacity
			if w := (*atomic.Uint64)(unsafe.Add(v.cells, k*8)).Load(); w&markBit == 0 {
				seen(w) // a handle (markers name no buffer; a claimed cell's entry is read below)
			}
		}
	}
	if testHookSweepCellsRead != nil {
		testHookSweepCellsRead()
	}
	held := r.lay.sec.held
	for k := range held.size / 8 {
		seen((*atomic.Uint64)(r.at(held.off + k*8)).Load())
	}
	if r.hdr.moves.Load() != moves {
		return 0 // a reference moved between records while we read: the next sweep decides
	}
	if r.hdr.unrecorded.Load() != 0 {
		// The first TryPop or Pop ran while we read (it sets the flag before it takes, so a
		// reference it took before we read its cell is caught here): its reference is in no
		// record, so nothing we saw unnamed is an orphan.
		r.sweepPrev = nil
		return 0
	}
	n := 0
	for k, v := range stale {
		p, s, idx, err := r.decode(Handle(k) | makeHandle(0, 0, stateGen(v)))
		if err != nil {
			continue
		}
		if s.state.CompareAndSwap(v, v-1) {
			p.noteFree(idx)
			r.hdr.swept.Add(1)
			delete(r.sweepPrev, k)
			n++
		}
	}
	return n
}

// audit recomputes what every table should hold when no participant is alive: the caller holds
// the presence byte exclusively, so no process is attached and none can attach. Any inbox still
// open is closed and drained, every participant slot and half-made topic entry is freed. If
// recount is set (or the audit reclaimed a participant, or the pools' counters disagree with
// what the histories keep: see countsMatch), every buffer's reference count is set to the
// number of topic-history cells that name it, and the pools' counters to what the slots say
// (the slots below the lent marks: past them nothing was ever lent); otherwise no slot is
// read. Whoever took messages without recording them is gone, so the orphan sweep is turned
// back on, and a requested sweep is done.
func (r *Region) audit(recount bool) ReapReport {
	rep := ReapReport{Audited: true}
	r.hdr.unrecorded.Store(0)
	for i := range r.cfg.Participants {
		r.clearHandoff(i) // nobody is sending: a word still set was scribbled
	}
	for i := range r.cfg.Participants {
		s := (*participantSlot)(r.at(r.participantOffset(i)))
		if s.state.Load()&0xff != partFree {
			rep.Add(r.reapSlot(i))
			recount = true // it may have died between two steps of moving a reference
		}
	}
	for j := range r.inboxes {
		v := &r.inboxes[j]
		st := v.hdr.state.Load()
		if wordStatus(st) == inboxFree {
			continue
		}
		c := v.hdr.capacity
		if c < 2 || c > r.cfg.InboxCapacity || c&(c-1) != 0 {
			c = r.cfg.InboxCapacity
		}
		in := v.inbox(wordGen(st), c, DropOldest, 0)
		rep.Queued += in.drainCount()
		v.hdr.state.Store(inboxWord(inboxFree, wordGen(st), 0))
		rep.Inboxes++
	}
	hist := make(map[Handle]int)
	for t := range r.cfg.Topics {
		e, cells := r.topicEntry(t)
		switch e.state.Load() & 0xff {
		case topicCondemned: // its reclaimer is gone: the entry is ready
			e.state.Store(e.state.Load()&^0xff | topicReady)
			fallthrough
		case topicReady:
			for k := range min(uint64(e.histDepth), uint64(r.cfg.HistoryDepth)) {
				h := Handle((*atomic.Uint64)(unsafe.Add(cells, k*8)).Load())
				if h == 0 {
					continue
				}
				if _, _, _, err := r.decode(h); err != nil {
					(*atomic.Uint64)(unsafe.Add(cells, k*8)).Store(0)
					r.hdr.corrupt.Add(1)
					continue
				}
				hist[h]++
			}
		case topicFree, topicReclaimed:
		default:
			e.state.Store(topicReclaimed) // freeTopics below decides whether lookups probe past it
			rep.Topics++
		}
		if fp := e.fingerprint.Load(); fp != 0 && fp < fpClaimEnd {
			e.fingerprint.Store(0) // a claim whose claimer is gone
			rep.Topics++
		}
	}
	named := make(map[uint32]bool) // topics named by an allocated buffer
	if !recount && r.countsMatch(hist) {
		// Every buffer the counters say is allocated is one a history keeps: no slot needs
		// reading, and the topics named are those of the histories' buffers.
		for h := range hist {
			if _, s, _, err := r.decode(h); err == nil {
				named[s.topic] = true
			}
		}
	} else {
		rep.Recounted = true
		for i := range r.pools {
			p := &r.pools[i]
			allocated := uint64(0)
			for j := range p.lentMark() { // past the mark nothing was ever lent
				s := p.slot(j)
				v := s.state.Load()
				want := uint64(hist[p.handle(j, stateGen(v))])
				if v&(refsMask|ownerMask) != want {
					s.state.Store(stateGen(v)<<genShift | min(want, maxRefs))
					rep.Repaired++
				}
				if want != 0 {
					allocated++
					named[s.topic] = true
				}
			}
			for k := range p.hdr.shards {
				p.hdr.shards[k].allocs.Store(0)
				p.hdr.shards[k].frees.Store(0)
			}
			p.hdr.shards[r.shard].allocs.Store(allocated)
		}
	}
	rep.TopicsFreed = r.freeTopics(named)
	r.sweepDone()
	return rep
}

// countsMatch reports, during an audit once the dead are reaped and the inboxes drained,
// whether each pool's counters say exactly as many buffers are allocated as the topic
// histories keep (hist: the handles they name). Nobody is attached, so those are the only
// references there should be; if the counters say so, no slot needs reading. A leak (a
// reference a kill left behind), a scribbled counter or a scribbled state word that freed a
// buffer all make them disagree, and the audit then reads the slots.
func (r *Region) countsMatch(hist map[Handle]int) bool {
	kept := make([]int64, len(r.pools))
	for h := range hist {
		if c := h.class(); int(c) < len(kept) {
			kept[c]++
		}
	}
	for i := range r.pools {
		if r.pools[i].inUse() != kept[i] {
			return false
		}
	}
	return true
}

// freeTopics reclaims, during an audit, every ready topic entry whose history is empty and that
// no allocated buffer names (named), and returns how many. Nobody is attached, so no live Topic
// value is used in between (and one kept by a process that was attached is refused by Send: the
// entry's generation changes). No subscription survives an audit, and inboxes name topics only
// by pattern, so nothing else refers to the entry.
//
// The table is open-addressed, so an entry freed in the middle of another topic's probe
// sequence must not end that sequence: such an entry becomes "reclaimed", which a new name may
// take but a lookup probes past. Every other free or reclaimed entry becomes free.
func (r *Region) freeTopics(named map[uint32]bool) int {
	n := r.cfg.Topics
	freed := 0
	for t := range n {
		e, cells := r.topicEntry(t)
		if e.state.Load()&0xff != topicReady || named[t] {
			continue
		}
		empty := true
		for k := range uint64(r.cfg.HistoryDepth) { // every cell, whatever the topic's depth
			if (*atomic.Uint64)(unsafe.Add(cells, k*8)).Load() != 0 {
				empty = false
				break
			}
		}
		if !empty {
			continue
		}
		e.forget()
		e.state.Store(topicReclaimed)
		freed++
	}
	// Which entries lie on a kept topic's probe sequence, between its home and itself? The home
	// is recomputed from the name, not read from the stored hash, which a scribble could change.
	onPath := make([]bool, n)
	for t := range n {
		e, _ := r.topicEntry(t)
		if e.state.Load()&0xff != topicReady {
			continue
		}
		name := e.name[:min(e.nameLen, maxTopicName)]
		for i := uint32(topicHashBytes(name) % uint64(n)); i != t; i = (i + 1) % n {
			onPath[i] = true
		}
	}
	for t := range n {
		e, _ := r.topicEntry(t)
		if e.state.Load()&0xff == topicReclaimed && !onPath[t] {
			e.state.Store(topicFree)
		}
	}
	return freed
}

// reapSlot reclaims dead participant i. The caller holds the slot's lock and has seen the
// slot attached, so its owner is dead and nobody else is reaping it.
func (r *Region) reapSlot(i uint32) ReapReport {
	rep := ReapReport{Participants: 1}
	owner := i + 1
	held := r.heldWords(i)

	// 1. Its inboxes. A take it left half done is finished first (the claimed cell names the
	// held entry the message went to), then the ring is closed and drained. A take is made at
	// the head, or in a batch at most headEvery positions past it (ringrun.go): each of those
	// cells is looked at.
	for j := range r.inboxes {
		v := &r.inboxes[j]
		st := v.hdr.state.Load()
		if wordOwner(st) != owner || wordStatus(st) == inboxFree {
			continue
		}
		gen := wordGen(st)
		if !v.hdr.state.CompareAndSwap(st, inboxWord(inboxClosing, gen, owner)) {
			continue
		}
		c := v.hdr.capacity
		if c < 2 || c > r.cfg.InboxCapacity || c&(c-1) != 0 {
			c = r.cfg.InboxCapacity // scribbled or never written: drain the whole ring
			v.hdr.corrupt.Add(1)
		}
		in := v.inbox(gen, c, DropOldest, 0)
		h0 := v.hdr.head.Load()
		for q := h0; q < h0+in.headEvery(); q++ {
			if cv := in.cell(q).Load(); cv&(markBit|parityBit) == markBit|parityBit && cellGen(cv) == gen&cellGenMask &&
				(cv>>16)&claimedPosMask == q&claimedPosMask {
				if idx := cv & claimedIdxMask; idx < uint64(r.cfg.Held) {
					w := held[idx]
					if hv := w.Load(); hv&heldPending != 0 && hv&heldReserved == 0 {
						w.Store(hv &^ heldPending) // the take had happened: the entry owns it
					}
					in.cell(q).CompareAndSwap(cv, in.empty(q+in.cap))
				}
			}
		}
		rep.Queued += in.drainCount()
		wakeAll(v)
		v.hdr.state.Store(inboxWord(inboxFree, gen, 0))
		r.hdr.subGen.Add(1)
		rep.Inboxes++
	}

	// 1b. Its reader entries in the topics' slot rings (it holds the entry of every inbox of
	// its that read a ring): a new participant in its slot, and a new inbox in one of its
	// inbox slots, would otherwise find them, with their cursors where it died.
	r.clearRingReaders(owner)

	// 2. Its held list. A pending entry whose take did not happen belongs to the cell it was
	// taking from (drained above) or to the producer that evicted it: nothing to release.
	for _, w := range held {
		hv := w.Swap(0)
		if hv != 0 && hv&(heldReserved|heldPending) == 0 {
			r.releaseDropped(Handle(hv))
			rep.Held++
		}
	}

	// 3. Its loans: the owner field of each buffer's state word is the record. Then its
	// hand-off words: a reference it handed off and did not commit is in no record once they
	// are zero, and the sweep frees it (see handoff.go).
	rep.Loans = r.endLoans(owner)
	r.clearHandoff(i)

	// 4. Topic entries it claimed and never finished, and fingerprints it claimed and never
	// published (the next claimer writes the codec name afresh).
	for t := range r.cfg.Topics {
		e, _ := r.topicEntry(t)
		if st := e.state.Load(); st&0xff == topicClaiming && uint32(st>>16) == owner {
			if e.state.CompareAndSwap(st, topicReclaimed) { // perhaps on another name's probe sequence
				rep.Topics++
			}
		}
		if e.fingerprint.Load() == uint64(owner) && e.fingerprint.CompareAndSwap(uint64(owner), 0) {
			rep.Topics++
		}
	}
	r.undoCondemned(owner) // entries a ReclaimTopics it was running had condemned: ready again
	r.clearPins(i)

	// 5. Waits for room it had announced in other participants' inboxes.
	r.undoWaits(i)
	r.undoEvicts(i)

	// 6. The slot itself.
	s := (*participantSlot)(r.at(r.participantOffset(i)))
	s.state.Store(s.state.Load() &^ 0xff)
	r.hdr.reclaims.Add(1)
	return rep
}

// clearRingReaders frees the reader entries that participant owner (index + 1) holds in the
// live slot rings of every topic. Its slot is still attached, under the reaper's lock, so no
// other participant has its index yet: an entry that names it is the dead one's. Each entry is
// cleared with a compare-and-swap from the value read, so one that a new reader took over in
// the meantime (OpenSlotRing's second pass) stays its; the ring's generation is checked again
// just before, as OpenSlotRing does, so that a ring freed meanwhile is not written.
func (r *Region) clearRingReaders(owner uint32) {
	for t := range r.cfg.Topics {
		e, _ := r.topicEntry(t)
		h := e.ring.Load()
		if h == 0 {
			continue
		}
		g, err := r.viewRing(Handle(h), t)
		if err != nil {
			continue
		}
		for k := range g.readers {
			re := g.reader(k)
			if o := re.owner.Load(); o != 0 && uint32(o) == owner && g.alive() {
				re.owner.CompareAndSwap(o, 0)
			}
		}
	}
}

// heldWords returns participant i's held list, read from the region (not this process's
// index of it, which only its owner has).
func (r *Region) heldWords(i uint32) []*atomic.Uint64 {
	out := make([]*atomic.Uint64, r.cfg.Held)
	for k := range r.cfg.Held {
		out[k] = r.heldWordAt(i, k)
	}
	return out
}
