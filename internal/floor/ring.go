package floor

import (
	"context"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RawRing is the cheapest one-way stream two processes can make through shared memory: a
// single-producer single-consumer ring of 64-bit words in a file mapped MAP_SHARED, the
// producer's tail and the consumer's head on cache lines of their own. The producer writes a
// word into the slot and publishes it with one atomic store of the tail; the consumer spins
// on the tail, reads the slot and stores the head. It carries a 64-bit word and nothing else,
// checks nothing and allocates nothing: it is the reference offq's stream is compared against
// (a Go ring with sequentially consistent stores, as Go's atomics are), not a transport.
//
// Send is for one goroutine of one process and Receive for one of another; Close may be
// called from any.
type RawRing struct {
	mem  []byte
	head uint64 // consumer: its copy of the head
	tail uint64 // producer: its copy of the tail
	seen uint64 // producer: the head as last read
}

// Layout of a RawRing file: the tail on cache line 0, the head on line 1, the slots from 128.
const (
	ringSlots    = 4096
	ringTailOff  = 0
	ringHeadOff  = 64
	ringSlotsOff = 128
	ringFileSize = ringSlotsOff + ringSlots*8
	ringRecheck  = 1 << 16 // spins between two looks at the context
)

// CreateRawRing creates the file at path (which must not exist; mode 0600, symbolic links
// refused) and maps it, for the producer.
func CreateRawRing(path string) (*RawRing, error) {
	mem, err := createMapped(path, "raw ring", ringFileSize)
	if err != nil {
		return nil, err
	}
	return &RawRing{mem: mem}, nil
}

// OpenRawRing maps the file CreateRawRing made at path, for the consumer.
func OpenRawRing(path string) (*RawRing, error) {
	mem, err := openMapped(path, "raw ring", "ring", ringFileSize)
	if err != nil {
		return nil, err
	}
	return &RawRing{mem: mem}, nil
}

func (r *RawRing) word(off int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&r.mem[off]))
}

func (r *RawRing) slot(pos uint64) *atomic.Uint64 {
	return r.word(ringSlotsOff + int(pos%ringSlots)*8)
}

// Send appends v, spinning while the ring is full. It returns ctx.Err() if ctx is done first
// (looked at every 65536 turns of a wait).
func (r *RawRing) Send(ctx context.Context, v uint64) error {
	for i := 1; r.tail-r.seen >= ringSlots; i++ {
		r.seen = r.word(ringHeadOff).Load()
		if i%ringRecheck == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	r.slot(r.tail).Store(v)
	r.tail++
	r.word(ringTailOff).Store(r.tail)
	return nil
}

// Receive takes the oldest word, spinning while the ring is empty. It returns ctx.Err() if
// ctx is done first.
func (r *RawRing) Receive(ctx context.Context) (uint64, error) {
	for i := 1; r.word(ringTailOff).Load() == r.head; i++ {
		if i%ringRecheck == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	v := r.slot(r.head).Load()
	r.head++
	r.word(ringHeadOff).Store(r.head)
	return v, nil
}

// Close unmaps the file.
func (r *RawRing) Close() error {
	if r.mem == nil {
		return nil
	}
	err := unix.Munmap(r.mem)
	r.mem = nil
	return err
}
