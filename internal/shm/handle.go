package shm

import (
	"fmt"
	"unsafe"
)

// Handle names one buffer in a region: its size class, its slot's index within the class and
// the generation the slot had when the buffer was allocated, packed in one 64-bit word so that
// storing it is a single atomic write that a crash cannot tear.
//
//	bit  63      0 (ring cells use it to tell handles from markers; held entries, for reserved)
//	bit  62      0 (ring cells use it for the lap parity of the position; held entries, pending)
//	bits 23..61  generation (39 bits)
//	bits 20..22  size class
//	bits 0..19   slot index within the class
//
// The generation is what tells a live buffer from a released one whose slot was reused: a
// handle repeats only after 2^39 allocations of one slot (at one allocation every 50 ns, the
// fastest loop there is, 7.6 hours; at one message every 300 ns, 1.9 days). The 23 bits left
// after it address every slot a configuration allows (MaxClasses x MaxClassCount). A pool that
// grows by adding segments gives each new segment the next range of its class's slot indexes,
// so the handle does not change when pools grow; an explicit segment field would have to come
// out of the generation.
//
// A Handle read from shared memory is untrusted: Region.Buffer checks its class and index
// against the pools and its generation against the slot's before using it. The zero Handle
// names no buffer (no allocation uses generation 0).
type Handle uint64

const (
	handleIdxBits    = 20
	handleIdxMask    = 1<<handleIdxBits - 1
	handleClassShift = handleIdxBits
	handleClassBits  = 3
	handleClassMask  = 1<<handleClassBits - 1
	handleGenShift   = handleClassShift + handleClassBits
	genBits          = 39
	genMask          = 1<<genBits - 1
	handleMask       = 1<<62 - 1 // bits a valid handle may use
)

// Every slot of every configuration has a handle, and the handle fits the ring cells.
var (
	_ [1<<handleIdxBits - MaxClassCount]struct{}
	_ [1<<handleClassBits - MaxClasses]struct{}
	_ [62 - handleGenShift - genBits]struct{}
)

func makeHandle(class, idx uint32, gen uint64) Handle {
	return Handle((gen&genMask)<<handleGenShift | uint64(class&handleClassMask)<<handleClassShift | uint64(idx&handleIdxMask))
}

func (h Handle) class() uint32 { return uint32(uint64(h)>>handleClassShift) & handleClassMask }
func (h Handle) index() uint32 { return uint32(h) & handleIdxMask }
func (h Handle) gen() uint64   { return uint64(h) >> handleGenShift & genMask }

// slot names h's slot without its generation: class and index.
func (h Handle) slot() uint32 { return uint32(h) & (1<<handleGenShift - 1) }

// String formats h for logs: "class/index@generation".
func (h Handle) String() string { return fmt.Sprintf("%d/%d@%d", h.class(), h.index(), h.gen()) }

// Slot state word: refs | owner<<13 | gen<<25. A slot is free when refs is zero; the owner
// field names the participant that holds the loan (the publisher's own reference) and is zero
// once the buffer has been handed over. The generation is as wide as a handle's.
const (
	refsBits   = 13
	refsMask   = 1<<refsBits - 1
	ownerShift = refsBits
	ownerBits  = 12
	ownerMask  = (1<<ownerBits - 1) << ownerShift
	genShift   = ownerShift + ownerBits
	maxRefs    = refsMask
)

// The owner field holds every participant index + 1, and the generation fills the word.
var (
	_ [1<<ownerBits - 1 - MaxParticipants]struct{}
	_ [64 - genShift - genBits]struct{}
	_ [genShift + genBits - 64]struct{}
)

func stateRefs(v uint64) uint32  { return uint32(v & refsMask) }
func stateOwner(v uint64) uint32 { return uint32(v&ownerMask) >> ownerShift }
func stateGen(v uint64) uint64   { return v >> genShift & genMask }

// nextGen is the generation a slot's next allocation takes: one more, skipping zero, so that
// no handle is zero.
func nextGen(g uint64) uint64 {
	if g = (g + 1) & genMask; g == 0 {
		g = 1
	}
	return g
}

// Preallocated errors for the data path, so that a bad handle costs no allocation.
var (
	errHandleZero   = fmt.Errorf("%w: zero handle", ErrBadHandle)
	errHandleBits   = fmt.Errorf("%w: reserved bits set", ErrBadHandle)
	errHandleClass  = fmt.Errorf("%w: no such size class", ErrBadHandle)
	errHandleBounds = fmt.Errorf("%w: slot index past the end of its pool", ErrBadHandle)
	errHandleStale  = fmt.Errorf("%w: stale generation (buffer was released and reused)", ErrBadHandle)
	errHandleFree   = fmt.Errorf("%w: buffer is not allocated (released twice?)", ErrBadHandle)
	errHandleOwner  = fmt.Errorf("%w: buffer is not on loan to this participant", ErrBadHandle)
	errHandleRefs   = fmt.Errorf("%w: reference count would overflow", ErrBadHandle)
)

// Buffer is a checked view of one allocated buffer. It is a small value; copying it is cheap.
// Its Bytes alias shared memory and stay valid while the holder's reference is held.
type Buffer struct {
	h    Handle
	s    *slotHeader
	p    *pool
	data unsafe.Pointer
}

// Meta is the header a publisher writes with a message.
type Meta struct {
	Len   uint32 // payload length in bytes
	Topic uint32 // topic index
	Seq   uint64 // sequence number within the topic
	Stamp int64  // publish time from Now: CLOCK_MONOTONIC nanoseconds (Time converts it)
}

// decode checks h against the region's pools and returns its pool, slot header and index. It
// reads no shared memory: bounds only.
func (r *Region) decode(h Handle) (*pool, *slotHeader, uint32, error) {
	if h == 0 {
		return nil, nil, 0, errHandleZero
	}
	if uint64(h)&^handleMask != 0 {
		return nil, nil, 0, errHandleBits
	}
	c := h.class()
	if c >= uint32(len(r.pools)) {
		return nil, nil, 0, errHandleClass
	}
	p := &r.pools[c]
	idx := h.index()
	if idx >= p.count {
		return nil, nil, 0, errHandleBounds
	}
	return p, p.slot(idx), idx, nil
}

// buffer returns a checked view of the buffer h names: h must decode and its generation must
// match a buffer that is currently allocated. It allocates nothing.
func (r *Region) buffer(h Handle) (Buffer, error) {
	p, s, idx, err := r.decode(h)
	if err != nil {
		return Buffer{}, err
	}
	v := s.state.Load()
	if stateGen(v) != h.gen() {
		return Buffer{}, errHandleStale
	}
	if stateRefs(v) == 0 {
		return Buffer{}, errHandleFree
	}
	return p.buffer(h, idx), nil
}

// Handle returns the handle of b.
func (b Buffer) Handle() Handle { return b.h }

// Cap returns the buffer's capacity: its size class.
func (b Buffer) Cap() int { return int(b.p.size) }

// Class returns the index of the buffer's size class.
func (b Buffer) Class() int { return b.p.class }

// Bytes returns the whole payload area (Cap bytes), aliasing shared memory.
func (b Buffer) Bytes() []byte { return unsafe.Slice((*byte)(b.data), b.p.size) }

// Data returns the payload's first Meta().Len bytes, aliasing shared memory. A length larger
// than the buffer (written by a faulty or hostile process) is clamped to the buffer.
func (b Buffer) Data() []byte { return unsafe.Slice((*byte)(b.data), b.Len()) }

// Len returns the payload length recorded in the buffer's header, clamped to Cap.
func (b Buffer) Len() int { return int(min(b.s.length&lenMask, b.p.size)) }

// SetMeta records m in the buffer's header, as a message without a reply address (see
// setAddress). Only the holder of the loan writes it, before the handle is pushed; the push's
// atomic store orders it before every consumer's read.
func (b Buffer) SetMeta(m Meta) {
	b.s.length = min(m.Len, b.p.size)
	b.s.topic = m.Topic
	b.s.seq = m.Seq
	b.s.stamp = m.Stamp
}

// Meta returns the buffer's header, with Len clamped to Cap.
func (b Buffer) Meta() Meta {
	return Meta{Len: min(b.s.length&lenMask, b.p.size), Topic: b.s.topic, Seq: b.s.seq, Stamp: b.s.stamp}
}

// trailer returns the slot trailer of the slot whose header is s: Size bytes past the payload's
// start, inside the slot.
func (p *pool) trailer(s *slotHeader) *slotTrailer {
	return (*slotTrailer)(unsafe.Add(unsafe.Pointer(s), uintptr(slotHeaderSize)+uintptr(p.size)))
}

// setAddress records a request's reply address and correlation id (or a reply's correlation
// id, with to 0) in the trailer and marks the header as addressed. Call it after SetMeta, before
// the push, like SetMeta.
func (b Buffer) setAddress(to InboxID, corr uint64) {
	tr := b.p.trailer(b.s)
	tr.replyTo, tr.corr = uint64(to), corr
	b.s.length |= lenAddressed
}

// address returns the reply address and correlation id the message carries: 0, 0 unless its
// sender set them (setAddress). It reads the trailer only for an addressed message, so that a
// plain message's take touches no line past the payload's first.
func (b Buffer) address() (InboxID, uint64) {
	if b.s.length&lenAddressed == 0 {
		return 0, 0
	}
	tr := b.p.trailer(b.s)
	return InboxID(tr.replyTo), tr.corr
}

// Refs returns the buffer's current reference count (for tests and tools).
func (b Buffer) Refs() int { return int(stateRefs(b.s.state.Load())) }
