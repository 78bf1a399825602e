package shm

import (
	"fmt"
	"unsafe"
)

// Handle names one buffer in a region: its offset from the region's base and the generation
// the buffer had when it was allocated, packed in one 64-bit word so that storing it is a
// single atomic write that a crash cannot tear.
//
//	bit  63      0 (ring cells use it to tell handles from markers)
//	bit  62      0 (ring cells use it for the lap parity of the position)
//	bits 40..61  generation (22 bits)
//	bits 0..39   offset of the buffer's slot header from the region base
//
// A Handle read from shared memory is untrusted: Region.Buffer checks its offset against the
// pools' bounds and slot alignment and its generation against the slot's before using it.
// The zero Handle names no buffer.
type Handle uint64

const (
	handleOffBits = 40
	handleOffMask = 1<<handleOffBits - 1
	genBits       = 22
	genMask       = 1<<genBits - 1
	handleMask    = 1<<62 - 1 // bits a valid handle may use
)

func makeHandle(off uint64, gen uint32) Handle {
	return Handle(uint64(gen&genMask)<<handleOffBits | off&handleOffMask)
}

func (h Handle) offset() uint64 { return uint64(h) & handleOffMask }
func (h Handle) gen() uint32    { return uint32(uint64(h)>>handleOffBits) & genMask }

// String formats h for logs: "off@gen".
func (h Handle) String() string { return fmt.Sprintf("%#x@%d", h.offset(), h.gen()) }

// Slot state word: refs | owner<<16 | gen<<32. A slot is free when refs is zero; the owner
// field names the participant that holds the loan (the publisher's own reference) and is zero
// once the buffer has been handed over.
const (
	refsMask   = 0xffff
	ownerShift = 16
	ownerMask  = 0xffff << ownerShift
	genShift   = 32
	maxRefs    = refsMask
)

func stateRefs(v uint64) uint32  { return uint32(v & refsMask) }
func stateOwner(v uint64) uint32 { return uint32(v&ownerMask) >> ownerShift }
func stateGen(v uint64) uint32   { return uint32(v>>genShift) & genMask }

// Preallocated errors for the data path, so that a bad handle costs no allocation.
var (
	errHandleZero   = fmt.Errorf("%w: zero handle", ErrBadHandle)
	errHandleBits   = fmt.Errorf("%w: reserved bits set", ErrBadHandle)
	errHandleBounds = fmt.Errorf("%w: offset outside every pool", ErrBadHandle)
	errHandleAlign  = fmt.Errorf("%w: offset not at a slot boundary", ErrBadHandle)
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
// reads no shared memory: bounds and alignment only.
func (r *Region) decode(h Handle) (*pool, *slotHeader, uint32, error) {
	if h == 0 {
		return nil, nil, 0, errHandleZero
	}
	if uint64(h)&^handleMask != 0 {
		return nil, nil, 0, errHandleBits
	}
	off := h.offset()
	for i := range r.pools {
		p := &r.pools[i]
		if off < p.slots || off >= p.end {
			continue
		}
		rel := off - p.slots
		idx := rel / uint64(p.stride)
		if rel != idx*uint64(p.stride) {
			return nil, nil, 0, errHandleAlign
		}
		return p, (*slotHeader)(r.at(off)), uint32(idx), nil
	}
	return nil, nil, 0, errHandleBounds
}

// Buffer returns a checked view of the buffer h names: h must decode and its generation must
// match a buffer that is currently allocated. It allocates nothing.
func (r *Region) Buffer(h Handle) (Buffer, error) {
	p, s, _, err := r.decode(h)
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
	return Buffer{h: h, s: s, p: p, data: unsafe.Add(unsafe.Pointer(s), slotHeaderSize)}, nil
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
func (b Buffer) Len() int { return int(min(b.s.length, b.p.size)) }

// SetMeta records m in the buffer's header. Only the holder of the loan writes it, before the
// handle is pushed; the push's atomic store orders it before every consumer's read.
func (b Buffer) SetMeta(m Meta) {
	b.s.length = min(m.Len, b.p.size)
	b.s.topic = m.Topic
	b.s.seq = m.Seq
	b.s.stamp = m.Stamp
}

// Meta returns the buffer's header, with Len clamped to Cap.
func (b Buffer) Meta() Meta {
	return Meta{Len: min(b.s.length, b.p.size), Topic: b.s.topic, Seq: b.s.seq, Stamp: b.s.stamp}
}

// Refs returns the buffer's current reference count (for tests and tools).
func (b Buffer) Refs() int { return int(stateRefs(b.s.state.Load())) }
