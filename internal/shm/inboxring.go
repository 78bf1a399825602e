package shm

import (
	"math/bits"
	"runtime"
	"sync/atomic"
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
	t   Topic
	cap uint64 // the inbox's cells: a ring is read only if it has more slots

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
}

// ringCopies are an inbox's copies of messages taken from a ring, one per message held at
// once. The pool value lets a Held name a copy as it names a buffer (Data, Cap); it is the
// first field, so that the Held's pool pointer leads back to the copies.
type ringCopies struct {
	pl   pool
	mem  []byte
	free atomic.Uint64 // bit k: copy k is free
	n    int
}

// maxRingCopies bounds the messages of a ring an inbox's consumer holds at once (Receive fails
// with ErrHeldFull beyond, as it does when the held list is full).
const maxRingCopies = 64

func newRingCopies(payload uint64, slots uint64) *ringCopies {
	n := int(min(slots, maxRingCopies))
	c := &ringCopies{mem: make([]byte, uint64(n)*payload), n: n}
	c.pl.size = uint32(payload)
	c.pl.class = -1
	c.free.Store(1<<n - 1)
	if n == 64 {
		c.free.Store(^uint64(0))
	}
	return c
}

func (c *ringCopies) get() int {
	for {
		f := c.free.Load()
		if f == 0 {
			return -1
		}
		k := bits.TrailingZeros64(f)
		if c.free.CompareAndSwap(f, f&^(1<<k)) {
			return k
		}
	}
}

// put frees copy k; false if it was free already (a second release).
func (c *ringCopies) put(k int) bool {
	for {
		f := c.free.Load()
		if k < 0 || k >= c.n || f&(1<<k) != 0 {
			return false
		}
		if c.free.CompareAndSwap(f, f|1<<k) {
			return true
		}
	}
}

func (c *ringCopies) data(k int) unsafe.Pointer {
	return unsafe.Pointer(&c.mem[k*int(c.pl.size)])
}

func copiesOf(pl *pool) *ringCopies { return (*ringCopies)(unsafe.Pointer(pl)) }

// newInboxRing is the ring side of a new inbox of capacity cells that reads t's slot ring,
// made before the inbox is published: a ring t has now is read from its next message on (a
// send of it from now on skips the inbox only once the inbox is published, and is in the
// ring from that position), a ring made later from its first.
func (p *Participant) newInboxRing(t Topic, capacity uint64) *InboxRing {
	ir := &InboxRing{t: t, cap: capacity}
	h := t.e.ring.Load()
	ir.seen.Store(h)
	if h != 0 {
		ir.open(p, Handle(h), false)
	}
	return ir
}

// open starts reading the ring h names, if it is live and has more slots than the inbox has
// cells.
func (ir *InboxRing) open(p *Participant, h Handle, fromStart bool) {
	g, err := p.r.viewRing(h, ir.t.index)
	if err != nil || !g.alive() || g.slots <= ir.cap {
		return
	}
	rr, err := p.OpenSlotRing(ir.t, fromStart)
	if err != nil || rr.g.h != h {
		if rr != nil {
			rr.Close()
		}
		return
	}
	if c := ir.copies.Load(); c == nil || uint64(c.pl.size) < g.payload {
		ir.copies.Store(newRingCopies(g.payload, g.slots))
	}
	ir.rd.Store(rr)
}

// take copies the next message of the inbox's ring into a local copy and fills dst with it.
// It reports false if no ring message is ready, and ErrHeldFull when every copy is held.
func (ir *InboxRing) take(p *Participant, in *Inbox, dst *Held) (bool, error) {
	if ir.rd.Load() == nil && ir.t.e.ring.Load() == ir.seen.Load() {
		return false, nil // no ring, and no new one: the common case of a subscription
	}
	for !ir.lock.CompareAndSwap(0, 1) {
		runtime.Gosched()
	}
	defer storeRelease(&ir.lock, 0)
	for range 4 { // a ring that ended, and the one after it
		rr := ir.rd.Load()
		if rr == nil {
			w := ir.t.e.ring.Load()
			if w == ir.seen.Load() {
				return false, nil
			}
			ir.seen.Store(w)
			if w != 0 {
				ir.open(p, Handle(w), true)
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
			in.v.hdr.dropOldest.Add(l - ir.lost)
			ir.lost = l
		}
		if ok {
			dst.p, dst.idx, dst.meta = p, -1-int32(k), m
			dst.buf = Buffer{p: &c.pl, data: c.data(k)}
			return true, nil
		}
		c.put(k)
		if err == nil {
			return false, nil
		}
		// Ended (or a message too long for the copies, which cannot happen: they hold the
		// ring's payload): look for the next ring.
		ir.rd.Store(nil)
		ir.lost = 0
	}
	return false, nil
}

// ready reports whether take would find something: the message at the reader's cursor, a lap
// to skip, a ring that ended, or a new ring. It may be called from any goroutine (the
// dispatcher's leader): it reads the reader's cursor in shared memory, not the reader.
func (ir *InboxRing) ready() bool {
	rr := ir.rd.Load()
	if rr == nil {
		return ir.t.e.ring.Load() != ir.seen.Load()
	}
	g := rr.g
	c := rr.entry.cursor.Load()
	v := g.slot(c).seq.Load()
	if v == c {
		return true
	}
	if s := v &^ ringBusy; s > c && (s-c)&(g.slots-1) == 0 && g.w.published.Load()+1 >= s {
		return true
	}
	return !g.alive() || g.hd.closed.Load() != 0 && g.w.published.Load() < c
}

// backlog returns how many messages of the ring the consumer has not read yet.
func (ir *InboxRing) backlog() int {
	rr := ir.rd.Load()
	if rr == nil {
		return 0
	}
	pub, c := rr.g.w.published.Load(), rr.entry.cursor.Load()
	if pub+1 <= c || !rr.g.alive() {
		return 0
	}
	return int(min(pub+1-c, rr.g.slots))
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

// releaseCopy releases a Held that names a ring copy (idx < 0).
func (h *Held) releaseCopy() error {
	if h.buf.p == nil || !copiesOf(h.buf.p).put(int(-1-h.idx)) {
		return ErrReleased
	}
	return nil
}

// RingTargets splits targets, the inboxes a send of t reaches, for a writer of a ring of
// slots slots: the inboxes that read the ring (moved to the end, in their order) and the rest.
// It returns how many read the ring.
func (t Topic) RingTargets(targets []Inbox, slots int) (n int) {
	defer unguard(guard(), nil)
	k := 0
	for i := range targets {
		in := &targets[i]
		if in.v.hdr.topic == t.index+1 && in.policy == DropOldest && !in.group && in.cap < uint64(slots) {
			continue
		}
		targets[k], targets[i] = targets[i], targets[k]
		k++
	}
	return len(targets) - k
}

// WakeRingReader wakes in's consumer if it sleeps: for a ring's writer, after a message it
// committed to the ring, to an inbox that reads the ring instead of being sent the message.
func (in *Inbox) WakeRingReader() {
	defer unguard(guard(), nil)
	wakeConsumer(in.v)
}

// RingCopyHeld reports whether h names a message taken from a slot ring (a local copy).
func (h *Held) RingCopyHeld() bool { return h.idx < 0 }
