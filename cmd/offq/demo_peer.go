package main

// The hidden demo-peer subcommand: one child process of offq demo, a publisher or a subscriber.
// It talks to the parent in JSON lines (see demo_wire.go): lines on stdout, the final sequence
// numbers on stdin. End of stdin means "finish now"; it is also what a child sees when the
// parent dies, so no child outlives it.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/topics"
)

const (
	// progressEvery is how often a child reports its counters.
	progressEvery = 500 * time.Millisecond
	// drainTimeout bounds how long a subscriber drains its queue after the publisher finished.
	drainTimeout = 10 * time.Second
)

type peerOptions struct {
	role       string // "pub" or "sub"
	name       string
	pattern    string
	queueDepth int
	delay      time.Duration // per message, for the slow subscriber
	rate       float64
	duration   time.Duration
	size       int
}

func newDemoPeerCmd(a *app) *cobra.Command {
	var o peerOptions
	cmd := &cobra.Command{
		Use:    "demo-peer",
		Short:  "one process of offq demo (started by it)",
		Hidden: true,
		Args:   usageArgs(cobra.NoArgs),
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			if o.role != "pub" && o.role != "sub" {
				return usageError(fmt.Errorf("--role %q: want pub or sub", o.role))
			}
			return a.runPeer(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), o)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&o.role, "role", "", "pub or sub")
	f.StringVar(&o.name, "name", "peer", "name in reports and in the participant table")
	f.StringVar(&o.pattern, "pattern", "demo.>", "subscriber: pattern")
	f.IntVar(&o.queueDepth, "queue-depth", 0, "subscriber: queue depth (0: the region's inbox capacity)")
	f.DurationVar(&o.delay, "delay", 0, "subscriber: time spent on each message")
	f.Float64Var(&o.rate, "rate", 1000, "publisher: messages per second, all topics together")
	f.DurationVar(&o.duration, "duration", time.Second, "publisher: how long to publish")
	f.IntVar(&o.size, "size", 256, "publisher: payload bytes")
	return cmd
}

func (a *app) runPeer(ctx context.Context, stdin io.Reader, stdout io.Writer, o peerOptions) error {
	// An interrupt at the terminal reaches the whole process group; the parent decides when
	// its children stop (by closing their stdin), so that they detach cleanly.
	signal.Ignore(os.Interrupt)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	finals := make(chan map[string]uint64, 1)
	go func() {
		defer cancel()
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			var m parentMsg
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil || m.Final == nil {
				a.log.Warn("demo-peer: bad line on stdin", zap.ByteString("line", sc.Bytes()))
				continue
			}
			select {
			case finals <- m.Final:
			default:
			}
		}
	}()
	log := a.log.With(zap.String("peer", o.name))
	b, err := bus.Open(a.busName, bus.WithDir(a.dir), bus.WithLogger(log), bus.WithName(o.name))
	if err != nil {
		return err
	}
	defer b.Close()
	out := newLineWriter(stdout)
	if o.role == "pub" {
		return runDemoPublisher(ctx, b, o, out)
	}
	return runDemoSubscriber(ctx, b, o, out, finals)
}

// runDemoPublisher publishes rate messages a second, alternating between the demo topics,
// for duration, then reports the last sequence number of each topic.
func runDemoPublisher(ctx context.Context, b *bus.Bus, o peerOptions, out *lineWriter) error {
	if o.size < minPayload || o.size > maxPayload {
		return fmt.Errorf("demo-peer: --size %d: want %d to %d", o.size, minPayload, maxPayload)
	}
	var pubs [len(demoTopics)]*bus.Publisher
	for i, t := range demoTopics {
		p, err := b.Publisher(t)
		if err != nil {
			return err
		}
		pubs[i] = p
	}
	if err := out.send(peerMsg{Type: msgReady, Name: o.name, PID: os.Getpid()}); err != nil {
		return err
	}
	total := max(1, uint64(o.rate*o.duration.Seconds()+0.5))
	var sent, stalls atomic.Uint64
	stop := progress(func() peerMsg {
		return peerMsg{Type: msgProgress, Name: o.name, Sent: sent.Load(), Stalls: stalls.Load()}
	}, out)
	defer stop()

	hist := newHist()
	var seq [len(demoTopics)]uint64
	start := time.Now()
	for i := uint64(0); i < total; {
		// Send every message whose time has come (message i is due at i/rate), then sleep
		// until the next is due: batches keep the publisher off the CPU between them.
		due := min(total, uint64(time.Since(start).Seconds()*o.rate)+1)
		for ; i < due; i++ {
			t := i % uint64(len(demoTopics))
			t0 := time.Now()
			for {
				l, err := pubs[t].Loan(o.size)
				if err == nil {
					writePayload(l.Bytes(), uint32(t), seq[t]+1)
					if err := pubs[t].Send(ctx, l); err != nil {
						return err
					}
					break
				}
				if !errors.Is(err, bus.ErrPoolExhausted) {
					return err
				}
				// Every buffer is queued for some subscriber: wait for one to come back.
				stalls.Add(1)
				if sleepCtx(ctx, 100*time.Microsecond) != nil {
					return nil // the parent is stopping the demo
				}
			}
			record(hist, time.Since(t0).Nanoseconds())
			seq[t]++
			sent.Store(i + 1)
		}
		if i == total {
			break
		}
		next := start.Add(time.Duration(float64(i) / o.rate * float64(time.Second)))
		if sleepCtx(ctx, max(time.Until(next), 200*time.Microsecond)) != nil {
			return nil // the parent is stopping the demo
		}
	}
	elapsed := time.Since(start)
	stop()
	final := make(map[string]uint64, len(demoTopics))
	for i, t := range demoTopics {
		final[t] = seq[i]
	}
	return out.send(peerMsg{Type: msgDone, Name: o.name, Sent: sent.Load(), Stalls: stalls.Load(),
		ElapsedNS: elapsed.Nanoseconds(), Final: final, SendTime: summarise(hist)})
}

// subState is a subscriber's verification state. The counters are atomic because the
// progress reporter reads them; everything else belongs to the receiving goroutine.
type subState struct {
	matched [len(demoTopics)]bool
	last    [len(demoTopics)]uint64
	delay   time.Duration
	hist    *hdrhistogram.Histogram

	received, dropped, corrupt, disorder atomic.Uint64
}

// handle verifies, measures and releases m.
func (s *subState) handle(m bus.Message) {
	record(s.hist, time.Now().UnixNano()-m.Time().UnixNano())
	t, seq := topicIndex(m.Topic()), m.Seq()
	pt, pseq, ok := checkPayload(m.Data())
	ok = ok && t >= 0 && int(pt) == t && pseq == seq
	if s.delay > 0 {
		// The slow subscriber holds the message a while: its bytes must not change meanwhile
		// (the buffer is not reused while a reference is held).
		time.Sleep(s.delay)
		pt2, pseq2, ok2 := checkPayload(m.Data())
		ok = ok && ok2 && pt2 == pt && pseq2 == pseq
	}
	m.Release()
	s.received.Add(1)
	if !ok {
		s.corrupt.Add(1)
	}
	if t < 0 {
		return
	}
	switch exp := s.last[t] + 1; {
	case seq == exp:
		s.last[t] = seq
	case seq > exp:
		s.dropped.Add(seq - exp)
		s.last[t] = seq
	default:
		s.disorder.Add(1)
	}
}

// reached reports whether the subscriber saw the final message of every topic it matches.
func (s *subState) reached(final map[string]uint64) bool {
	for i, t := range demoTopics {
		if s.matched[i] && s.last[i] < final[t] {
			return false
		}
	}
	return true
}

func (s *subState) msg(typ, name string) peerMsg {
	return peerMsg{Type: typ, Name: name, Received: s.received.Load(), Dropped: s.dropped.Load(),
		Corrupt: s.corrupt.Load(), Disorder: s.disorder.Load()}
}

// runDemoSubscriber verifies every message until the parent sends the publisher's final
// sequence numbers, drains its queue until it has seen them (or the queue is empty), reports,
// and waits for the end of stdin.
func runDemoSubscriber(ctx context.Context, b *bus.Bus, o peerOptions, out *lineWriter, finals <-chan map[string]uint64) error {
	opts := []bus.SubscribeOption{bus.WithOverflow(bus.DropOldest), bus.WithoutHistory()}
	if o.queueDepth > 0 {
		opts = append(opts, bus.WithQueueDepth(o.queueDepth))
	}
	sub, err := b.Subscribe(o.pattern, opts...)
	if err != nil {
		return err
	}
	st := &subState{delay: o.delay, hist: newHist()}
	for i, t := range demoTopics {
		st.matched[i] = topics.Match(o.pattern, t)
	}
	if err := out.send(peerMsg{Type: msgReady, Name: o.name, PID: os.Getpid()}); err != nil {
		return err
	}
	stop := progress(func() peerMsg { return st.msg(msgProgress, o.name) }, out)
	defer stop()

	// Until the final sequence numbers arrive, take everything.
	recvCtx, stopRecv := context.WithCancel(ctx)
	var final map[string]uint64
	got := make(chan struct{})
	go func() {
		defer close(got)
		select {
		case final = <-finals:
		case <-ctx.Done():
		}
		stopRecv()
	}()
	for {
		m, err := sub.Receive(recvCtx)
		if err != nil {
			if recvCtx.Err() != nil {
				break
			}
			return err
		}
		st.handle(m)
	}
	<-got
	if final == nil {
		return nil // the parent closed stdin early: it is stopping the demo

	}
	// The publisher has returned from its last Send: everything it sent us is queued.
	drainCtx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	for !st.reached(final) && sub.Len() > 0 {
		m, err := sub.Receive(drainCtx)
		if err != nil {
			break
		}
		st.handle(m)
	}
	reached := st.reached(final)
	// Messages at the end of a topic that never arrived are drops too.
	for i, t := range demoTopics {
		if st.matched[i] && st.last[i] < final[t] {
			st.dropped.Add(final[t] - st.last[i])
			st.last[i] = final[t]
		}
	}
	stop()
	sm := st.msg(msgSummary, o.name)
	sm.Reached, sm.Latency = reached, summarise(st.hist)
	if err := out.send(sm); err != nil {
		return err
	}
	// Stay subscribed until the parent has read the inbox's counters and closes stdin.
	<-ctx.Done()
	return nil
}

// progress sends what snapshot returns every progressEvery until the returned stop is called;
// stop waits for the reporter to finish and may be called more than once.
func progress(snapshot func() peerMsg, out *lineWriter) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				out.send(snapshot())
			}
		}
	}()
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			close(quit)
		}
		<-done
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
