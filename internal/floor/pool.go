package floor

import (
	"context"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RawPool is the cheapest stream of messages written in place that two processes can make
// through shared memory: what offq's batched stream does, with none of its code, checks or
// crash safety. The producer takes the next 64-byte buffer of a pool (a single producer: its
// cursor walks the pool, and a buffer whose state word says free is its own), marks it taken
// and writes the message into it, and puts the buffer's index into a single-producer ring
// whose tail it publishes once per batch of messages; the consumer reads each buffer in place,
// frees it with a store to its state word, and publishes the head once per batch. So each
// message's buffer line goes to the consumer and back, as an offq buffer does (written at
// Loan, read and released by the subscriber, written again at the next Loan), while the ring
// costs an eighth of a line a message and the indexes one store a batch. It is the floor of
// offq's batched stream (offq bench's pool-raw row), not a transport.
//
// Send and Flush are for one goroutine of one process and Receive for one of another; Close
// may be called from any.
type RawPool struct {
	mem   []byte
	batch uint64
	// producer
	tail   uint64 // next position to fill
	shown  uint64 // the tail as published
	seen   uint64 // the head as last read
	cursor uint64 // next buffer to take
	// consumer
	head  uint64 // next position to read
	known uint64 // the tail as last read
	freed uint64 // the head as published
}

// Layout of a RawPool file: the tail on cache line 0, the head on line 1, the ring's slots
// (buffer indexes) from 128, then the buffers, 64 bytes each: the state word (0 free) and the
// message's word.
const (
	poolRingSlots = 4096
	poolBuffers   = 2 * poolRingSlots // a full ring and the batches on either side of it
	poolTailOff   = 0
	poolHeadOff   = 64
	poolSlotsOff  = 128
	poolBufOff    = poolSlotsOff + poolRingSlots*8
	poolBufSize   = 64
	poolFileSize  = poolBufOff + poolBuffers*poolBufSize
)

// MaxRawPoolBatch is the largest batch a RawPool publishes its indexes for.
const MaxRawPoolBatch = 1024

// CreateRawPool creates the file at path (which must not exist; mode 0600, symbolic links
// refused) and maps it, for the producer, which publishes its tail every batch messages (1 to
// MaxRawPoolBatch) and at Flush.
func CreateRawPool(path string, batch int) (*RawPool, error) {
	mem, err := createMapped(path, "raw pool", poolFileSize)
	if err != nil {
		return nil, err
	}
	return &RawPool{mem: mem, batch: uint64(min(max(batch, 1), MaxRawPoolBatch))}, nil
}

// OpenRawPool maps the file CreateRawPool made at path, for the consumer, which publishes its
// head every batch messages and whenever it has read all it saw.
func OpenRawPool(path string, batch int) (*RawPool, error) {
	mem, err := openMapped(path, "raw pool", "pool", poolFileSize)
	if err != nil {
		return nil, err
	}
	return &RawPool{mem: mem, batch: uint64(min(max(batch, 1), MaxRawPoolBatch))}, nil
}

func (r *RawPool) word(off int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&r.mem[off]))
}

func (r *RawPool) slot(pos uint64) *uint64 {
	return (*uint64)(unsafe.Pointer(&r.mem[poolSlotsOff+int(pos%poolRingSlots)*8]))
}

// buffer returns buffer i's state word and message word (i is taken modulo the pool: the
// consumer reads it from the ring).
func (r *RawPool) buffer(i uint64) (*atomic.Uint64, *uint64) {
	off := poolBufOff + int(i%poolBuffers)*poolBufSize
	return (*atomic.Uint64)(unsafe.Pointer(&r.mem[off])), (*uint64)(unsafe.Pointer(&r.mem[off+8]))
}

// Send writes v into the next buffer and queues the buffer's index, publishing the tail when a
// batch is full. It spins while the ring is full or the next buffer is not yet free, and
// returns ctx.Err() if ctx is done first (looked at every 65536 turns of a wait).
func (r *RawPool) Send(ctx context.Context, v uint64) error {
	for i := 1; r.tail-r.seen >= poolRingSlots; i++ {
		r.publish() // the consumer may be waiting for the part of the batch already written
		r.seen = r.word(poolHeadOff).Load()
		if i%ringRecheck == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	b := r.cursor
	state, msg := r.buffer(b)
	for i := 1; state.Load() != 0; i++ {
		r.publish()
		if i%ringRecheck == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	r.cursor = (b + 1) % poolBuffers
	*(*uint64)(unsafe.Pointer(state)) = 1 // taken: plain stores, ordered by the tail's atomic store
	*msg = v
	*r.slot(r.tail) = b
	r.tail++
	if r.tail-r.shown >= r.batch {
		r.publish()
	}
	return nil
}

// Flush publishes the tail: every message sent so far becomes visible.
func (r *RawPool) Flush() { r.publish() }

func (r *RawPool) publish() {
	if r.shown != r.tail {
		r.shown = r.tail
		r.word(poolTailOff).Store(r.tail)
	}
}

// Receive reads the oldest message in place and frees its buffer, spinning while the ring is
// empty. It returns ctx.Err() if ctx is done first.
func (r *RawPool) Receive(ctx context.Context) (uint64, error) {
	if r.head == r.known {
		r.release() // everything seen is read: let the producer reuse its slots
		for i := 1; ; i++ {
			r.known = r.word(poolTailOff).Load()
			if r.known != r.head {
				break
			}
			if i%ringRecheck == 0 && ctx.Err() != nil {
				return 0, ctx.Err()
			}
		}
	}
	state, msg := r.buffer(*r.slot(r.head))
	v := *msg
	state.Store(0)
	r.head++
	if r.head-r.freed >= r.batch {
		r.release()
	}
	return v, nil
}

func (r *RawPool) release() {
	if r.freed != r.head {
		r.freed = r.head
		r.word(poolHeadOff).Store(r.head)
	}
}

// Close unmaps the file.
func (r *RawPool) Close() error {
	if r.mem == nil {
		return nil
	}
	err := unix.Munmap(r.mem)
	r.mem = nil
	return err
}
