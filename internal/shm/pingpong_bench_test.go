package shm

// Two-process round trips: this process sends, a child answers, one op is one round trip.
// offq passes one 64-byte buffer's handle back and forth through two inboxes; the baselines
// (baseline_test.go) do the same with raw shared memory, a raw futex and a Unix socket, in
// the same run so that their ratios survive a noisy machine. Both loops are pinned to
// different CPUs and warmed up before the timer starts. docs/performance.md has results.
//
//	go test -run='^$' -bench=PingPong -benchtime=200000x -count=3 ./transport

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
)

// warmup is how long the round trip runs before timing starts.
const warmup = 100 * time.Millisecond

func BenchmarkPingPong(b *testing.B) {
	b.Run("raw-shm-spin", benchRawSpin)
	b.Run("offq-busy-spin", func(b *testing.B) { benchOffq(b, BusySpin) })
	b.Run("offq-spin-then-sleep", func(b *testing.B) { benchOffq(b, SpinThenSleep) })
	b.Run("raw-futex", benchRawFutex)
	b.Run("offq-sleep", func(b *testing.B) { benchOffq(b, Sleep) })
	b.Run("uds-64B", benchUDS)
}

// timeRoundTrips warms up, then times b.N calls of round on a goroutine whose thread is
// pinned to cpu, and reports ns/rtt.
func timeRoundTrips(b *testing.B, cpu int, round func() error) {
	b.ReportAllocs()
	errc := make(chan error, 1)
	go func() {
		// Exits with its thread locked: the runtime ends the pinned thread with it.
		if err := pinThread(cpu); err != nil {
			errc <- err
			return
		}
		for start, n := time.Now(), 0; n < 100 || time.Since(start) < warmup; n++ {
			if err := round(); err != nil {
				errc <- fmt.Errorf("warm-up round %d: %w", n, err)
				return
			}
		}
		b.ResetTimer()
		for i := range b.N {
			if err := round(); err != nil {
				errc <- fmt.Errorf("round %d: %w", i, err)
				return
			}
		}
		b.StopTimer()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/rtt")
}

// aliveWhile returns a check that fails once p has exited.
func aliveWhile(p *peer.Proc) func() error {
	return func() error {
		select {
		case <-p.Exited():
			return fmt.Errorf("%v exited", p)
		default:
			return nil
		}
	}
}

func pingPongConfig() Config {
	c := DefaultConfig()
	c.Classes = []Class{{Size: 256, Count: 64}}
	c.Inboxes = 4
	c.InboxCapacity = 64
	c.Topics = 1
	c.Participants = 4
	c.HistoryDepth = 0
	c.Held = 4
	return c
}

// roleBenchEcho opens an inbox, says "inbox ID", and pushes every handle it receives back to
// envInbox, waiting with the strategy envStrategy, until the parent closes its stdin.
func roleBenchEcho(c *peer.Child) error {
	s, err := envUint(envStrategy)
	if err != nil {
		return err
	}
	r, p, err := attachFromEnv("echo")
	if err != nil {
		return err
	}
	back, err := inboxFromEnv(r)
	if err != nil {
		return err
	}
	mine, err := p.OpenInbox(InboxConfig{Capacity: 2, Policy: DropNewest})
	if err != nil {
		return err
	}
	if err := pinFromEnv(); err != nil {
		return err
	}
	ctx := c.Context()
	w := Waiter{Strategy: WaitStrategy(s)}
	c.Send("inbox %d", mine.ID())
	for last := uint64(0); ; last++ {
		h, err := mine.Pop(ctx, w)
		if err != nil {
			if c.Stopped() {
				break
			}
			return err
		}
		// Check the handle and read the payload, as a real subscriber does.
		buf, err := r.Buffer(h)
		if err != nil {
			return err
		}
		if v := binary.LittleEndian.Uint64(buf.Bytes()); v != last+1 {
			return fmt.Errorf("message %d carries %d", last+1, v)
		}
		if err := back.Push(ctx, h); err != nil {
			return err
		}
	}
	mine.Close()
	if err := p.Detach(); err != nil {
		return err
	}
	return r.Close()
}

// envStrategy is the WaitStrategy of the echo child.
const envStrategy = "OFFQ_BENCH_STRATEGY"

func benchOffq(b *testing.B, strategy WaitStrategy) {
	pcpu, ccpu := benchCPUs()
	dir := b.TempDir()
	r, err := Create("pingpong", Options{Dir: dir, Config: pingPongConfig()})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	me, err := r.Attach("bench")
	if err != nil {
		b.Fatal(err)
	}
	defer me.Detach()
	mine, err := me.OpenInbox(InboxConfig{Capacity: 2, Policy: DropNewest})
	if err != nil {
		b.Fatal(err)
	}
	defer mine.Close()
	p := peer.Start(b, "bench-echo", envs(envDir, dir, envRegion, "pingpong", envInbox, uint32(mine.ID()),
		envStrategy, uint8(strategy), envCPU, ccpu)...)
	rest, err := p.Expect("inbox ", procTimeout)
	if err != nil {
		b.Fatal(err)
	}
	id, err := strconv.ParseUint(rest, 10, 32)
	if err != nil {
		b.Fatal(err)
	}
	theirs, err := r.Inbox(InboxID(id))
	if err != nil {
		b.Fatal(err)
	}
	buf, err := me.Alloc(64)
	if err != nil {
		b.Fatal(err)
	}
	h := buf.Handle()
	if err := r.AddRefs(h, 1); err != nil { // the reference that travels with the handle
		b.Fatal(err)
	}
	if err := me.Unloan(h); err != nil {
		b.Fatal(err)
	}
	buf.SetMeta(Meta{Len: 64})
	payload := buf.Bytes()[:64]

	// If the child dies, closing our inbox makes the waiting Pop fail with ErrClosed. (A
	// cancellable context would do it too, but Pop then allocates each time it sleeps.)
	ctx := context.Background()
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-p.Exited():
			mine.Close()
		case <-stop:
		}
	}()
	unwatch := sync.OnceFunc(func() {
		close(stop)
		<-watched
	})
	defer unwatch()
	w := Waiter{Strategy: strategy}
	var seq uint64
	timeRoundTrips(b, pcpu, func() error {
		seq++
		binary.LittleEndian.PutUint64(payload, seq)
		if err := theirs.Push(ctx, h); err != nil {
			return err
		}
		got, err := mine.Pop(ctx, w)
		if err != nil {
			return err
		}
		if got != h {
			return fmt.Errorf("got handle %v back, want %v", got, h)
		}
		return nil
	})
	unwatch()
	if err := r.Release(h); err != nil {
		b.Fatal(err)
	}
	p.CloseStdin()
	if err := p.Wait(procTimeout); err != nil {
		b.Fatal(err)
	}
	for i, n := range must(r.CountAllocated()) {
		if n != 0 {
			b.Fatalf("class %d: %d buffers still allocated", i, n)
		}
	}
}

func benchRawSpin(b *testing.B) {
	pcpu, ccpu := benchCPUs()
	path := filepath.Join(b.TempDir(), "words")
	sw, err := mapSharedWords(path, true)
	if err != nil {
		b.Fatal(err)
	}
	defer sw.close()
	p := peer.Start(b, "bench-raw-spin", envs(envPath, path, envCPU, ccpu)...)
	if _, err := p.Expect("ready", procTimeout); err != nil {
		b.Fatal(err)
	}
	ping, pong := sw.u64(linePing), sw.u64(linePong)
	alive := aliveWhile(p)
	var v uint64
	timeRoundTrips(b, pcpu, func() error {
		v++
		ping.Store(v)
		return spinUntil(pong, v, alive)
	})
	ping.Store(stop64)
	if err := p.Wait(procTimeout); err != nil {
		b.Fatal(err)
	}
}

func benchRawFutex(b *testing.B) {
	pcpu, ccpu := benchCPUs()
	path := filepath.Join(b.TempDir(), "words")
	sw, err := mapSharedWords(path, true)
	if err != nil {
		b.Fatal(err)
	}
	defer sw.close()
	p := peer.Start(b, "bench-raw-futex", envs(envPath, path, envCPU, ccpu)...)
	if _, err := p.Expect("ready", procTimeout); err != nil {
		b.Fatal(err)
	}
	ping, pong := sw.u32(linePing), sw.u32(linePong)
	alive := aliveWhile(p)
	var v uint32
	timeRoundTrips(b, pcpu, func() error {
		v++
		return futexRoundTrip(ping, pong, v, alive)
	})
	ping.Store(stop32)
	futexWakeAll(ping)
	if err := p.Wait(procTimeout); err != nil {
		b.Fatal(err)
	}
}

func benchUDS(b *testing.B) {
	pcpu, ccpu := benchCPUs()
	path := filepath.Join(b.TempDir(), "sock")
	lfd, err := listenUnix(path)
	if err != nil {
		b.Fatal(err)
	}
	p := peer.Start(b, "bench-uds", envs(envPath, path, envCPU, ccpu)...)
	fd, err := acceptUnix(lfd, procTimeout)
	closeFD(lfd)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if fd >= 0 {
			closeFD(fd)
		}
	}()
	if _, err := p.Expect("ready", procTimeout); err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 64)
	timeRoundTrips(b, pcpu, func() error {
		if err := writeFull(fd, msg); err != nil {
			return err
		}
		return readFull(fd, msg)
	})
	closeFD(fd) // the child reads end of file and exits
	fd = -1
	if err := p.Wait(procTimeout); err != nil {
		b.Fatal(err)
	}
}
