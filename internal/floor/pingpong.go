package floor

import (
	"context"
	"fmt"
	"os"
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
	if w > RawFutex {
		return nil, fmt.Errorf("offq: raw ping-pong: wait %v", w)
	}
	mem, err := createMapped(path, "raw ping-pong", rawFileSize)
	if err != nil {
		return nil, err
	}
	return &RawPingPong{mem: mem, wait: w}, nil
}

// OpenRawPingPong maps the file CreateRawPingPong made at path, for the Echo side.
func OpenRawPingPong(path string, w RawWait) (*RawPingPong, error) {
	if w > RawFutex {
		return nil, fmt.Errorf("offq: raw ping-pong: wait %v", w)
	}
	mem, err := openMapped(path, "raw ping-pong", "ping-pong", rawFileSize)
	if err != nil {
		return nil, err
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
	err := unix.Munmap(p.mem)
	p.mem = nil
	return err
}

// createMapped creates the file at path (which must not exist; mode 0600, symbolic links
// refused), sizes it and maps it MAP_SHARED; what names the floor in errors.
func createMapped(path, what string, size int) ([]byte, error) {
	f, err := openFile(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("offq: %s: %w", what, err)
	}
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("offq: %s: %w", what, err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("offq: %s: mmap %s: %w", what, path, err)
	}
	return mem, nil
}

// openMapped maps the file at path, which must be a kind file of size bytes made by
// createMapped.
func openMapped(path, what, kind string, size int) ([]byte, error) {
	f, err := openFile(path, unix.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("offq: %s: %w", what, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Size != int64(size) {
		return nil, fmt.Errorf("offq: %s: %s is not a %s file (size %d, %v)", what, path, kind, st.Size, err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("offq: %s: mmap %s: %w", what, path, err)
	}
	return mem, nil
}

// openFile opens path with O_NOFOLLOW, so that a symbolic link planted in a world-writable
// directory such as /dev/shm is refused rather than followed.
func openFile(path string, flag int, mode os.FileMode) (*os.File, error) {
	fd, err := unix.Open(path, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(mode.Perm()))
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// futexWaitOn sleeps while *w == val, for at most d. Spurious returns are allowed. The
// private flag is absent: the waiter and the waker are different processes.
func futexWaitOn(w *atomic.Uint32, val uint32, d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWait, uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// futexWakeAll wakes every process sleeping on w.
func futexWakeAll(w *atomic.Uint32) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWake, uintptr(1<<31-1), 0, 0, 0)
}

// Futex operations (FUTEX_WAIT, FUTEX_WAKE).
const (
	futexWait = 0
	futexWake = 1
)
