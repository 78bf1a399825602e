package shm

// The floors `offq bench` measures offq against, and the thread pinning its loops use. They
// live here because they need unsafe and x/sys/unix, which only package transport may import.
// Nothing else in offq uses them.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RawWait says how the two sides of a RawPingPong wait for each other.
type RawWait uint8

const (
	// RawSpin: each side spins on its own word until the other side stores to it. No system
	// call at all: the floor for any shared-memory transport between two processes.
	RawSpin RawWait = iota
	// RawFutex: each side stores, calls FUTEX_WAKE, and sleeps in FUTEX_WAIT until its own
	// word changes; a system call on every message, and a wake-up on every message.
	RawFutex
)

func (w RawWait) String() string {
	switch w {
	case RawSpin:
		return "spin"
	case RawFutex:
		return "futex"
	}
	return fmt.Sprintf("RawWait(%d)", uint8(w))
}

// Layout of a RawPingPong file: the ping word at the start of cache line 0, the pong word at
// the start of cache line 1, so that each side spins on a line only the other writes.
const (
	rawFileSize = 4096
	rawPingOff  = 0
	rawPongOff  = 64
	rawStop     = ^uint32(0) // the ping value that ends Echo
	rawRecheck  = 1 << 16    // spins between two looks at the context
	rawNap      = 100 * time.Millisecond
)

// RawPingPong is the cheapest round trip two processes can make through shared memory: a
// counter passed back and forth in two 32-bit words on separate cache lines of a 4 KiB file
// mapped MAP_SHARED. The initiator stores n into the ping word and waits until the pong word
// holds n; the other process (Echo) waits for each new ping value and copies it into the pong
// word. It carries no payload, checks nothing and allocates nothing: it is the floor offq's
// round trip is compared against, not a transport.
//
// Ping and Echo are each for one goroutine at a time; Stop and Close may be called from
// another goroutine.
type RawPingPong struct {
	mem  []byte
	wait RawWait
	seq  uint32 // initiator: the last value sent
}

// CreateRawPingPong creates the file at path (which must not exist; mode 0600, symbolic
// links refused) and maps it.
func CreateRawPingPong(path string, w RawWait) (*RawPingPong, error) {
	f, err := openFile(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("offq: raw ping-pong: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(rawFileSize); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("offq: raw ping-pong: %w", err)
	}
	return mapRaw(f, w)
}

// OpenRawPingPong maps the file CreateRawPingPong made at path, for the Echo side.
func OpenRawPingPong(path string, w RawWait) (*RawPingPong, error) {
	f, err := openFile(path, unix.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("offq: raw ping-pong: %w", err)
	}
	defer f.Close()
	if _, _, size, err := fileOwner(f); err != nil || size != rawFileSize {
		return nil, fmt.Errorf("offq: raw ping-pong: %s is not a ping-pong file (size %d, %v)", path, size, err)
	}
	return mapRaw(f, w)
}

func mapRaw(f *os.File, w RawWait) (*RawPingPong, error) {
	if w > RawFutex {
		return nil, fmt.Errorf("offq: raw ping-pong: wait %v", w)
	}
	mem, err := mapFile(f, rawFileSize, false)
	if err != nil {
		return nil, fmt.Errorf("offq: raw ping-pong: %w", err)
	}
	return &RawPingPong{mem: mem, wait: w}, nil
}

func (p *RawPingPong) word(off int) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&p.mem[off]))
}

// Ping makes one round trip: it stores the next value into the ping word and waits, as the
// RawWait says, until the Echo side has copied it into the pong word. It returns ctx.Err()
// if ctx is done first (a spinning Ping looks at ctx every 65536 turns, a sleeping one at
// least every 100 ms).
func (p *RawPingPong) Ping(ctx context.Context) error {
	p.seq++
	if p.seq == rawStop {
		p.seq = 1
	}
	v := p.seq
	ping, pong := p.word(rawPingOff), p.word(rawPongOff)
	ping.Store(v)
	if p.wait == RawSpin {
		for n := uint32(1); pong.Load() != v; n++ {
			if n%rawRecheck == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
		}
		return nil
	}
	futexWakeAll(ping)
	for {
		old := pong.Load()
		if old == v {
			return nil
		}
		futexWaitOn(pong, old, rawNap)
		if pong.Load() != v {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
}

// Echo answers every Ping until Stop (it returns nil) or until ctx is done (ctx.Err()).
func (p *RawPingPong) Echo(ctx context.Context) error {
	ping, pong := p.word(rawPingOff), p.word(rawPongOff)
	last := pong.Load() // the last value answered: a ping made before Echo began is answered
	for {
		v := ping.Load()
		for n := uint32(1); v == last; n++ {
			if p.wait == RawFutex {
				futexWaitOn(ping, last, rawNap)
				n = rawRecheck
			}
			if n%rawRecheck == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			v = ping.Load()
		}
		if v == rawStop {
			return nil
		}
		pong.Store(v)
		if p.wait == RawFutex {
			futexWakeAll(pong)
		}
		last = v
	}
}

// Stop makes the Echo side return.
func (p *RawPingPong) Stop() {
	ping := p.word(rawPingOff)
	ping.Store(rawStop)
	futexWakeAll(ping)
}

// Close unmaps the file; it does not remove it. No Ping or Echo may be under way.
func (p *RawPingPong) Close() error {
	if p.mem == nil {
		return nil
	}
	err := unmap(p.mem)
	p.mem = nil
	return err
}

// CPUs returns the CPUs the calling thread may run on, ascending.
func CPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("offq: sched_getaffinity: %w", err)
	}
	var out []int
	for i := 0; i < 8*int(unsafe.Sizeof(set)) && len(out) < set.Count(); i++ {
		if set.IsSet(i) {
			out = append(out, i)
		}
	}
	return out, nil
}

// PinThread locks the calling goroutine to its OS thread (runtime.LockOSThread) and that
// thread to cpu, for a measurement loop that must stay on one core while another process
// runs on another. If cpu < 0 it does nothing.
//
// The goroutine should end without calling runtime.UnlockOSThread: the runtime then ends the
// thread with it, so the affinity never leaks to other goroutines. If the affinity cannot be
// set, the goroutine stays locked and the error says why.
func PinThread(cpu int) error {
	if cpu < 0 {
		return nil
	}
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil { // 0: the calling thread
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("offq: pin thread to cpu %d: not an allowed cpu", cpu)
		}
		return fmt.Errorf("offq: pin thread to cpu %d: %w", cpu, err)
	}
	return nil
}
