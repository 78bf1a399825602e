package demo

// One child process of offq demo, a publisher or a subscriber. It talks to the parent in JSON
// lines (see wire.go): lines on stdout, the final sequence numbers on stdin. End of stdin means
// "finish now"; internal/peer ends the child when the parent dies, so no child outlives it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/topics"
)

const (
	// progressEvery is how often a child reports its counters.
	progressEvery = 500 * time.Millisecond
	// drainTimeout bounds how long a subscriber drains its queue after the publisher finished.
	drainTimeout = 10 * time.Second
)

// Role is the name of offq demo's children in internal/peer: the program that runs Run must
// hand Roles to peer.Dispatch before anything else.
const Role = "offq-demo"

// Roles are the children's roles, for peer.Dispatch.
var Roles = map[string]peer.Role{Role: runPeer}

// peerArg is what a child plays, handed to it by the parent.
type peerArg struct {
	Role       string        `json:"role"` // "pub" or "sub"
	Name       string        `json:"name"` // in reports and in the participant table
	Dir        string        `json:"dir"`
	Bus        string        `json:"bus"`
	LogLevel   string        `json:"log_level"`
	Pattern    string        `json:"pattern,omitempty"`     // subscriber
	QueueDepth int           `json:"queue_depth,omitempty"` // subscriber; 0: the region's inbox capacity
	Delay      time.Duration `json:"delay,omitempty"`       // per message, for the slow subscriber
	Rate       float64       `json:"rate,omitempty"`        // publisher: messages per second, all topics together
	Duration   time.Duration `json:"duration,omitempty"`    // publisher: how long to publish
	Size       int           `json:"size,omitempty"`        // publisher: payload bytes
}

func runPeer(c *peer.Child) error {
	var o peerArg
	if err := c.Arg(&o); err != nil {
		return err
	}
	// An interrupt at the terminal reaches the whole process group; the parent decides when
	// its children stop (by closing their stdin), so that they detach cleanly.
	signal.Ignore(os.Interrupt)
	ctx := c.Context()
	log := childLogger(o.LogLevel).With(zap.String("peer", o.Name))
	finals := make(chan map[string]uint64, 1)
	go func() {
		for {
			var m parentMsg
			err := c.Decode(&m)
			if err == io.EOF || ctx.Err() != nil {
				return
			}
			if err != nil || m.Final == nil {
				log.Warn("demo child: bad line on stdin", zap.Error(err))
				continue
			}
			select {
			case finals <- m.Final:
			default:
			}
		}
	}()
	b, err := bus.Open(o.Bus, bus.WithDir(o.Dir), bus.WithLogger(log), bus.WithName(o.Name))
	if err != nil {
		return err
	}
	defer b.Close()
	if o.Role == "pub" {
		return runDemoPublisher(ctx, b, o, c)
	}
	return runDemoSubscriber(ctx, b, o, c, finals)
}

// runDemoPublisher publishes rate messages a second, alternating between the demo topics,
// for duration, then reports the last sequence number of each topic.
func runDemoPublisher(ctx context.Context, b *bus.Bus, o peerArg, out *peer.Child) error {
	if o.Size < minPayload || o.Size > maxPayload {
		return fmt.Errorf("demo child: size %d: want %d to %d", o.Size, minPayload, maxPayload)
	}
	var pubs [len(demoTopics)]*bus.Publisher
	for i, t := range demoTopics {
		p, err := b.Publisher(t)
		if err != nil {
			return err
		}
		pubs[i] = p
	}
	if err := out.Encode(peerMsg{Type: msgReady, Name: o.Name, PID: os.Getpid()}); err != nil {
		return err
	}
	total := max(1, uint64(o.Rate*o.Duration.Seconds()+0.5))
	var sent, stalls atomic.Uint64
	stop := progress(func() peerMsg {
		return peerMsg{Type: msgProgress, Name: o.Name, Sent: sent.Load(), Stalls: stalls.Load()}
	}, out)
	defer stop()

	hist := newHist()
	var seq [len(demoTopics)]uint64
	start := time.Now()
	for i := uint64(0); i < total; {
		// Send every message whose time has come (message i is due at i/rate), then sleep
		// until the next is due: batches keep the publisher off the CPU between them.
		due := min(total, uint64(time.Since(start).Seconds()*o.Rate)+1)
		for ; i < due; i++ {
			t := i % uint64(len(demoTopics))
			t0 := time.Now()
			for {
				l, err := pubs[t].Loan(o.Size)
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
		next := start.Add(time.Duration(float64(i) / o.Rate * float64(time.Second)))
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
	return out.Encode(peerMsg{Type: msgDone, Name: o.Name, Sent: sent.Load(), Stalls: stalls.Load(),
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
func runDemoSubscriber(ctx context.Context, b *bus.Bus, o peerArg, out *peer.Child, finals <-chan map[string]uint64) error {
	opts := []bus.SubscribeOption{bus.WithOverflow(bus.DropOldest), bus.WithoutHistory()}
	if o.QueueDepth > 0 {
		opts = append(opts, bus.WithQueueDepth(o.QueueDepth))
	}
	sub, err := b.Subscribe(o.Pattern, opts...)
	if err != nil {
		return err
	}
	st := &subState{delay: o.Delay, hist: newHist()}
	for i, t := range demoTopics {
		st.matched[i] = topics.Match(o.Pattern, t)
	}
	if err := out.Encode(peerMsg{Type: msgReady, Name: o.Name, PID: os.Getpid()}); err != nil {
		return err
	}
	stop := progress(func() peerMsg { return st.msg(msgProgress, o.Name) }, out)
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
	sm := st.msg(msgSummary, o.Name)
	sm.Reached, sm.Latency = reached, summarise(st.hist)
	if err := out.Encode(sm); err != nil {
		return err
	}
	// Stay subscribed until the parent has read the inbox's counters and closes stdin.
	<-ctx.Done()
	return nil
}

// progress sends what snapshot returns every progressEvery until the returned stop is called;
// stop waits for the reporter to finish and may be called more than once.
func progress(snapshot func() peerMsg, out *peer.Child) (stop func()) {
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
				out.Encode(snapshot())
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

// childLogger logs to stderr, which the parent prefixes with the child's name.
func childLogger(level string) *zap.Logger {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		lvl = zapcore.WarnLevel
	}
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(os.Stderr), lvl)).
		With(zap.Int("pid", os.Getpid()))
}
