package shm

// Baselines for the ping-pong benchmarks (pingpong_bench_test.go): the same two-process round
// trip with nothing of offq in it, measured in the same run so that ratios survive a noisy
// machine. Raw shared memory: two 64-bit words on separate cache lines of a small MAP_SHARED
// file, each side spinning on its own. Raw futex: the same with 32-bit words, FUTEX_WAIT and
// FUTEX_WAKE on every message. Unix socket: a stream socket with blocking read and write
// system calls, 64-byte messages. The unsafe code lives here because only package transport
// may use unsafe.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/offq/offq/internal/peer"
)

// Environment of the benchmark roles.
const (
	envPath = "OFFQ_BENCH_PATH" // shared file or socket
	envCPU  = "OFFQ_BENCH_CPU"  // CPU to pin the child's loop to; -1: none
)

// Stop values the parent stores to end a raw child.
const (
	stop64 = ^uint64(0)
	stop32 = ^uint32(0)
)

// sharedWords is a 4 KiB file mapped MAP_SHARED, handing out atomic words at the start of
// its cache lines.
type sharedWords struct{ mem []byte }

func mapSharedWords(path string, create bool) (*sharedWords, error) {
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if create {
		if err := f.Truncate(4096); err != nil {
			return nil, err
		}
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", path, err)
	}
	return &sharedWords{mem: mem}, nil
}

// u64 returns the 64-bit word at the start of cache line i.
func (s *sharedWords) u64(i int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&s.mem[i*64]))
}

// u32 returns the 32-bit word at the start of cache line i.
func (s *sharedWords) u32(i int) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&s.mem[i*64]))
}

func (s *sharedWords) close() error { return unix.Munmap(s.mem) }

// Cache lines of the shared file.
const (
	linePing = 0
	linePong = 1
)

// envPin set to "0" turns pinning off (for comparison; the documented results are pinned).
const envPin = "OFFQ_BENCH_PIN"

// benchCPUs returns two CPUs this process may run on, for the parent's loop and the child's;
// -1, -1 if there are not two or envPin is "0".
func benchCPUs() (parent, child int) {
	if os.Getenv(envPin) == "0" {
		return -1, -1
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return -1, -1
	}
	var cpus []int
	for i := 0; i < 1024 && len(cpus) < 2; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		return -1, -1
	}
	return cpus[0], cpus[1]
}

// pinThread locks the calling goroutine to its thread and the thread to cpu; if cpu < 0 it
// does nothing. The caller must not unlock: a goroutine that exits locked takes its thread
// with it, so the pinning cannot leak to other goroutines.
func pinThread(cpu int) error {
	if cpu < 0 {
		return nil
	}
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil { // 0: this thread
		return fmt.Errorf("pin thread to cpu %d: %w", cpu, err)
	}
	return nil
}

// pinFromEnv pins a child's loop as envCPU says.
func pinFromEnv() error {
	cpu, err := strconv.Atoi(os.Getenv(envCPU))
	if err != nil {
		return fmt.Errorf("%s: %w", envCPU, err)
	}
	return pinThread(cpu)
}

// spinUntil spins until w holds want. Every 64Ki turns it asks alive, and gives up with its
// error.
func spinUntil(w *atomic.Uint64, want uint64, alive func() error) error {
	for n := uint32(1); w.Load() != want; n++ {
		if n&(1<<16-1) == 0 {
			if err := alive(); err != nil {
				return err
			}
		}
	}
	return nil
}

// spinWhile spins while w holds old and returns its new value.
func spinWhile(w *atomic.Uint64, old uint64, alive func() error) (uint64, error) {
	for n := uint32(1); ; n++ {
		if v := w.Load(); v != old {
			return v, nil
		}
		if n&(1<<16-1) == 0 {
			if err := alive(); err != nil {
				return 0, err
			}
		}
	}
}

// roleRawSpin answers every value on the ping line by storing it on the pong line.
func roleRawSpin(c *peer.Child) error {
	sw, err := mapSharedWords(os.Getenv(envPath), false)
	if err != nil {
		return err
	}
	if err := pinFromEnv(); err != nil {
		return err
	}
	ping, pong := sw.u64(linePing), sw.u64(linePong)
	alive := c.Context().Err
	c.Send("ready")
	for last := uint64(0); ; {
		v, err := spinWhile(ping, last, alive)
		if err != nil {
			return err
		}
		if v == stop64 {
			return sw.close()
		}
		pong.Store(v)
		last = v
	}
}

// futexRoundTrip is the parent's half of a raw futex round: store and wake, then sleep until
// the answer.
func futexRoundTrip(ping, pong *atomic.Uint32, v uint32, alive func() error) error {
	ping.Store(v)
	futexWakeAll(ping)
	for pong.Load() != v {
		futexWaitOn(pong, v-1, time.Second)
		if pong.Load() != v {
			if err := alive(); err != nil {
				return err
			}
		}
	}
	return nil
}

// roleRawFutex answers every value on the ping line by storing it on the pong line and
// waking the parent, sleeping on the ping word in between.
func roleRawFutex(c *peer.Child) error {
	sw, err := mapSharedWords(os.Getenv(envPath), false)
	if err != nil {
		return err
	}
	if err := pinFromEnv(); err != nil {
		return err
	}
	ping, pong := sw.u32(linePing), sw.u32(linePong)
	ctx := c.Context()
	c.Send("ready")
	for last := uint32(0); ; {
		v := ping.Load()
		for v == last {
			futexWaitOn(ping, last, time.Second)
			if err := ctx.Err(); err != nil {
				return err
			}
			v = ping.Load()
		}
		if v == stop32 {
			return sw.close()
		}
		pong.Store(v)
		futexWakeAll(pong)
		last = v
	}
}

// readFull reads len(b) bytes from the blocking socket fd. It returns io.EOF if the peer
// closed the socket before the first byte.
func readFull(fd int, b []byte) error {
	for n := 0; n < len(b); {
		k, err := unix.Read(fd, b[n:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case k == 0 && n == 0:
			return io.EOF
		case k == 0:
			return io.ErrUnexpectedEOF
		}
		n += k
	}
	return nil
}

// writeFull writes b to the blocking socket fd.
func writeFull(fd int, b []byte) error {
	for n := 0; n < len(b); {
		k, err := unix.Write(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		n += k
	}
	return nil
}

// listenUnix listens on a Unix stream socket at path.
func listenUnix(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// acceptUnix accepts one connection on lfd, waiting at most timeout.
func acceptUnix(lfd int, timeout time.Duration) (int, error) {
	for deadline := time.Now().Add(timeout); ; {
		fds := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, err
		}
		if n == 0 {
			return -1, errors.New("no connection to accept in time")
		}
		fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

func closeFD(fd int) { unix.Close(fd) }

// roleUDS connects to the socket at envPath and echoes 64-byte messages until the parent
// closes the connection.
func roleUDS(c *peer.Child) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: os.Getenv(envPath)}); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if err := pinFromEnv(); err != nil {
		return err
	}
	c.Send("ready")
	buf := make([]byte, 64)
	for {
		if err := readFull(fd, buf); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := writeFull(fd, buf); err != nil {
			return err
		}
	}
}
