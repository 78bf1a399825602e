package bench

// One child process of offq bench. It sets up, pins its loop to its CPU, says "ready" on
// stdout, and echoes or counts until its stdin ends; a subscriber reports its counts when the
// end marker arrives. Every role allocates nothing per message.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/floor"
	"github.com/offq/offq/internal/peer"
)

// Role is the name of offq bench's children in internal/peer: the program that runs Run must
// hand Roles to peer.Dispatch before anything else.
const Role = "offq-bench"

// Roles are the children's roles, for peer.Dispatch.
var Roles = map[string]peer.Role{Role: runPeer}

// peerArg is what a child plays, handed to it by the parent.
type peerArg struct {
	Role     string `json:"role"` // offq-echo, offq-sub, offq-subs, raw-echo, lines-echo, payload-echo, ring-echo, spsc-sub, pool-sub, uds-echo, uds-sub, pipe-echo, pipe-sub, nats-echo
	CPU      int    `json:"cpu"`  // CPU to pin the loop to; -1: none
	Mode     string `json:"mode,omitempty"`
	Size     int    `json:"size,omitempty"`  // offq-subs: the number of subscriptions
	Depth    int    `json:"depth,omitempty"` // offq subscriber: queue depth
	Ring     int    `json:"ring,omitempty"`  // offq-echo: publish through a slot ring of this many slots; offq-sub: the stream's publisher has one, read it
	Batch    int    `json:"batch,omitempty"` // offq subscriber: receive in batches of this many (ReceiveBatch); pool-sub: publish the head every this many
	Dir      string `json:"dir"`
	Bus      string `json:"bus,omitempty"`  // offq
	Path     string `json:"path,omitempty"` // raw: the shared file; uds: the socket; nats: the URL
	LogLevel string `json:"log_level,omitempty"`
}

func runPeer(c *peer.Child) error {
	var o peerArg
	if err := c.Arg(&o); err != nil {
		return err
	}
	// An interrupt at the terminal reaches the whole process group; the parent decides when
	// its children stop, by closing their stdin.
	signal.Ignore(os.Interrupt)
	ctx := c.Context()
	ready := func() error { return c.Encode(benchLine{Type: benchReady}) }
	var err error
	switch o.Role {
	case "offq-echo", "offq-sub":
		err = benchOffqPeer(ctx, c, o)
	case "offq-subs":
		err = benchOffqSubs(ctx, c, o)
	case "offq-responder":
		err = benchOffqResponder(ctx, c, o)
	case "raw-echo":
		err = benchRawEcho(ctx, o, ready)
	case "spsc-sub":
		err = benchRawRingSub(ctx, c, o)
	case "pool-sub":
		err = benchRawPoolSub(ctx, c, o)
	case "lines-echo":
		err = benchLinesEcho(ctx, o, ready)
	case "payload-echo":
		err = benchPayloadEcho(ctx, o, ready)
	case "ring-echo":
		err = benchRingEcho(ctx, o, ready)
	case "nats-echo":
		err = benchNATSEcho(ctx, o, ready)
	case "uds-echo", "uds-sub", "pipe-echo", "pipe-sub":
		err = benchSocketPeer(ctx, c, o)
	default:
		err = fmt.Errorf("unknown role %q", o.Role)
	}
	if ctx.Err() != nil {
		return nil // told to finish: whatever failed, failed because of that
	}
	return err
}

func benchOffqPeer(ctx context.Context, c *peer.Child, o peerArg) error {
	b, err := bus.Open(o.Bus, bus.WithDir(o.Dir), bus.WithLogger(childLogger(o)), bus.WithName("offq bench "+o.Role))
	if err != nil {
		return err
	}
	defer b.Close()
	w := bus.WithWait(waitOf(o.Mode))
	if o.Role == "offq-sub" {
		sub, err := b.Subscribe(topicStream, streamSubOptions(o, w)...)
		if err != nil {
			return err
		}
		return onCPU(o.CPU, func() error {
			if err := c.Encode(benchLine{Type: benchReady}); err != nil {
				return err
			}
			var sc streamCounter
			if o.Batch > 0 {
				return receiveBatches(ctx, c, sub, &sc, o.Batch)
			}
			for {
				m, err := sub.Receive(ctx)
				if err != nil {
					return err
				}
				d := m.Data()
				end := sc.add(binary.LittleEndian.Uint64(d[0:]), binary.LittleEndian.Uint64(d[8:]))
				m.Release()
				if end {
					if o.Ring > 0 {
						if err := readsRing(sub); err != nil {
							return err
						}
					}
					return sc.report(ctx, c)
				}
			}
		})
	}
	sub, err := b.Subscribe(topicPing, w, bus.WithoutHistory())
	if err != nil {
		return err
	}
	var popts []bus.PublisherOption
	if o.Ring > 0 {
		popts = append(popts, bus.WithSlotRing(o.Ring, o.Size))
	}
	pub, err := b.Publisher(topicPong, popts...)
	if err != nil {
		return err
	}
	return onCPU(o.CPU, func() error {
		if err := c.Encode(benchLine{Type: benchReady}); err != nil {
			return err
		}
		for {
			m, err := sub.Receive(ctx)
			if err != nil {
				return err
			}
			seq := binary.LittleEndian.Uint64(m.Data())
			l, err := pub.Loan(o.Size)
			if err != nil {
				m.Release()
				return err
			}
			binary.LittleEndian.PutUint64(l.Bytes(), seq)
			err = pub.Send(ctx, l)
			m.Release()
			if err != nil {
				return err
			}
		}
	})
}

// streamSubOptions are a stream subscriber's options. A subscription reads a slot ring only
// if it drops its oldest message (a ring's writer waits for nobody); the pool's stream holds
// its publisher back instead (Block).
func streamSubOptions(o peerArg, w bus.SubscribeOption) []bus.SubscribeOption {
	ov := bus.Block
	if o.Ring > 0 {
		ov = bus.DropOldest
	}
	opts := []bus.SubscribeOption{w, bus.WithOverflow(ov), bus.WithoutHistory()}
	if o.Depth > 0 {
		opts = append(opts, bus.WithQueueDepth(o.Depth))
	}
	return opts
}

// readsRing fails if a ring stream's subscription did not read the publisher's slot ring (its
// messages came as copies through its queue): the row would measure another path than it
// names.
func readsRing(sub *bus.Subscription) error {
	st, err := sub.Stats()
	if err != nil {
		return err
	}
	if !st.Ring {
		return fmt.Errorf("the subscription received the stream through its queue, not the publisher's slot ring (%d messages queued in all)", st.Pushed)
	}
	return nil
}

// An echoer is the echo side of a floor's ping-pong.
type echoer interface {
	Echo(ctx context.Context) error
	Close() error
}

// floorEcho answers the pings of the floor that open maps, on o.CPU, until the parent stops
// it; ready says so to the parent first.
func floorEcho[E echoer](ctx context.Context, o peerArg, ready func() error, open func() (E, error)) error {
	pp, err := open()
	if err != nil {
		return err
	}
	defer pp.Close()
	return onCPU(o.CPU, func() error {
		if err := ready(); err != nil {
			return err
		}
		return pp.Echo(ctx)
	})
}

func benchRawEcho(ctx context.Context, o peerArg, ready func() error) error {
	w := floor.RawSpin
	if o.Mode == floor.RawFutex.String() {
		w = floor.RawFutex
	}
	return floorEcho(ctx, o, ready, func() (*floor.RawPingPong, error) { return floor.OpenRawPingPong(o.Path, w) })
}

func benchLinesEcho(ctx context.Context, o peerArg, ready func() error) error {
	pat, err := floor.ParseLinePattern(o.Mode)
	if err != nil {
		return err
	}
	return floorEcho(ctx, o, ready, func() (*floor.LinePingPong, error) { return floor.OpenLinePingPong(o.Path, pat) })
}

func benchPayloadEcho(ctx context.Context, o peerArg, ready func() error) error {
	sh, err := floor.ParsePayloadShape(o.Mode)
	if err != nil {
		return err
	}
	return floorEcho(ctx, o, ready, func() (*floor.PayloadPingPong, error) { return floor.OpenPayloadPingPong(o.Path, sh) })
}

// benchRawRingSub takes the stream's words (sequence number << 2 | phase) out of a RawRing
// and counts them.
func benchRawRingSub(ctx context.Context, c *peer.Child, o peerArg) error {
	r, err := floor.OpenRawRing(o.Path)
	if err != nil {
		return err
	}
	defer r.Close()
	return countWords(ctx, c, o, r.Receive)
}

// benchRawPoolSub reads the stream's words out of a RawPool's buffers and counts them.
func benchRawPoolSub(ctx context.Context, c *peer.Child, o peerArg) error {
	r, err := floor.OpenRawPool(o.Path, o.Batch)
	if err != nil {
		return err
	}
	defer r.Close()
	return countWords(ctx, c, o, r.Receive)
}

// countWords is a floor's subscriber: on its CPU, it says ready, then counts the words receive
// returns until the end marker, and reports.
func countWords(ctx context.Context, c *peer.Child, o peerArg, receive func(context.Context) (uint64, error)) error {
	return onCPU(o.CPU, func() error {
		if err := c.Encode(benchLine{Type: benchReady}); err != nil {
			return err
		}
		var sc streamCounter
		for {
			v, err := receive(ctx)
			if err != nil {
				return err
			}
			if sc.add(v>>2, v&3) {
				return sc.report(ctx, c)
			}
		}
	})
}

func benchSocketPeer(ctx context.Context, c *peer.Child, o peerArg) error {
	var r io.Reader
	var w io.Writer
	var closers []io.Closer
	switch o.Role {
	case "uds-echo", "uds-sub":
		conn, err := net.Dial("unix", o.Path)
		if err != nil {
			return err
		}
		r, w, closers = conn, conn, []io.Closer{conn}
	case "pipe-echo":
		in, out := c.File(0), c.File(1)
		r, w, closers = in, out, []io.Closer{in, out}
	case "pipe-sub":
		in := c.File(0)
		r, closers = in, []io.Closer{in}
	}
	closeAll := func() {
		for _, c := range closers {
			c.Close()
		}
	}
	defer closeAll()
	stop := context.AfterFunc(ctx, closeAll) // unblock a read
	defer stop()
	buf := make([]byte, o.Size)
	if o.Role == "uds-sub" || o.Role == "pipe-sub" {
		br := bufio.NewReaderSize(r, 256<<10)
		return onCPU(o.CPU, func() error {
			if err := c.Encode(benchLine{Type: benchReady}); err != nil {
				return err
			}
			var sc streamCounter
			for {
				if _, err := io.ReadFull(br, buf); err != nil {
					return err
				}
				if sc.add(binary.LittleEndian.Uint64(buf[0:]), binary.LittleEndian.Uint64(buf[8:])) {
					return sc.report(ctx, c)
				}
			}
		})
	}
	return onCPU(o.CPU, func() error {
		if err := c.Encode(benchLine{Type: benchReady}); err != nil {
			return err
		}
		for {
			if _, err := io.ReadFull(r, buf); err != nil {
				if errors.Is(err, io.EOF) {
					return nil // the parent is done
				}
				return err
			}
			if _, err := w.Write(buf); err != nil {
				return err
			}
		}
	})
}

// receiveBatches is the batched form of an offq subscriber's loop: ReceiveBatch, count,
// ReleaseBatch.
func receiveBatches(ctx context.Context, c *peer.Child, sub *bus.Subscription, sc *streamCounter, k int) error {
	buf := make([]bus.Message, k)
	for {
		ms, err := sub.ReceiveBatch(ctx, buf)
		if err != nil {
			return err
		}
		end := false
		for _, m := range ms {
			d := m.Data()
			end = sc.add(binary.LittleEndian.Uint64(d[0:]), binary.LittleEndian.Uint64(d[8:])) || end
		}
		bus.ReleaseBatch(ms)
		if end {
			return sc.report(ctx, c)
		}
	}
}

// streamCounter counts a subscriber's messages by phase.
type streamCounter struct {
	count, dropped, disorder, last uint64
	first, end                     int64
}

// add counts the message with sequence number seq in phase, and reports whether it was the
// end marker.
func (c *streamCounter) add(seq, phase uint64) bool {
	switch {
	case seq <= c.last:
		c.disorder++
	case seq > c.last+1 && c.last != 0:
		c.dropped += seq - c.last - 1
	}
	c.last = max(c.last, seq)
	switch phase {
	case phaseMeasure:
		if c.count == 0 {
			c.first = floor.Now()
		}
		c.count++
	case phaseEnd:
		c.end = floor.Now()
		return true
	}
	return false
}

// report sends the counts and waits until the parent lets the child go.
func (c *streamCounter) report(ctx context.Context, out *peer.Child) error {
	if err := out.Encode(benchLine{Type: benchCounts, Count: c.count, First: c.first, End: c.end,
		Dropped: c.dropped, Disorder: c.disorder}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// childLogger logs to stderr, which the parent keeps the end of for its error messages.
func childLogger(o peerArg) *zap.Logger {
	lvl, err := zapcore.ParseLevel(o.LogLevel)
	if err != nil {
		lvl = zapcore.WarnLevel
	}
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(os.Stderr), lvl)).
		With(zap.Int("pid", os.Getpid()))
}
