package bench

// offq's own measurements: ping-pong, stream and fan-out through the bus API, each on a
// region of its own sized for the case.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"syscall"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/floor"
	"github.com/offq/offq/internal/shm"
	"github.com/offq/offq/transport"
)

// Topics of the bench's regions.
const (
	topicPing   = "bench.ping"
	topicPong   = "bench.pong"
	topicStream = "bench.stream"
)

// Phases of a stream, in each message's header after its sequence number.
const (
	phaseWarm    = 0
	phaseMeasure = 1
	phaseEnd     = 2
)

func waitOf(mode string) bus.WaitStrategy {
	switch mode {
	case modeSpin:
		return bus.BusySpin
	case modeBlock:
		return bus.Sleep
	}
	return bus.SpinThenSleep
}

// streamDepth is the subscription queue of a stream or fan-out of size-byte messages: 4096,
// or as many as fit in budget bytes of buffers (at least 16), a power of two. A deep queue
// lets a publisher run ahead of subscribers that share a core.
func streamDepth(size int, budget int64) int {
	d := 4096
	for d > 16 && int64(d)*int64(roundUp64(size)) > budget {
		d /= 2
	}
	return d
}

// bufferBudget is how many bytes of buffers one region of the bench may take: a quarter of
// the free space in dir (a container's /dev/shm may be as small as 64 MiB), between 8 and
// 128 MiB.
func bufferBudget(dir string) int64 {
	const lo, hi = 8 << 20, 128 << 20
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return lo
	}
	return min(hi, max(lo, int64(st.Bavail)*int64(st.Bsize)/4))
}

func roundUp64(n int) int { return (n + 63) &^ 63 }

func (bn *bencher) openBenchBus(name string, cfg transport.Config) (*bus.Bus, error) {
	return bus.Open(name, bus.WithDir(bn.tmp), bus.WithConfig(cfg), bus.WithLogger(bn.log), bus.WithName("offq bench"))
}

// pingPongQueue is the queue of the ping-pong's bus, in cells: with fewer than 8 (a cache
// line of cells) the ping's and the pong's queues share a line, which the report says.
const pingPongQueue = 4

// pingPongRing is the slot ring of each side of offq-ring's ping-pong: more slots than the
// queues have cells, so that the subscriptions read the rings.
const pingPongRing = 8

// pingPongRingBytes is the buffer a ping-pong's slot ring takes: the bus gives a ring as many
// reader entries as the region has inboxes (4).
func pingPongRingBytes(size int) int {
	return shm.RingShape{Slots: pingPongRing, Payload: size, Readers: 4}.Bytes()
}

// streamRingQueue is the subscribers' queue in offq-ring's stream and fan-out rows: fewer
// cells than the publisher's slot ring has slots, so that they read the ring. The ring has as
// many slots as a pool stream's queue has cells (streamDepth): a publisher that is never held
// back (a ring's writer waits for no reader) runs that far ahead of a reader before it laps
// it.
const streamRingQueue = 16

func (bn *bencher) offqPingPong(ctx context.Context, c benchCase) (res benchResult, err error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	name := "pingpong-" + strconv.Itoa(bn.seq)
	cfg := transport.Config{
		Classes: []transport.Class{{Size: transport.Size(max(roundUp64(c.Size), roundUp64(pingPongRingBytes(c.Size)))), Count: 16}},
		Inboxes: 4, InboxCapacity: pingPongQueue, Topics: 4, Participants: 4, Held: 4,
	}
	b, err := bn.openBenchBus(name, cfg)
	if err != nil {
		return res, err
	}
	defer transport.Unlink(bn.tmp, name)
	defer b.Close()
	sub, err := b.Subscribe(topicPong, bus.WithWait(waitOf(c.Mode)), bus.WithoutHistory())
	if err != nil {
		return res, err
	}
	var popts []bus.PublisherOption
	ring := 0
	if c.System == sysORing {
		ring = pingPongRing
		popts = append(popts, bus.WithSlotRing(ring, c.Size))
	}
	pub, err := b.Publisher(topicPing, popts...)
	if err != nil {
		return res, err
	}
	p, err := bn.start("echo", fail, nil, peerArg{Role: "offq-echo", Bus: name, Mode: c.Mode, Size: c.Size, Ring: ring})
	if err != nil {
		return res, err
	}
	defer p.stop()
	if _, err := p.expect(ctx, benchReady); err != nil {
		return res, err
	}
	h := newHist()
	var seq uint64
	err = bn.timeRounds(ctx, h, func() error {
		seq++
		l, err := pub.Loan(c.Size)
		if err != nil {
			return err
		}
		binary.LittleEndian.PutUint64(l.Bytes(), seq)
		if err := pub.Send(ctx, l); err != nil {
			return err
		}
		m, err := sub.Receive(ctx)
		if err != nil {
			return err
		}
		got := binary.LittleEndian.Uint64(m.Data())
		m.Release()
		if got != seq {
			return fmt.Errorf("round trip %d came back as %d", seq, got)
		}
		return nil
	})
	if err != nil {
		return res, caseError(ctx, err)
	}
	if err := p.stop(); err != nil {
		return res, err
	}
	return pingResult(c, h), nil
}

// caseError prefers the reason the case was cancelled (a child died, the time ran out) to
// the error it caused.
func caseError(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// timeRounds runs round on this process's pinned thread: a warm-up of at least 100 rounds
// and the --warmup time, then as many rounds as fit in --duration (at least minMeasured), each
// timed into h; or, under go test -bench, bn.rounds.
func (bn *bencher) timeRounds(ctx context.Context, h *hdrhistogram.Histogram, round func() error) error {
	return onCPU(bn.cpus[0], func() error {
		warmEnd := floor.Now() + bn.o.warmup.Nanoseconds()
		for n := 0; n < 100 || floor.Now() < warmEnd; n++ {
			if err := round(); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
		if bn.rounds != nil {
			return bn.rounds(round)
		}
		end := floor.Now() + bn.o.duration.Nanoseconds()
		for {
			t0 := floor.Now()
			if t0 >= end && h.TotalCount() >= minMeasured {
				return nil
			}
			if err := round(); err != nil {
				return err
			}
			record(h, floor.Now()-t0)
		}
	})
}

// streamConfig is the region of a stream or fan-out: a queue of depth messages per subscriber
// and as many buffers, plus a few. Each subscriber's held list has room for two batches: a
// batched subscriber takes at most as many messages at once as its held list has free
// entries, and with the 4 it once had, "batch 64" rows measured batches of at most 4 on the
// receiving side.
func streamConfig(c benchCase, depth int) transport.Config {
	return transport.Config{
		Classes: []transport.Class{{Size: transport.Size(roundUp64(c.Size)), Count: uint32(depth + c.Subs + 16)}},
		Inboxes: uint32(c.Subs + 1), InboxCapacity: uint32(depth), Topics: 4, Participants: uint32(c.Subs + 2),
		Held: uint32(max(4, 2*c.Batch)),
	}
}

// ringStreamConfig is the region of an offq-ring stream or fan-out, the publisher's ring's
// slots and the subscribers' queue depth. The messages go through the ring, in a buffer of a
// class of its own; the subscribers' queues carry nothing and are kept small, below the ring's
// slots, so that the subscribers read the ring.
func ringStreamConfig(c benchCase, budget int64) (cfg transport.Config, ring, depth int) {
	ring = max(streamDepth(c.Size+64, budget), 2*streamRingQueue) // (a slot: the message and its header)
	depth = streamRingQueue
	cfg = streamConfig(c, depth)
	rb := shm.RingShape{Slots: ring, Payload: c.Size, Readers: int(cfg.Inboxes)}.Bytes()
	cfg.Classes = append(cfg.Classes, transport.Class{Size: transport.Size(roundUp64(rb)), Count: 1})
	return cfg, ring, depth
}

// offqStream measures a stream (c.Subs == 1) or a fan-out: this process publishes for the
// warm-up and the duration, then an end marker; each child counts what it received in the
// measured phase.
func (bn *bencher) offqStream(ctx context.Context, c benchCase) (res benchResult, err error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	name := "stream-" + strconv.Itoa(bn.seq)
	depth := streamDepth(c.Size, bufferBudget(bn.tmp))
	cfg := streamConfig(c, depth)
	ring := 0
	var popts []bus.PublisherOption
	if c.System == sysORing {
		cfg, ring, depth = ringStreamConfig(c, bufferBudget(bn.tmp))
		popts = append(popts, bus.WithSlotRing(ring, c.Size))
	}
	b, err := bn.openBenchBus(name, cfg)
	if err != nil {
		return res, err
	}
	defer transport.Unlink(bn.tmp, name)
	defer b.Close()
	pub, err := b.Publisher(topicStream, popts...)
	if err != nil {
		return res, err
	}
	var procs []*benchProc
	defer func() { stopAll(procs) }()
	for i := range c.Subs {
		p, err := bn.start(fmt.Sprintf("sub-%d", i+1), fail, nil, peerArg{Role: "offq-sub", Bus: name, Mode: c.Mode, Depth: depth, Batch: c.Batch, Ring: ring})
		if err != nil {
			return res, err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		if _, err := p.expect(ctx, benchReady); err != nil {
			return res, err
		}
	}
	var stalls uint64
	send := func(seq, phase uint64) error {
		for {
			l, err := pub.Loan(c.Size)
			if errors.Is(err, bus.ErrPoolExhausted) {
				// Every buffer is queued or held: wait for a subscriber to release one.
				if stalls++; stalls%1024 == 0 && ctx.Err() != nil {
					return ctx.Err()
				}
				runtime.Gosched()
				continue
			}
			if err != nil {
				return err
			}
			b := l.Bytes()
			binary.LittleEndian.PutUint64(b[0:], seq)
			binary.LittleEndian.PutUint64(b[8:], phase)
			return pub.Send(ctx, l)
		}
	}
	if c.Batch > 0 {
		send = batchSender(ctx, pub, c, &stalls)
	}
	err = onCPU(bn.cpus[0], func() error { return bn.publish(send) })
	if err != nil {
		return res, caseError(ctx, err)
	}
	if got := pub.FanOut(); got != c.Subs {
		return res, fmt.Errorf("publisher delivered to %d subscribers, want %d", got, c.Subs)
	}
	return bn.collect(ctx, c, procs)
}

// batchSender is the batched form of offqStream's send: it loans c.Batch buffers at once
// (LoanBatch), writes one message into each per call, and sends them together (SendBatch) when
// the batch is full or the message is the end marker.
func batchSender(ctx context.Context, pub *bus.Publisher, c benchCase, stalls *uint64) func(seq, phase uint64) error {
	loans := make([]bus.Loan, c.Batch)
	var ls []bus.Loan
	used := 0
	return func(seq, phase uint64) error {
		for used == len(ls) {
			var err error
			ls, err = pub.LoanBatch(loans, c.Size)
			used = 0
			if errors.Is(err, bus.ErrPoolExhausted) {
				if *stalls++; *stalls%1024 == 0 && ctx.Err() != nil {
					return ctx.Err()
				}
				runtime.Gosched()
				continue
			}
			if err != nil {
				return err
			}
		}
		b := ls[used].Bytes()
		binary.LittleEndian.PutUint64(b[0:], seq)
		binary.LittleEndian.PutUint64(b[8:], phase)
		used++
		if used < len(ls) && phase != phaseEnd {
			return nil
		}
		for _, l := range ls[used:] {
			l.Discard() // the end marker came first: the rest of the batch is not needed
		}
		err := pub.SendBatch(ctx, ls[:used])
		ls, used = ls[:0], 0
		return err
	}
}

// collect gathers the children's counts, stops them and computes the rate: every delivery in
// the measured phase, over the time from the first of them to the last end marker (the stamps
// come from one system-wide monotonic clock). Stopping a child twice is harmless, so the
// caller's deferred stop may follow.
func (bn *bencher) collect(ctx context.Context, c benchCase, procs []*benchProc) (benchResult, error) {
	var count, dropped, disorder uint64
	var first, end int64
	for _, p := range procs {
		l, err := p.expect(ctx, benchCounts)
		if err != nil {
			return benchResult{}, err
		}
		if l.Count == 0 {
			return benchResult{}, fmt.Errorf("%s received nothing in the measured phase", p.name)
		}
		count += l.Count
		dropped += l.Dropped
		disorder += l.Disorder
		if first == 0 || l.First < first {
			first = l.First
		}
		end = max(end, l.End)
	}
	if err := stopAll(procs); err != nil {
		return benchResult{}, err
	}
	res := resultOf(c)
	res.MsgsPerSec = float64(count) / (float64(end-first) / 1e9)
	res.Samples = int64(count)
	res.Dropped = dropped
	if disorder > 0 {
		// Not a transport's cost but a broken one: report no figure.
		return res, fmt.Errorf("%d messages arrived out of order (%d dropped)", disorder, dropped)
	}
	return res, nil
}
