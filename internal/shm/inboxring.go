package shm

import (
	"errors"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// An inbox's ring side: a consumer that subscribes to one topic, drops its oldest message on
// overflow and belongs to no queue group reads the topic's slot ring, if the topic has one with
// more slots than the inbox has cells, instead of its inbox; the ring's writer skips such an
// inbox and wakes it instead (see Topic.RingTargets). Both decide from the same facts: the
// inbox header's topic field, its policy, group and capacity, which OpenInbox writes before
// the inbox is published (InboxConfig.RingOf), and the ring's slot count, which never
// changes. So every message of the ring's
// writer reaches such a consumer exactly once, through the ring, in order; messages of other
// publishers of the topic still come through the inbox.
//
// A message taken from a ring is copied out of its slot (a slot is reused a lap later,
// whoever still reads it) into one of the inbox's local copies, which a Held then names in
// place of a held entry (idx < 0): the consumer holds no reference in shared memory, and
// nothing is left for a reaper if it dies.

// InboxRing is the ring side of an inbox, shared by the copies of its Inbox.
type InboxRing struct {
	t     Topic
	cap   uint64 // the inbox's cells: a ring is read only if it has more slots
	inbox uint32 // the inbox's index, recorded in its reader entries

	// lock is held (1) by the goroutine polling the ring: one reader at a time. It is a
	// compare-and-swap and a plain store, one locked instruction a take instead of a mutex's
	// two.
	lock atomic.Uint64
	rd   atomic.Pointer[RingReader]
	// seen is the topic's ring word the inbox last acted on: a ring named there when the
	// inbox was opened is read from its next message, one named later from its first.
	seen   atomic.Uint64
	copies atomic.Pointer[ringCopies]
	lost   uint64 // lapped messages already counted in the inbox's drops
	// damaged: messages skipped over a slot written over, already counted in its corrupt words
	damaged uint64
	// endedH and endedAt: the last ring the inbox read to its end, and where it stopped. A ring
	// that only looked ended (its closed word and the topic's word written over, then put back
	// by its writer) is read on from there, not again from its start.
	endedH, endedAt uint64
	// refused is a topic's ring word whose ring the inbox could not open because its header did
	// not describe it (written over): its writer puts the header back within a second, so the
	// inbox tries again now and then (tries), rather than read nothing of it while the writer
	// skips its queue.
	refused     atomic.Uint64
	refusedFrom uint64       // where to start reading it once it opens
	lastTry     atomic.Int64 // when a waiting consumer was last sent to try (stalled)
}

// refusedRetry is how often a waiting consumer tries again a ring it refused (InboxRing.refused).
const refusedRetry = 50 * time.Millisecond

// ringCopies are an inbox's copies of messages taken from a ring, one per message held at
// once. The pool value lets a Held name a copy as it names a buffer (Data, Cap); it is the
// first field, so that the Held's pool pointer leads back to the copies. A copy's flag is 1
// while a message holds it: taken by the goroutine that polls the ring (under the ring's
// lock), given back by Release from any goroutine, each with a plain store, no locked
// instruction. The flag holds the message's mark (its sequence number, or 1), so that a second
// Release of a message whose copy another message has taken since finds it is not its own.
type ringCopies struct {
	pl    pool
	mem   []byte
	flags []atomic.Uint64
	hint  int // where get looks first (under the ring's lock)
}

// maxRingCopies bounds the messages of a ring an inbox's consumer holds at once (Receive fails
// with ErrHeldFull beyond, as it does when the held list is full).
const maxRingCopies = 64

func newRingCopies(payload uint64, slots uint64) *ringCopies {
	n := int(min(slots, maxRingCopies))
	c := &ringCopies{mem: make([]byte, uint64(n)*payload), flags: make([]atomic.Uint64, n)}
	c.pl.size = uint32(payload)
	c.pl.class = -1
	return c
}

// get takes a free copy (the caller holds the ring's lock), or returns -1.
func (c *ringCopies) get() int {
	n := len(c.flags)
	for j := range n {
		k := c.hint + j
		if k >= n {
			k -= n
		}
		if c.flags[k].Load() == 0 {
			storeRelease(&c.flags[k], 1) // taken; the caller marks it with mark once filled
			c.hint = k
			return k
		}
	}
	return -1
}

// mark returns the mark of a copy holding message seq.
func copyMark(seq uint64) uint64 { return max(seq, 1) }

// put frees copy k, which a message with mark m holds; false if it does not (a second
// release).
func (c *ringCopies) put(k int, m uint64) bool {
	if k < 0 || k >= len(c.flags) || c.flags[k].Load() != m {
		return false
	}
	storeRelease(&c.flags[k], 0)
	return true
}

func (c *ringCopies) data(k int) unsafe.Pointer {
	return unsafe.Pointer(&c.mem[k*int(c.pl.size)])
}

func copiesOf(pl *pool) *ringCopies { return (*ringCopies)(unsafe.Pointer(pl)) }

// newInboxRing is the ring side of a new inbox of capacity cells that reads t's slot ring,
// made before the inbox is published: a ring t has now is read from its next message on (a
// send of it from now on skips the inbox only once the inbox is published, and is in the
// ring from that position), a ring made later from its first.
func (p *Participant) newInboxRing(t Topic, capacity uint64, inbox uint32) *InboxRing {
	ir := &InboxRing{t: t, cap: capacity, inbox: inbox}
	h := t.e.ring.Load()
	ir.seen.Store(h)
	if h != 0 {
		ir.open(p, Handle(h), 0)
	}
	return ir
}

// open starts reading the ring h names, from message from (0: after the last one published),
// if it is live and has more slots than the inbox has cells.
func (ir *InboxRing) open(p *Participant, h Handle, from uint64) {
	g, err := p.r.viewRing(h, ir.t.index)
	if errors.Is(err, ErrCorrupt) {
		if ir.refused.Load() != uint64(h) {
			p.r.hdr.corrupt.Add(1) // once per ring refused
			if from == 0 {
				// After the last message published, now: the count is where a ring's header
				// does not say (an untrusted value, as every count: see RingReader.behind).
				from = 1
				if b, err := p.r.buffer(h); err == nil && b.Cap() >= ringReadersOff {
					from = (*ringWriterLine)(unsafe.Add(b.data, ringWriterOff)).published.Load() + 1
				}
			}
			ir.refusedFrom = from
			ir.refused.Store(uint64(h))
		}
		return
	}
	ir.refused.Store(0)
	if err != nil || !g.alive() || g.slots <= ir.cap {
		return
	}
	rr, err := p.openSlotRing(ir.t, from, ir.inbox+1)
	if err != nil || rr.g.h != h || rr.g.slots <= ir.cap {
		// (The reader's view of the ring is its own, read again: its shape is what counts.)
		if rr != nil {
			rr.Close()
		}
		return
	}
	g = rr.g
	if c := ir.copies.Load(); c == nil || uint64(c.pl.size) < g.payload || len(c.flags) < int(min(g.slots, maxRingCopies)) {
		ir.copies.Store(newRingCopies(g.payload, g.slots))
	}
	ir.rd.Store(rr)
}

// take copies the next message of the inbox's ring into a local copy and fills dst with it.
// It reports false if no ring message is ready, and ErrHeldFull when every copy is held.
func (ir *InboxRing) take(p *Participant, in *Inbox, dst *Held) (bool, error) {
	return ir.takeSpin(p, in, dst, 0)
}

// takeSpin is take that, finding no message, watches the slot at the reader's cursor for up
// to spin turns before it gives up, holding the ring's lock: a message that arrives meanwhile
// is copied out at once, without the way back through the caller's wait and a second
// locked instruction for the lock. It stops watching when the inbox itself has a message.
// Another goroutine's take waits for the lock meanwhile, for spin turns at most.
func (ir *InboxRing) takeSpin(p *Participant, in *Inbox, dst *Held, spin int) (bool, error) {
	if !ir.active() {
		return false, nil
	}
	for !ir.lock.CompareAndSwap(0, 1) {
		runtime.Gosched()
	}
	defer storeRelease(&ir.lock, 0)
	for ends := 0; ends < 4; { // a ring that ended, and the one after it
		rr := ir.rd.Load()
		if rr == nil {
			w := ir.t.e.ring.Load()
			if w == ir.seen.Load() && (w == 0 || w != ir.refused.Load()) {
				return false, nil
			}
			// Open, then mark the word seen: until both are done, backlog (Len, Drain on another
			// goroutine) counts the new ring's messages from the word, after it from the reader.
			if w != 0 {
				from := uint64(1) // a ring made since the inbox last looked: from its start
				switch w {
				case ir.endedH:
					from = ir.endedAt
				case ir.refused.Load():
					from = ir.refusedFrom
				}
				ir.open(p, Handle(w), from)
			}
			ir.seen.Store(w)
			if w == ir.refused.Load() && ir.rd.Load() == nil {
				return false, nil // refused again
			}
			continue
		}
		c := ir.copies.Load()
		k := c.get()
		if k < 0 {
			return false, ErrHeldFull
		}
		m, ok, err := rr.poll(unsafe.Slice((*byte)(c.data(k)), c.pl.size))
		if l := rr.lost; l != ir.lost {
			in.v.hdr.ringLost.Add(l - ir.lost)
			ir.lost = l
		}
		if d := rr.damaged; d != ir.damaged {
			in.v.hdr.corrupt.Add(d - ir.damaged)
			ir.damaged = d
		}
		if ok {
			storeRelease(&c.flags[k], copyMark(m.Seq))
			dst.p, dst.idx, dst.meta = p, -1-int32(k), m
			dst.buf = Buffer{p: &c.pl, data: c.data(k)}
			in.noteRingAge(m.Seq, m.Stamp)
			return true, nil
		}
		storeRelease(&c.flags[k], 0)
		if err == nil {
			if spin > 0 && rr.await(&spin, in) {
				continue
			}
			return false, nil
		}
		// Ended (or a message too long for the copies, which cannot happen: they hold the
		// ring's payload): look for the next ring.
		ir.endedH, ir.endedAt = uint64(rr.g.h), rr.next
		ir.rd.Store(nil)
		ir.lost, ir.damaged = 0, 0
		ends++
	}
	return false, nil
}

// await watches the sequence word of the slot at the reader's cursor for up to *turns turns
// (counted down), and reports whether it changed: then a poll may find the message. A word
// that already shows the message at its first look was committed after the caller's poll and
// before the watch: that is reported at once (watching for a change from it would miss the
// message for all the turns, a few microseconds). It gives up early when the inbox itself has
// a message.
func (rr *RingReader) await(turns *int, in *Inbox) bool {
	sl := rr.g.slot(rr.next)
	step()
	v := sl.seq.Load()
	if v == rr.next {
		// Committed since the poll looked (or a word written over with the cursor's value,
		// which the poll will judge): a turn, so that the caller's loop stays bounded.
		*turns--
		return true
	}
	for ; *turns > 0; *turns-- {
		step()
		if sl.seq.Load() != v {
			*turns--
			return true
		}
		if *turns&15 == 0 && in.inboxPending() {
			return false
		}
	}
	return false
}

// active reports whether the inbox reads a ring or has one to look at: false in the common
// case of a subscription whose topic has no ring, at the cost of three loads (inlined).
func (ir *InboxRing) active() bool {
	return ir.rd.Load() != nil || ir.t.e.ring.Load() != ir.seen.Load() || ir.refused.Load() != 0
}

// ready reports whether take would find something: the message at the reader's cursor, a lap
// to skip, a ring that ended, or a new ring. It may be called from any goroutine (the
// dispatcher's leader): it reads the reader's copy of its cursor (pos), not the reader.
func (ir *InboxRing) ready() bool {
	rr := ir.rd.Load()
	if rr == nil {
		return ir.t.e.ring.Load() != ir.seen.Load()
	}
	g := rr.g
	c := rr.pos.Load()
	sl := g.slot(c)
	v := sl.seq.Load()
	if v == c {
		// The writer stores the tag before the word, so a word that shows c over another
		// tag was written over by another process: the poll would not take it (it waits
		// for the writer), and a wait that called it ready would spin without end, deaf to
		// its context, until the writer came to c.
		return slotTag(sl) == uint32(c)
	}
	if s := v &^ ringBusy; s > c && (s-c)&(g.slots-1) == 0 && g.w.published.Load()+1 >= s {
		return true
	}
	return g.ended(c)
}

// stalled reports whether the message at the reader's cursor is overdue (committed, and its
// slot written over: slotRing.stalled), or the reader's cursor is ahead of anything the writer
// has committed (slotRing.rewind: a count or a lap another process forged). The consumer's
// periodic look (Inbox.pending) calls it, so that a waiting consumer takes and its poll
// repairs the damage.
func (ir *InboxRing) stalled() bool {
	rr := ir.rd.Load()
	if rr == nil {
		// A ring refused for its header: a take tries it again every refusedRetry (and at
		// each message: its writer wakes a sleeping consumer). The leader of a process's
		// sleeping consumers looks every longSleep.
		r := ir.refused.Load()
		if r == 0 || r != ir.t.e.ring.Load() {
			return false
		}
		now, last := Now(), ir.lastTry.Load()
		return now-last >= int64(refusedRetry) && ir.lastTry.CompareAndSwap(last, now)
	}
	c := rr.pos.Load()
	if rr.g.stalled(c) {
		return true
	}
	_, _, ahead := rr.g.rewind(c, rr.good.Load(), rr.floor.Load())
	return ahead
}

// backlog returns how many messages of the ring the consumer has not read yet.
func (ir *InboxRing) backlog() int {
	rr := ir.rd.Load()
	if rr == nil {
		// A ring that appeared since the consumer last looked: it reads it from the start.
		w := ir.t.e.ring.Load()
		if w == 0 || w == ir.seen.Load() {
			return 0
		}
		g, err := ir.t.r.viewRing(Handle(w), ir.t.index)
		if err != nil || !g.alive() || g.slots <= ir.cap {
			return 0
		}
		return int(min(g.w.published.Load(), g.slots))
	}
	pub, c := rr.g.w.published.Load(), rr.pos.Load()
	if !rr.g.alive() {
		return 0
	}
	if pub+1 <= c {
		// The writer stores a message's sequence word before its count: a message committed
		// a moment ago (or by a writer killed between the two stores) is readable already.
		if rr.g.slot(c).seq.Load() == c {
			return 1
		}
		return 0
	}
	return int(min(pub+1-c, rr.g.slots))
}

// ringDepth reports whether inbox i's consumer, participant owner (index + 1, from the
// inbox's state word), reads the slot ring of topic ti, and how many of its messages it has
// not read: for tools (Region.InboxStats), from the reader entry that names both the inbox
// and its owner. An entry of an earlier owner of the inbox's slot (a consumer that died and
// whose entry no reaper cleared) names another participant, or, if the new owner has the same
// participant slot, shows a cursor no further than the live one's (a new reader starts at the
// ring's next message or later, and cursors only move forward): the furthest matching
// cursor is the live reader's.
func (r *Region) ringDepth(ti, i, owner uint32) (bool, int) {
	if ti >= r.cfg.Topics {
		return false, 0
	}
	e, _ := r.topicEntry(ti)
	h := e.ring.Load()
	if h == 0 {
		return false, 0
	}
	g, err := r.viewRing(Handle(h), ti)
	if err != nil || !g.alive() {
		return false, 0
	}
	tag := (uint64(i)+1)<<32 | uint64(owner)
	found, c := false, uint64(0)
	for k := range g.readers {
		re := g.reader(k)
		if re.owner.Load() != tag {
			continue
		}
		found, c = true, max(c, re.cursor.Load())
	}
	if !found {
		return false, 0
	}
	if pub := g.w.published.Load(); pub+1 > c {
		return true, int(min(pub+1-c, g.slots))
	}
	return true, 0
}

// close gives the reader's entry back (the inbox is closing).
func (ir *InboxRing) close() {
	for !ir.lock.CompareAndSwap(0, 1) {
		runtime.Gosched()
	}
	defer storeRelease(&ir.lock, 0)
	if rr := ir.rd.Swap(nil); rr != nil {
		rr.Close()
	}
}

// ReleaseCopy is Release of a message taken from a slot ring (FromRing): it touches no
// shared memory.
func (h *Held) ReleaseCopy() error {
	if h.buf.p == nil || !copiesOf(h.buf.p).put(int(-1-h.idx), copyMark(h.meta.Seq)) {
		return ErrReleased
	}
	return nil
}

// RingTargets splits targets, the inboxes a send of t reaches, for a writer of a ring of
// slots slots: the inboxes that read the ring (moved to the end, in their order) and the rest.
// It returns how many read the ring.
//
// The inbox's pattern must be the topic's name as well as its topic field name the topic: a
// word written over in one of them makes the inbox a target sent copies through its queue (a
// subscriber that reads the ring too then receives them twice), never one skipped that does not
// read the ring (which would lose everything silently).
func (t Topic) RingTargets(targets []Inbox, slots int) (n int) {
	defer unguard(guard(), nil)
	name := t.Name()
	k := 0
	for i := range targets {
		in := &targets[i]
		if in.v.hdr.topic == t.index+1 && in.policy == DropOldest && !in.group && in.cap < uint64(slots) &&
			t.r.patternString(in.v.index) == name {
			continue
		}
		targets[k], targets[i] = targets[i], targets[k]
		k++
	}
	return len(targets) - k
}
