package shm

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Slot rings: a publisher's ring of message slots, for the latency-bound path beside the pool
// (docs/slot-rings.md). A reader polls the header of the slot at its cursor, and a small
// message's bytes sit on the line it polled: one line transfer a message, where a ring of
// offsets needs two (the cell, then the buffer). The ring lives in one pool buffer that the
// writer keeps on loan for the ring's life, so that the crash-safety argument of the pool
// covers it unchanged: the buffer has exactly one reference, the writer's loan, which the
// reaper ends if the writer dies. Readers hold no reference and write only a line of their
// own: a reader validates each message it copies out (a sequence word read before and after,
// and the buffer's generation), so a slot overwritten, or a ring freed and reused, under it is
// never returned as a message.
//
// The ring is drop-oldest: the writer never waits for a reader while it publishes. A reader
// that was lapped counts the messages it missed and goes on from the oldest the ring still
// holds. On Close the writer waits (bounded by its context) for its live readers to read
// what it published, so that a clean close loses nothing.
//
// Layout of the buffer's payload (it starts 32 bytes past a line boundary, beside the pool's
// slot header, whose state word carries the generation readers check):
//
//	off              size         field
//	0                4            magic "OFQR"
//	4                4            slots (a power of two)
//	8                4            slot size in bytes (a multiple of 64)
//	12               4            reader entries
//	16               4            topic index
//	20               4            writer participant index + 1
//	24               8            closed: nonzero once the writer closes (on this line, which
//	                              readers keep in cache while they poll, not the writer's)
//	32               64           the writer's line: published (the last sequence committed)
//	96               64 x readers reader entries, a line each: inbox index + 1 << 32 |
//	                              participant index + 1 (0: free), then the reader's cursor
//	                              (the next sequence it reads)
//	96 + 64 readers  slots x size slots: sequence word (0: never written; busy bit | s while
//	                              message s is being written; s once it is), length (4),
//	                              tag (4: the low half of s, stored with the header before the
//	                              sequence word; its complement while the slot is filled), topic
//	                              sequence (8), publish time (8), payload
const (
	ringMagic      = 0x5251464f // "OFQR"
	ringWriterOff  = 32
	ringReadersOff = 96
	ringSlotHeader = 32
	ringBusy       = 1 << 63

	// MaxRingSlots and MaxRingReaders bound a slot ring's shape; MaxRingPayload bounds the
	// payload of one slot.
	MaxRingSlots   = 1 << 16
	MaxRingReaders = 64
	MaxRingPayload = 1 << 16
)

// ErrRingTaken is returned by CreateSlotRing when the topic already has a live slot ring that
// is not closed: a topic has at most one writer's ring at a time.
var ErrRingTaken = errors.New("topic already has a slot ring")

// ErrRingLoaned is returned by SlotRing.Loan while another loan of the ring is out: a ring
// lends one message at a time.
var ErrRingLoaned = errors.New("the publisher's slot ring is lent already")

// ErrNoRing is returned by OpenSlotRing when the topic has no live slot ring.
var ErrNoRing = errors.New("topic has no slot ring")

// ErrRingReaders is returned by OpenSlotRing when every reader entry of the ring is held by a
// live participant.
var ErrRingReaders = errors.New("slot ring has no free reader entry")

// ErrRingEnded is returned by RingReader.Poll once the ring's writer has closed and the reader
// has read everything it published, or the ring was freed (its writer died).
var ErrRingEnded = errors.New("slot ring ended")

type ringHeader struct {
	magic    uint32
	slots    uint32
	slotSize uint32
	readers  uint32
	topic    uint32
	writer   uint32
	closed   atomic.Uint64
}

type ringWriterLine struct {
	published atomic.Uint64
	_         [56]byte
}

type ringReaderEntry struct {
	owner  atomic.Uint64
	cursor atomic.Uint64
	_      [48]byte
}

type ringSlot struct {
	seq      atomic.Uint64
	length   uint32
	tag      uint32 // the low half of the sequence, written with the header, before seq; its complement while the slot is filled
	topicSeq uint64
	stamp    int64
}

// RingShape is the shape of a slot ring: Slots slots (a power of two, at least 2) of Payload
// bytes each, and Readers reader entries (at least 1).
type RingShape struct {
	Slots, Payload, Readers int
}

func (s RingShape) slotSize() uint64 { return uint64(ringSlotHeader+s.Payload+63) &^ 63 }

// Bytes returns the size of the buffer a ring of shape s takes, as an int: for a shape that
// CreateSlotRing accepts (Size is the size of any shape).
func (s RingShape) Bytes() int { return int(s.Size()) }

// Size returns the size of the buffer a ring of shape s takes.
func (s RingShape) Size() uint64 {
	return uint64(ringReadersOff) + 64*uint64(s.Readers) + uint64(s.Slots)*s.slotSize()
}

func (s RingShape) check() error {
	switch {
	case s.Slots < 2 || s.Slots > MaxRingSlots || s.Slots&(s.Slots-1) != 0:
		return fmt.Errorf("offq: slot ring: %d slots: want a power of two from 2 to %d", s.Slots, MaxRingSlots)
	case s.Payload < 1 || s.Payload > MaxRingPayload:
		return fmt.Errorf("offq: slot ring: payload %d bytes: want 1 to %d", s.Payload, MaxRingPayload)
	case s.Readers < 1 || s.Readers > MaxRingReaders:
		return fmt.Errorf("offq: slot ring: %d readers: want 1 to %d", s.Readers, MaxRingReaders)
	}
	// The largest shape takes 4 GiB, whose byte count does not fit a 32-bit int (Bytes would
	// wrap around, and a buffer of the wrapped size be lent for it).
	if n := s.Size(); n > maxMapped {
		return fmt.Errorf("offq: slot ring: %d slots of %d bytes take %d bytes: %w (a %d-bit process maps %d at most)", s.Slots, s.Payload, n, ErrTooLarge, strconv.IntSize, uint64(maxMapped))
	}
	return nil
}

// ring is a checked view of a ring's buffer, the same in writer and readers.
type slotRing struct {
	r        *Region
	h        Handle
	state    *atomic.Uint64 // the buffer's state word: its generation says the ring is alive
	base     unsafe.Pointer
	slots    uint64
	slotSize uint64
	payload  uint64
	readers  uint64
	topic    uint32
	hd       *ringHeader
	w        *ringWriterLine
	word     *atomic.Uint64 // the topic entry's ring word
}

func (g *slotRing) slot(s uint64) *ringSlot {
	return (*ringSlot)(unsafe.Add(g.base, ringReadersOff+64*g.readers+((s-1)&(g.slots-1))*g.slotSize))
}

func (g *slotRing) payloadOf(sl *ringSlot) unsafe.Pointer {
	return unsafe.Add(unsafe.Pointer(sl), ringSlotHeader)
}

func (g *slotRing) reader(i uint64) *ringReaderEntry {
	return (*ringReaderEntry)(unsafe.Add(g.base, ringReadersOff+64*i))
}

// alive reports whether the buffer is still the ring: its generation is the handle's.
func (g *slotRing) alive() bool {
	step()
	v := g.state.Load()
	return stateGen(v) == g.h.gen() && stateRefs(v) != 0
}

// ended reports whether a reader whose next message is next has read the whole ring: the
// ring was freed, or its writer closed it, published nothing from next on, and the topic names
// a ring other than this one (or none). The last condition keeps a reader on a ring whose
// closed word another process wrote over while its writer goes on: the reader leaves a
// retired ring when a new one takes the topic or the old one is freed, never while the topic
// still names it.
func (g *slotRing) ended(next uint64) bool {
	if !g.alive() {
		return true
	}
	step()
	return g.hd.closed.Load() != 0 && g.w.published.Load() < next && g.word.Load() != uint64(g.h)
}

// viewRing checks the ring that h names, as read from a topic entry another process wrote:
// the handle must name a live buffer, the buffer must hold a ring header whose shape fits in
// it, and the ring must belong to topic.
func (r *Region) viewRing(h Handle, topic uint32) (*slotRing, error) {
	if topic >= r.cfg.Topics {
		return nil, fmt.Errorf("%w: slot ring of topic %d, out of range", ErrCorrupt, topic)
	}
	buf, err := r.buffer(h)
	if err != nil {
		return nil, err
	}
	hd := (*ringHeader)(buf.data)
	sh := RingShape{Slots: int(hd.slots), Readers: int(hd.readers)}
	size := uint64(hd.slotSize)
	if hd.magic != ringMagic || hd.topic != topic || sh.Slots < 2 || sh.Slots > MaxRingSlots || sh.Slots&(sh.Slots-1) != 0 ||
		sh.Readers < 1 || sh.Readers > MaxRingReaders || size < 64 || size%64 != 0 || size > ringSlotHeader+MaxRingPayload+63 {
		return nil, fmt.Errorf("%w: slot ring %#x: header does not describe a ring of topic %d", ErrCorrupt, uint64(h), topic)
	}
	if total := uint64(ringReadersOff) + 64*uint64(sh.Readers) + uint64(sh.Slots)*size; total > uint64(buf.Cap()) {
		return nil, fmt.Errorf("%w: slot ring %#x: %d bytes in a buffer of %d", ErrCorrupt, uint64(h), total, buf.Cap())
	}
	return &slotRing{
		r: r, h: h, state: &buf.s.state, base: buf.data,
		slots: uint64(sh.Slots), slotSize: size, payload: size - ringSlotHeader, readers: uint64(sh.Readers), topic: topic,
		hd: hd, w: (*ringWriterLine)(unsafe.Add(buf.data, ringWriterOff)), word: r.ringWord(topic),
	}, nil
}

// ringWord returns topic i's ring word (i in range).
func (r *Region) ringWord(i uint32) *atomic.Uint64 {
	e, _ := r.topicEntry(i)
	return &e.ring
}

// SlotRing is the writing side of a slot ring: one goroutine at a time.
type SlotRing struct {
	// pl comes first: a Loan of the ring names it as its pool (Bytes, Cap) and finds the
	// ring from it (Loan.ring).
	pl   pool
	g    *slotRing
	p    *Participant
	t    Topic
	loan Loan
	next uint64 // the sequence of the next message
	cur  *ringSlot
	// closed and freed: Retire and Free have run.
	closed atomic.Bool
	freed  bool
	stamp  int64 // the last message's publish time
	// stage is the loans' buffer (Loan); lent counts the loans made, done the last one
	// committed or discarded.
	stage      []byte
	stageP     unsafe.Pointer // &stage[0]
	lent, done uint64
	limit      uint64 // the largest message: RingShape.Payload (the slot may hold more)
	// loaned is the loan token: 1 from Loan to EndLoan (or abandon), and for good once the
	// ring is retired (finishRetire). retired is set then.
	loaned    atomic.Uint64
	retired   atomic.Bool
	retiredAt time.Time // set before retired
	// displaced: RepairWord found another ring in the topic's word and retired this one.
	displaced atomic.Bool
	// total counts the bytes published (stored by the writer with a plain store); flushed,
	// those added to the topic's counter so far (under flushMu). FlushBytes adds the rest:
	// every 64 messages and at the end (one locked add in 64 instead of one a message), and
	// whenever the Bus's timer asks (once a second), so a quiet topic's count lags by a second
	// at most.
	total   atomic.Uint64
	flushMu sync.Mutex
	flushed uint64
}

// CreateSlotRing makes a slot ring of shape sh for topic t, written by p, and records it in
// the topic's entry, where OpenSlotRing finds it. The ring's buffer is lent from p's pools and
// stays on loan until Close. It fails with ErrRingTaken if the topic has a live ring already.
func (p *Participant) CreateSlotRing(t Topic, sh RingShape) (_ *SlotRing, err error) {
	if err := sh.check(); err != nil {
		return nil, err
	}
	defer unguard(guard(), &err)
	l, err := p.Loan(sh.Bytes())
	if err != nil {
		return nil, fmt.Errorf("offq: slot ring of %d bytes: %w", sh.Bytes(), err)
	}
	b := l.buf.Bytes()[:sh.Bytes()]
	clear(b)
	hd := (*ringHeader)(l.buf.data)
	hd.magic, hd.slots, hd.slotSize, hd.readers, hd.topic, hd.writer = ringMagic, uint32(sh.Slots), uint32(sh.slotSize()), uint32(sh.Readers), t.index, p.owner
	g, err := p.r.viewRing(l.buf.h, t.index)
	if err == nil && (g.slots != uint64(sh.Slots) || g.slotSize != sh.slotSize() || g.readers != uint64(sh.Readers)) {
		// Another process wrote over the header between our stores and the view: the writer
		// must work from the shape it made (its loans are cut to it), not from shared memory.
		err = fmt.Errorf("%w: slot ring %#x: its header was written over as it was made", ErrCorrupt, uint64(l.buf.h))
	}
	if err != nil {
		_ = l.Discard()
		return nil, err
	}
	// Record it, replacing a ring that is no longer live (its writer died and the reaper
	// freed it, or it was scribbled).
	for {
		old := t.e.ring.Load()
		if old != 0 {
			if og, err := p.r.viewRing(Handle(old), t.index); err == nil && og.alive() && og.hd.closed.Load() == 0 {
				_ = l.Discard()
				return nil, ErrRingTaken
			}
		}
		if t.e.ring.CompareAndSwap(old, uint64(l.buf.h)) {
			break
		}
	}
	w := &SlotRing{g: g, p: p, t: t, loan: l, next: 1, stage: make([]byte, max(g.payload, 8)), limit: uint64(sh.Payload)}
	w.stageP = unsafe.Pointer(&w.stage[0])
	w.pl.size, w.pl.class = uint32(sh.Payload), -1 // a loan's Cap is the ring's limit
	return w, nil
}

// Stamp returns the publish time of the last message committed.
func (w *SlotRing) Stamp() int64 { return w.stamp }

// Slots returns the ring's number of slots.
func (w *SlotRing) Slots() int { return int(w.g.slots) }

// Loan lends a buffer for the next message, n bytes of it (at most Payload): the ring's
// staging buffer, in the process's memory. Write the message there, then publish it with
// CommitLoan (or give it back with Discard). Only one loan of a ring is outstanding at a time:
// the caller sees to it.
//
// The message is written into the slot by CommitLoan, in one burst with its header, and not
// in place: a reader polls the slot's line, and every store to it while the writer fills it
// in place (the busy mark, the payload, the header, each a moment apart) would move the line
// to the reader and back (measured in docs/slot-rings.md, "In the bus").
func (w *SlotRing) Loan(n int) (l Loan, err error) {
	err = w.LoanInto(n, &l)
	if err == ErrRingRetiring {
		w.EndLoan()
		err = ErrClosed
	}
	return l, err
}

// ErrRingRetiring is returned by SlotRing.LoanInto when it took the loan token of a ring
// retired meanwhile: the caller gives the token back with EndLoan, which finishes the
// retirement, while the region is still mapped.
var ErrRingRetiring = errors.New("slot ring retiring")

// LoanInto is Loan, filling *l, a zero Loan, in place (a Loan is too large to pass around in
// registers, and the round trip's path copies none). It touches no shared memory, so a
// caller need not keep the region mapped for it (the bus lends without its use gate): a ring
// retired between its token and its check of the closed flag is ErrRingRetiring, for the
// caller to end with EndLoan where the mapping is safe.
func (w *SlotRing) LoanInto(n int, l *Loan) error {
	if uint64(n) > w.limit || !w.loaned.CompareAndSwap(0, 1) {
		return w.loanError(n)
	}
	if w.closed.Load() {
		return ErrRingRetiring // the token is ours: Retire left the finish to its holder
	}
	w.lent++
	l.p, l.buf.h, l.buf.p, l.buf.data = w.p, Handle(w.lent), &w.pl, w.stageP
	return nil
}

// loanError is why Loan(n) lent nothing: n out of range, or the token taken (by another loan,
// or for good by a retirement).
func (w *SlotRing) loanError(n int) error {
	if n < 0 || uint64(n) > w.limit {
		return fmt.Errorf("offq: slot ring: %d bytes: %w (the ring's messages are up to %d)", n, ErrTooLarge, w.limit)
	}
	if w.closed.Load() {
		if w.displaced.Load() {
			return errRingDisplaced
		}
		return ErrClosed
	}
	return ErrRingLoaned
}

// Wake wakes the consumer of each inbox of wake if it sleeps (InboxRing: the inboxes that
// read the ring), after a message was committed.
func (w *SlotRing) Wake(wake []Inbox) {
	defer unguard(guard(), nil)
	for i := range wake {
		wakeConsumer(wake[i].v)
	}
}

// Staged returns the first n bytes of the loans' staging buffer: after CommitLoan and until
// EndLoan, the message just published.
func (w *SlotRing) Staged(n int) []byte { return w.stage[:n] }

// EndLoan gives the loan token back after CommitLoan (or a failed one): the next Loan may
// go on. If the ring was retired meanwhile, the retirement is finished here.
func (w *SlotRing) EndLoan() {
	w.loaned.Store(0) // sequentially consistent: see finishRetire
	if w.closed.Load() {
		w.finishRetire()
	}
}

// CommitLoan publishes the message of l, a loan of this ring, n bytes of it, under the fault
// guard. The loan's token stays taken until EndLoan (the caller may read the message back
// with Staged meanwhile). It fails with ErrLoanEnded if l was already committed or discarded
// (and then leaves the token alone: it is not this loan's).
func (w *SlotRing) CommitLoan(l Loan, n int) (uint64, error) {
	return w.CommitLoanWake(l, n, nil)
}

// CommitLoanWake is CommitLoan followed by Wake(*wake) (if wake is not nil), under the same
// fault guard: one guard a message instead of two. The list is read only once l is known to
// be the loan out, so that a caller whose list only the token's holder writes may pass it
// without a lock (a Send of a loan already sent, from any goroutine, reads nothing of it). A
// fault while it wakes them (the region cut under it) fails the call with the message already
// in the ring, as a fault part way through a pool send fails it after some of its targets.
func (w *SlotRing) CommitLoanWake(l Loan, n int, wake *[]Inbox) (_ uint64, err error) {
	if l.ring() != w || uint64(l.buf.h) != w.lent || w.done == w.lent {
		return 0, ErrLoanEnded
	}
	defer unguard(guard(), &err)
	if n < 0 || uint64(n) > w.limit {
		return 0, fmt.Errorf("offq: slot ring: %d bytes: %w (the ring's messages are up to %d)", n, ErrTooLarge, w.limit)
	}
	// The clock and the topic's counter first, then the slot in one burst (see commit). Read
	// between the busy mark and the commit instead, the clock runs while the slot's line
	// travels, which pays where the line takes long (742 ns a round trip against 812, with
	// shm-raw at 910); but where the line comes quickly, the reader polling the slot takes it
	// back with the busy mark in it, and the commit's stores need it a second time (461 ns
	// against 386, with shm-raw at 270). docs/performance.md, issue 15's twelfth round.
	stamp := l.stamp
	if stamp == 0 {
		stamp = Now()
	}
	seq := w.t.e.seq.Add(1)
	w.done = w.lent
	// Not claim: a loan out when Retire came holds the ring open until it ends, and commits
	// the ring's last message (Retire). claim's check of the closed flag would refuse it after
	// the topic's number was taken, a number no message then had.
	b := w.slotFor(n)
	stageInto(b, w.stage[:n])
	w.commit(w.cur, n, stamp, seq)
	storeRelease(&w.total, w.total.Load()+uint64(n))
	if w.next&63 == 0 {
		w.FlushBytes()
	}
	if wake != nil {
		for i := range *wake {
			wakeConsumer((*wake)[i].v)
		}
	}
	return seq, nil
}

// RepairWord puts back what another process wrote over of the ring's own words, counting the
// damage, and reports whether it did: the ring's header (a subscriber refuses a ring whose
// header does not describe it, and would read nothing of it while its writer skips its
// queue), its closed word (its readers would leave it, and CreateSlotRing let another ring
// take the topic), and the topic's word naming it (subscribers that open the topic's ring
// later would not find it). An open ring is the topic's only one, so any other value in the
// topic's word is junk, unless it names another live ring that is not closed: one made while
// this ring's closed word was written over. Two rings cannot share the topic, and the other
// may already have readers; this ring then retires, and its loans fail with an error that
// says why (ErrCorrupt), rather than publish into a ring no subscriber reads. The Bus calls it
// once a second for each open ring.
func (w *SlotRing) RepairWord() bool {
	if w.closed.Load() {
		return false
	}
	defer unguard(guard(), nil)
	g, hd := w.g, w.g.hd
	fixed := g.repairHeader(w.p.owner)
	if hd.closed.Load() != 0 && !w.closed.Load() && hd.closed.CompareAndSwap(1, 0) {
		// (Retire stores 1 only after it set w.closed: a retirement under way is left alone.)
		fixed = true
	}
	h := uint64(g.h)
	if v := w.t.e.ring.Load(); v != h {
		if og, err := w.p.r.viewRing(Handle(v), w.t.index); v != 0 && err == nil && og.alive() && og.hd.closed.Load() == 0 {
			w.p.r.hdr.corrupt.Add(1)
			w.displaced.Store(true)
			w.Retire()
			return true
		}
		if w.t.e.ring.CompareAndSwap(v, h) {
			fixed = true
		}
	}
	if fixed {
		w.p.r.hdr.corrupt.Add(1)
	}
	return fixed
}

// repairHeader puts the ring's header back as its writer made it, if another process wrote
// over it, and reports whether it did. Readers in this process may be reading it (viewRing):
// plain loads and stores of words only ever written over by a fault, so the race detector is
// told not to look.
//
//go:norace
func (g *slotRing) repairHeader(writer uint32) bool {
	hd := g.hd
	if hd.magic == ringMagic && uint64(hd.slots) == g.slots && uint64(hd.slotSize) == g.slotSize &&
		uint64(hd.readers) == g.readers && hd.topic == g.topic && hd.writer == writer {
		return false
	}
	hd.magic, hd.slots, hd.slotSize, hd.readers, hd.topic, hd.writer =
		ringMagic, uint32(g.slots), uint32(g.slotSize), uint32(g.readers), g.topic, writer
	return true
}

// errRingDisplaced is why a ring that RepairWord retired lends nothing.
var errRingDisplaced = fmt.Errorf("%w: the topic's slot ring was replaced by another while this one was open (another process wrote over its closed word): close the publisher and open it again", ErrCorrupt)

// FlushBytes adds the bytes published since the last flush to the topic's counter. Any
// goroutine may call it while the ring is not freed.
func (w *SlotRing) FlushBytes() {
	defer unguard(guard(), nil)
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	if t := w.total.Load(); t > w.flushed {
		w.t.e.bytes.Add(t - w.flushed)
		w.flushed = t
	}
}

// stageInto copies a staged message into its slot: the part on the slot's first line always,
// each later line only if its bytes changed. A reader copies the whole message out of the
// slot, and a line the writer did not write is still in the reader's cache from the lap
// before; a message whose later bytes repeat (a fixed layout where a few fields change, a
// header and padding) crosses to the reader in the one line it polls.
//
// stage must be a prefix of the ring's staging buffer (copyToSlot may read past its end, within
// the buffer).
func stageInto(slot, stage []byte) {
	if len(stage) == 0 {
		return
	}
	first := min(len(stage), 64-ringSlotHeader)
	copyToSlot(unsafe.Pointer(&slot[0]), stage[:first])
	for off := first; off < len(stage); off += 64 {
		end := min(off+64, len(stage))
		if string(slot[off:end]) != string(stage[off:end]) {
			copyToSlot(unsafe.Pointer(&slot[off]), stage[off:end])
		}
	}
}

// abandon ends loan l without publishing it, and gives the token back.
func (w *SlotRing) abandon(l Loan) error {
	if l.ring() != w || uint64(l.buf.h) != w.lent || w.done == w.lent {
		return ErrLoanEnded
	}
	w.done = w.lent
	w.EndLoan()
	return nil
}

// Payload returns the most bytes a message of the ring can carry: the shape's Payload. (A
// reader's buffer must hold the slot's room, RingReader.Payload, which may be more.)
func (w *SlotRing) Payload() int { return int(w.limit) }

// Next returns the payload area of the next message's slot, n bytes long (at most Payload),
// for the caller to write the message into; Commit publishes it. The slot is marked busy first,
// so that a reader still copying the message it held from a lap ago sees its copy fail. On a
// weakly ordered machine (arm64, arm, ppc64, riscv64, ...) the area is the ring's staging
// buffer, which Commit copies into the slot (slotorder_weak.go).
func (w *SlotRing) Next(n int) (_ []byte, err error) {
	defer unguard(guard(), &err)
	return w.claim(n)
}

// claim is Next, for a caller under the fault guard.
func (w *SlotRing) claim(n int) ([]byte, error) {
	if w.closed.Load() {
		return nil, ErrClosed
	}
	if n < 0 || uint64(n) > w.limit {
		return nil, fmt.Errorf("offq: slot ring: %d bytes: %w (the ring's messages are up to %d)", n, ErrTooLarge, w.limit)
	}
	b := w.slotFor(n)
	if weakOrder {
		// The caller's plain stores into the slot could be seen before the busy mark: it
		// writes into the staging buffer, and Commit copies it over (slotorder_weak.go).
		return w.stage[:n], nil
	}
	return b, nil
}

// slotFor marks the next message's slot busy and returns its payload area, n bytes (n within
// the ring's limit).
func (w *SlotRing) slotFor(n int) []byte {
	sl := w.g.slot(w.next)
	step()
	storeRelease(&sl.seq, ringBusy|w.next)
	// The tag too, before the payload: a process that writes the old sequence word back over
	// the busy mark while the slot is filled does not make the old header match it (copyOut).
	// The complement of the message's own tag, never all ones: all ones is the real tag of one
	// message in 2^32, and a reader expecting that message would take the slot being filled
	// for it. No reader expects the complement here: the messages of a slot are s plus
	// multiples of an even slot count, so their tags share s's lowest bit, which the
	// complement flips.
	setSlotTag(sl, ^uint32(w.next))
	w.cur = sl
	return unsafe.Slice((*byte)(w.g.payloadOf(sl)), w.g.payload)[:n]
}

// Commit publishes the message written into the area Next returned, n bytes of it, stamped
// with publish time stamp (0: now). It returns the message's sequence in the topic.
func (w *SlotRing) Commit(n int, stamp int64) (_ uint64, err error) {
	defer unguard(guard(), &err)
	sl := w.cur
	if sl == nil {
		return 0, errors.New("offq: slot ring: Commit without Next")
	}
	if n < 0 || uint64(n) > w.limit {
		return 0, fmt.Errorf("offq: slot ring: %d bytes: %w (the ring's messages are up to %d)", n, ErrTooLarge, w.limit)
	}
	if stamp == 0 {
		stamp = Now()
	}
	if weakOrder {
		stageInto(unsafe.Slice((*byte)(w.g.payloadOf(sl)), w.g.payload), w.stage[:n]) // claim staged it
	}
	seq := w.t.e.seq.Add(1)
	w.commit(sl, n, stamp, seq)
	storeRelease(&w.total, w.total.Load()+uint64(n))
	w.FlushBytes()
	return seq, nil
}

// commit fills slot sl's header and publishes it: no locked instruction, so that the stores
// leave in a burst (a locked instruction among them would wait for the slot's line, which the
// reader polling it may take back in between, and each store after it would fetch it again).
// They are plain stores on x86; on weakly ordered machines, ordered ones (putSlotHeader).
func (w *SlotRing) commit(sl *ringSlot, n int, stamp int64, seq uint64) {
	step()
	putSlotHeader(sl, uint32(n), uint32(w.next), seq, stamp)
	w.stamp = stamp
	step()
	storeRelease(&sl.seq, w.next)
	step()
	storeRelease(&w.g.w.published, w.next)
	w.next++
	w.cur = nil
}

// Publish copies data into the next slot and commits it.
func (w *SlotRing) Publish(data []byte) (_ uint64, err error) {
	defer unguard(guard(), &err)
	b, err := w.claim(len(data))
	if err != nil {
		return 0, err
	}
	copy(b, data)
	return w.Commit(len(data), 0)
}

// Published returns how many messages the ring has published.
func (w *SlotRing) Published() uint64 { return w.next - 1 }

// Close ends the ring: it marks it closed (Retire), waits until every live reader has read
// the last message or ctx is done, and frees it (Free). It returns ctx's error if it stopped
// waiting (the ring is freed anyway).
func (w *SlotRing) Close(ctx context.Context) (err error) {
	if w.closed.Load() {
		return ErrClosed
	}
	w.Retire()
	err = pollUntil(ctx, time.Time{}, func() bool { return w.Free(false) })
	w.Free(true)
	return err
}

// Retire marks the ring closed: no message follows, and a new ring may take the topic. Its
// readers read on to its last message and then find it ended. The ring stays on loan until
// Free.
//
// A loan out when Retire is called keeps the ring open until it ends (EndLoan, abandon): a
// message it commits meanwhile is the ring's last, and a reader that saw the ring closed
// before it could stop short of it.
func (w *SlotRing) Retire() {
	if w.closed.Swap(true) {
		return
	}
	w.finishRetire()
}

// finishRetire marks the ring closed for its readers, if no loan is out: it takes the token
// for good. Retire and EndLoan both call it, each after its own sequentially consistent store
// (closed, the token), so that whichever comes second sees the other's.
func (w *SlotRing) finishRetire() {
	if !w.loaned.CompareAndSwap(0, 1) {
		return // a loan is out: its EndLoan finishes
	}
	defer unguard(guard(), nil)
	w.FlushBytes()
	step()
	storeRelease(&w.g.hd.closed, 1)
	w.retiredAt = time.Now()
	w.retired.Store(true)
}

// RingLinger bounds how long a retired ring waits for a subscriber whose progress it cannot
// see (SlotRing.FreeFor): one that has not opened the ring since it appeared (it opens it at
// its next take), or one that reads it without a reader entry (a ring has MaxRingReaders).
// After that the ring is freed, and what such a subscriber had not read of it is lost to
// it, as a lapped reader's messages are. A reader whose entry shows it behind keeps the ring
// while it lives.
const RingLinger = 10 * time.Second

// Free frees a retired ring once every reader entry held by a live process has read its last
// message (or at once, with force): it takes the ring out of the topic's entry and ends the
// buffer's loan. It reports whether the ring is freed.
func (w *SlotRing) Free(force bool) (done bool) { return w.FreeFor(nil, force) }

// FreeFor is Free for a writer that knows the inboxes that read the ring (targets, see
// Topic.RingTargets): it also waits for those that have not opened the ring yet (a consumer
// opens it at its first take after the ring appeared), if the ring published anything, while
// they are open and their owners live.
func (w *SlotRing) FreeFor(targets []Inbox, force bool) (done bool) {
	if w.freed {
		return true
	}
	defer unguard(guard(), nil)
	g := w.g
	if !force {
		if !w.retired.Load() {
			return false // a loan is still out
		}
		linger := time.Since(w.retiredAt) < RingLinger
		for i := range targets {
			if w.next > 1 && w.unread(&targets[i], linger) {
				return false
			}
		}
		// Without targets (the protocol's own API), every reader entry in use counts. With
		// them, only theirs do (unread): an entry another process wrote over cannot keep the
		// ring for ever.
		for i := range g.readers {
			if targets != nil {
				break
			}
			e := g.reader(i)
			step()
			o := uint32(e.owner.Load()) // the participant; the inbox is in the high half
			if o == 0 || o > w.p.r.cfg.Participants || e.cursor.Load() >= w.next {
				continue
			}
			if alive, aerr := w.p.r.Alive(int(o - 1)); aerr == nil && alive {
				return false
			}
		}
	}
	w.freed = true
	w.FlushBytes()
	step()
	w.t.e.ring.CompareAndSwap(uint64(g.h), 0)
	step()
	_ = w.loan.Discard()
	return true
}

// unread reports whether inbox in, a target of the ring, may still have messages of it to
// read: it is open, its owner lives, and no reader entry of its shows the ring read to the
// end; with no reader entry of its at all (it has not opened the ring, or reads it without
// one), only while linger.
func (w *SlotRing) unread(in *Inbox, linger bool) bool {
	g := w.g
	step()
	st := in.v.hdr.state.Load()
	if wordStatus(st) != inboxOpen || wordGen(st) != in.gen {
		return false
	}
	owner := wordOwner(st)
	found := false
	for k := range g.readers {
		e := g.reader(k)
		step()
		if o := e.owner.Load(); o>>32 == uint64(in.v.index)+1 && uint32(o) == owner {
			if e.cursor.Load() >= w.next {
				return false // read to the end (an entry of its that shows less may be junk)
			}
			found = true
		}
	}
	if !found && !linger || owner == 0 || owner > w.p.r.cfg.Participants {
		return false
	}
	alive, err := w.p.r.Alive(int(owner - 1))
	return err == nil && alive
}

// RingReader is one reader of a slot ring: one goroutine at a time. It writes nothing in
// shared memory but its own entry's cursor.
type RingReader struct {
	g       *slotRing // never changes: InboxRing.ready reads it from another goroutine
	p       *Participant
	entry   *ringReaderEntry
	next    uint64
	lost    uint64 // messages a lap passed
	damaged uint64 // messages skipped because another process wrote over their slot
	ended   bool
	idle    uint32 // polls in a row that found nothing
	tag     uint64 // the entry's owner word: inbox index + 1 << 32 | participant index + 1
	local   bool   // the entry is in process memory: the ring had no free one
	// pos is next, for other goroutines (InboxRing.ready, stalled, backlog): in process
	// memory, where no other process can write it. The entry's cursor in shared memory is for
	// the writer and the tools: a cursor written over there must not make a waiting consumer
	// judge a slot its poll does not read (it would be woken for ever, and spin).
	pos atomic.Uint64
	// good is the cursor before the laps skipped since the last message read (or where the
	// reader started), and pendLost the messages those laps skipped: counted as lost (Lost)
	// once a message after them is read. A lap that another process forged (a sequence word
	// and a count that agrees) puts the cursor past anything the writer has committed; the
	// reader then finds itself ahead of the writer's count and goes back (behind), never below
	// floor: every message before floor was read or skipped (0 until the first). good and
	// floor are for other goroutines too (InboxRing.stalled), stored by the reader only.
	good, floor atomic.Uint64
	pendLost    uint64
}

// moveTo moves the reader's cursor to n: in the reader, its copy for other goroutines, and
// its entry.
func (rr *RingReader) moveTo(n uint64) {
	rr.next = n
	storeRelease(&rr.pos, n)
	step()
	storeRelease(&rr.entry.cursor, n)
}

// passed moves the reader's cursor to n past a message it read or skipped: the laps skipped
// before it are confirmed (see good).
func (rr *RingReader) passed(n uint64) {
	rr.lost += rr.pendLost
	rr.pendLost = 0
	storeRelease(&rr.good, n)
	storeRelease(&rr.floor, n)
	rr.moveTo(n)
}

// OpenSlotRing opens the slot ring of topic t for reading by p. The reader starts after the
// last message published or, with fromStart, at the ring's first message (a reader that finds
// a ring made after it began listening): if the ring has lapped that, the reader counts what
// it missed as lost and starts from the oldest message the ring holds. It fails with ErrNoRing if t has no live ring and ErrRingReaders if every
// reader entry is taken by a live participant.
func (p *Participant) OpenSlotRing(t Topic, fromStart bool) (_ *RingReader, err error) {
	from := uint64(0)
	if fromStart {
		from = 1
	}
	return p.openSlotRing(t, from, 0)
}

// openSlotRing is OpenSlotRing for the consumer of inbox index inbox-1 (0: none), which its
// reader entry records, so that any process reading the region can tell how far behind the
// ring that inbox's consumer is (Region.InboxStats). The reader starts at message from, or
// with from 0 after the last message published.
func (p *Participant) openSlotRing(t Topic, from uint64, inbox uint32) (_ *RingReader, err error) {
	defer unguard(guard(), &err)
	h := t.e.ring.Load()
	if h == 0 {
		return nil, ErrNoRing
	}
	g, err := p.r.viewRing(Handle(h), t.index)
	if err != nil {
		if errors.Is(err, ErrBadHandle) {
			return nil, ErrNoRing
		}
		return nil, err
	}
	next := from
	if next == 0 {
		next = g.lastCommitted() + 1
	}
	rr := &RingReader{g: g, p: p, next: next, tag: uint64(inbox)<<32 | uint64(p.owner)}
	rr.pos.Store(next)
	rr.good.Store(next)
	for pass := 0; pass < 2 && rr.entry == nil; pass++ {
		for i := range g.readers {
			e := g.reader(i)
			o := e.owner.Load()
			if pass == 1 && o != 0 && uint32(o) != p.owner {
				// A second pass takes over entries of participants that are gone.
				if uint32(o) <= p.r.cfg.Participants {
					if alive, aerr := p.r.Alive(int(uint32(o) - 1)); aerr != nil || alive {
						continue
					}
				}
			} else if o != 0 {
				continue
			}
			if e.owner.CompareAndSwap(o, rr.tag) {
				e.cursor.Store(next)
				rr.entry = e
				break
			}
		}
	}
	if rr.entry == nil {
		if inbox == 0 {
			return nil, ErrRingReaders
		}
		// An inbox's consumer must read the ring even without an entry: the writer skips its
		// inbox whatever it finds here. It keeps its cursor in process memory; a retired
		// ring's writer, finding no entry of it, waits for it until it closes or dies
		// (SlotRing.unread).
		rr.entry = &ringReaderEntry{}
		rr.entry.cursor.Store(next)
		rr.tag = 0
		rr.local = true
	}
	if !g.alive() { // freed while we looked: nothing of it is ours
		rr.entry.owner.CompareAndSwap(rr.tag, 0)
		return nil, ErrNoRing
	}
	return rr, nil
}

// Payload returns the size of the buffer Poll needs: the slot's room for a message.
func (rr *RingReader) Payload() int { return int(rr.g.payload) }

// Lost returns how many messages the reader missed because the writer lapped it.
func (rr *RingReader) Lost() uint64 { return rr.lost }

// Damaged returns how many messages the reader skipped because another process wrote over
// their slots (counted in the region's corrupt words too).
func (rr *RingReader) Damaged() uint64 { return rr.damaged }

// Poll copies the next message into dst, if one is ready, and returns its length and header.
// It returns ok false if none is ready yet, and ErrRingEnded once the writer closed and
// everything it published was read, or the ring's buffer was freed. A message longer than
// dst is an error (dst must hold the ring's Payload). It never waits and allocates nothing.
func (rr *RingReader) Poll(dst []byte) (m Meta, ok bool, err error) {
	defer unguard(guard(), &err)
	return rr.poll(dst)
}

// poll is Poll, for a caller under the fault guard.
func (rr *RingReader) poll(dst []byte) (m Meta, ok bool, err error) {
	if rr.ended {
		return Meta{}, false, ErrRingEnded
	}
	g := rr.g
	for {
		sl := g.slot(rr.next)
		step()
		v := sl.seq.Load()
		if v == rr.next {
			m, st := g.copyOut(sl, dst, v)
			if !g.alive() {
				return Meta{}, false, rr.end()
			}
			switch st {
			case copyOK:
				rr.idle = 0
				rr.passed(rr.next + 1)
				return m, true, nil
			case copyShort:
				return Meta{}, false, fmt.Errorf("offq: slot ring: a message of %d bytes for a buffer of %d", m.Len, len(dst))
			case copyBad:
				// The writer never commits a length that does not fit its slot: another
				// process wrote over the slot. Skip the message, counted.
				rr.skipDamaged()
			}
			if st != copyForged {
				continue // copyOverwritten: the next read sees the later lap
			}
			// copyForged: if the writer's count says it has committed s, the slot was written
			// over after that; skip the message, counted. Otherwise wait for the writer (it
			// has s still to commit, and then the slot is right), as if not written yet.
			step()
			if pub := g.w.published.Load(); pub >= rr.next && pub < rr.next+2*g.slots {
				rr.skipDamaged()
				continue
			}
		} else if s := v &^ ringBusy; s > rr.next && (s-rr.next)&(g.slots-1) == 0 {
			// A later lap's message (or one being written): we were lapped, if the writer's
			// count agrees (a scribbled word alone does not move us). Go on from the oldest
			// message the ring still holds, leaving the slot after the one s is in: the writer
			// may be on its way there.
			step()
			if pub := g.w.published.Load(); pub+1 >= s {
				if !g.alive() {
					// Not a lap: the ring was freed, and its buffer is another ring's now.
					return Meta{}, false, rr.end()
				}
				to := max(rr.next+1, s-min(s, g.slots)+2)
				rr.pendLost += to - rr.next
				rr.moveTo(to)
				continue
			}
		}
		// Not written yet, or a value no writer wrote. Now and then (not at every poll: the
		// writer's line would move to the reader and back with every message) ask the writer's
		// count: if it has committed our message and the slot still does not show it, another
		// process wrote over the slot's sequence word; skip the message, counted, rather than
		// wait for a lap that a writer that has stopped never makes.
		if rr.idle++; rr.idle&63 == 0 {
			if g.stalled(rr.next) {
				rr.skipDamaged()
				continue
			}
			if rr.behind() {
				continue
			}
		}
		// Has the ring ended?
		if g.ended(rr.next) {
			return Meta{}, false, rr.end()
		}
		return Meta{}, false, nil
	}
}

// skipDamaged passes the message at the cursor, whose slot another process wrote over:
// counted in the region's corrupt words and as lost.
func (rr *RingReader) skipDamaged() {
	rr.g.r.hdr.corrupt.Add(1)
	rr.damaged++
	rr.passed(rr.next + 1)
}

// behind finds the reader's cursor ahead of anything the writer has committed (rewind) and
// puts it back: to where it was before the laps since its last message, not past the
// writer's count, not before a message it has read, and not before the oldest message the
// ring still holds (the messages before that are lost: the writer lapped the reader
// meanwhile). No writer puts a reader there: a count another process wrote over did, at the
// reader's start, or a lap another process forged. Counted as damage, once.
func (rr *RingReader) behind() bool {
	g := rr.g
	back, pub, ok := g.rewind(rr.next, rr.good.Load(), rr.floor.Load())
	if !ok || !g.alive() {
		return false // (a freed ring: the poll ends it)
	}
	g.r.hdr.corrupt.Add(1)
	rr.damaged++
	oldest := uint64(1)
	if pub+2 > g.slots {
		oldest = pub + 2 - g.slots // the writer may be filling pub+1's slot, which held pub+1-slots
	}
	rr.pendLost = 0
	if back < oldest {
		rr.pendLost = oldest - back
		back = oldest
	}
	storeRelease(&rr.good, back)
	rr.moveTo(back)
	return true
}

// rewind reports whether a reader at next, whose laps began at good and who has read every
// message before floor, is ahead of the writer's count by more than a real reader can be, and
// where it goes back to (behind), with the count. A reader is at most two past the count: it
// may take message published+1 between the writer's store of its sequence word and the store
// of the count (and a writer killed between the two leaves it there). The count is believed
// only if its slot shows that very message: a count written back finds its slot holding a
// later lap (or, before the first lap, the message it names, and a reader never goes back
// before floor).
func (g *slotRing) rewind(next, good, floor uint64) (to, pub uint64, ok bool) {
	step()
	pub = g.w.published.Load()
	if pub >= next || next-pub <= 2 {
		return 0, pub, false
	}
	step()
	if g.slot(pub).seq.Load() != pub {
		return 0, pub, false
	}
	to = max(min(good, pub+1), floor)
	return to, pub, to < next
}

// lastCommitted returns the writer's count, where a reader that starts after the last message
// starts, if the count's slot agrees with it: it shows that message, or a later lap's (the
// writer went on). A count written over by another process does not; the reader then starts
// after the highest message a slot shows committed, rather than far past anything the writer
// will publish (or, if the count was written back, before messages it has read).
func (g *slotRing) lastCommitted() uint64 {
	step()
	pub := g.w.published.Load()
	if pub == 0 {
		return 0
	}
	step()
	v := g.slot(pub).seq.Load()
	if s := v &^ ringBusy; s >= pub && (s-pub)&(g.slots-1) == 0 {
		return pub
	}
	g.r.hdr.corrupt.Add(1)
	var hi uint64
	for i := range g.slots {
		step()
		v := g.slot(i + 1).seq.Load()
		if v&ringBusy == 0 && v > hi && (v-1)&(g.slots-1) == i {
			hi = v
		}
	}
	return hi
}

// stalled reports whether the writer has committed message next (its count says so, and is
// within two laps of it) while next's slot shows neither it nor a later lap's message: a
// sequence word written over. The slot is read again after the count, which the writer
// stores after the slot's sequence word.
func (g *slotRing) stalled(next uint64) bool {
	step()
	pub := g.w.published.Load()
	if pub < next || pub >= next+2*g.slots {
		return false
	}
	step()
	v := g.slot(next).seq.Load()
	s := v &^ ringBusy
	return v != next && !(s > next && (s-next)&(g.slots-1) == 0)
}

// What copyOut found.
const (
	copyOK          = iota
	copyOverwritten // the writer started on a later message in the slot during the copy
	copyShort       // the message is longer than the caller's buffer
	copyBad         // the slot's length does not fit the slot: scribbled
	copyForged      // the sequence word shows s over a header of another message: scribbled
)

// copyOut copies slot sl's message into dst and reports whether it is still message s after
// the copy (the writer did not start overwriting it). The payload is read with plain loads
// that may race with the writer's stores on another lap: the sequence word read again after
// them decides whether what they read is kept, so the race detector is told not to look.
//
//go:norace
func (g *slotRing) copyOut(sl *ringSlot, dst []byte, s uint64) (Meta, int) {
	step()
	n, topicSeq, stamp := slotHeaderOf(sl)
	m := Meta{Len: n, Topic: g.topic, Seq: topicSeq, Stamp: stamp}
	switch {
	case sl.seq.Load() != s:
		return m, copyOverwritten
	case slotTag(sl) != uint32(s):
		// Checked before the copy as well as after: a sequence word written over with s
		// before the writer came to s, and then the writer's real s, would pass the check
		// after a copy made while the writer filled the slot. (A tag that changed because
		// the writer has begun the next lap here is told apart by the sequence word, which
		// the writer marks busy before it clears the tag.)
		return m, forgedOrOverwritten(sl, s)
	case uint64(n) > g.payload:
		return m, copyBad
	case int(n) > len(dst):
		return m, copyShort
	}
	step()
	copyFromSlot(dst[:n], g.payloadOf(sl))
	step()
	if sl.seq.Load() != s {
		return m, copyOverwritten
	}
	if slotTag(sl) != uint32(s) {
		// The sequence word showed s, but the header was not written for s: the word was
		// written over while the slot held an older message, or while the writer filled it;
		// or the writer has just begun the next lap.
		return m, forgedOrOverwritten(sl, s)
	}
	return m, copyOK
}

// forgedOrOverwritten tells why slot sl's tag is not s's although its sequence word showed s:
// the writer began a later lap there (it marks the sequence word busy before it clears the
// tag, so the word no longer shows s), or the word was written over by another process.
//
//go:norace
func forgedOrOverwritten(sl *ringSlot, s uint64) int {
	step()
	if sl.seq.Load() != s {
		return copyOverwritten
	}
	return copyForged
}

// end ends a reader that has read the ring to its end (or found it freed). Its entry stays
// taken, its cursor past the last message: that is how the writer's FreeFor knows that this
// inbox's consumer has read it all, rather than not opened it yet. The ring is retired, so
// the entry goes with it.
func (rr *RingReader) end() error {
	rr.ended = true
	if _, _, ok := rr.g.rewind(rr.next, rr.good.Load(), rr.floor.Load()); !ok {
		rr.lost += rr.pendLost
	}
	rr.pendLost = 0
	return ErrRingEnded
}

// Close gives the reader's entry back.
func (rr *RingReader) Close() {
	if rr.ended {
		return
	}
	rr.ended = true
	if rr.local {
		return
	}
	defer unguard(guard(), nil)
	rr.entry.owner.CompareAndSwap(rr.tag, 0)
}
