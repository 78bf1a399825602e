package main

// The hidden bench-peer subcommand: one child process of offq bench. It sets up, pins its loop
// to --cpu, says "ready" on stdout, and echoes or counts until its stdin ends; a subscriber
// reports its counts when the end marker arrives. Every role allocates nothing per message.

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

	"github.com/spf13/cobra"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/floor"
	"github.com/offq/offq/internal/shm"
)

type benchPeerOptions struct {
	role  string
	cpu   int
	mode  string
	size  int
	depth int
	path  string
}

var benchRoles = []string{"offq-echo", "offq-sub", "raw-echo", "uds-echo", "uds-sub", "pipe-echo", "pipe-sub", "nats-echo"}

func newBenchPeerCmd(a *app) *cobra.Command {
	var o benchPeerOptions
	cmd := &cobra.Command{
		Use:    "bench-peer",
		Short:  "one process of offq bench (started by it)",
		Hidden: true,
		Args:   usageArgs(cobra.NoArgs),
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			valid := false
			for _, r := range benchRoles {
				valid = valid || r == o.role
			}
			if !valid {
				return usageError(fmt.Errorf("--role %q: want one of %v", o.role, benchRoles))
			}
			if o.size < 0 || o.size > maxBenchSize || o.depth < 0 {
				return usageError(fmt.Errorf("--size %d or --depth %d out of range", o.size, o.depth))
			}
			return a.runBenchPeer(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), o)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&o.role, "role", "", "what to play")
	f.IntVar(&o.cpu, "cpu", -1, "CPU to pin the loop to (-1: none)")
	f.StringVar(&o.mode, "mode", modeSleep, "offq: spin, sleep or block; raw: spin or futex")
	f.IntVar(&o.size, "size", 64, "message size")
	f.IntVar(&o.depth, "depth", 0, "offq subscriber: queue depth")
	f.StringVar(&o.path, "path", "", "raw: the shared file; uds: the socket")
	return cmd
}

func (a *app) runBenchPeer(ctx context.Context, stdin io.Reader, stdout io.Writer, o benchPeerOptions) error {
	// An interrupt at the terminal reaches the whole process group; the parent decides when
	// its children stop, by closing their stdin.
	signal.Ignore(os.Interrupt)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		io.Copy(io.Discard, stdin)
		cancel()
	}()
	out := newLineWriter(stdout)
	ready := func() error { return out.send(benchLine{Type: benchReady}) }
	var err error
	switch o.role {
	case "offq-echo", "offq-sub":
		err = a.benchOffqPeer(ctx, o, out)
	case "raw-echo":
		err = benchRawEcho(ctx, o, ready)
	case "nats-echo":
		err = benchNATSEcho(ctx, o, ready)
	default:
		err = benchSocketPeer(ctx, o, out)
	}
	if ctx.Err() != nil {
		return nil // told to finish: whatever failed, failed because of that
	}
	return err
}

func (a *app) benchOffqPeer(ctx context.Context, o benchPeerOptions, out *lineWriter) error {
	b, err := bus.Open(a.busName, bus.WithDir(a.dir), bus.WithLogger(a.log), bus.WithName("offq bench "+o.role))
	if err != nil {
		return err
	}
	defer b.Close()
	w := bus.WithWait(waitOf(o.mode))
	if o.role == "offq-sub" {
		opts := []bus.SubscribeOption{w, bus.WithOverflow(bus.Block), bus.WithoutHistory()}
		if o.depth > 0 {
			opts = append(opts, bus.WithQueueDepth(o.depth))
		}
		sub, err := b.Subscribe(topicStream, opts...)
		if err != nil {
			return err
		}
		return onCPU(o.cpu, func() error {
			if err := out.send(benchLine{Type: benchReady}); err != nil {
				return err
			}
			var sc streamCounter
			for {
				m, err := sub.Receive(ctx)
				if err != nil {
					return err
				}
				d := m.Data()
				end := sc.add(binary.LittleEndian.Uint64(d[0:]), binary.LittleEndian.Uint64(d[8:]))
				m.Release()
				if end {
					return sc.report(ctx, out)
				}
			}
		})
	}
	sub, err := b.Subscribe(topicPing, w, bus.WithoutHistory())
	if err != nil {
		return err
	}
	pub, err := b.Publisher(topicPong)
	if err != nil {
		return err
	}
	return onCPU(o.cpu, func() error {
		if err := out.send(benchLine{Type: benchReady}); err != nil {
			return err
		}
		for {
			m, err := sub.Receive(ctx)
			if err != nil {
				return err
			}
			seq := binary.LittleEndian.Uint64(m.Data())
			l, err := pub.Loan(o.size)
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

func benchRawEcho(ctx context.Context, o benchPeerOptions, ready func() error) error {
	w := floor.RawSpin
	if o.mode == floor.RawFutex.String() {
		w = floor.RawFutex
	}
	pp, err := floor.OpenRawPingPong(o.path, w)
	if err != nil {
		return err
	}
	defer pp.Close()
	return onCPU(o.cpu, func() error {
		if err := ready(); err != nil {
			return err
		}
		return pp.Echo(ctx)
	})
}

func benchSocketPeer(ctx context.Context, o benchPeerOptions, out *lineWriter) error {
	var r io.Reader
	var w io.Writer
	var closers []io.Closer
	switch o.role {
	case "uds-echo", "uds-sub":
		conn, err := net.Dial("unix", o.path)
		if err != nil {
			return err
		}
		r, w, closers = conn, conn, []io.Closer{conn}
	case "pipe-echo":
		in, out := os.NewFile(3, "in"), os.NewFile(4, "out")
		r, w, closers = in, out, []io.Closer{in, out}
	case "pipe-sub":
		in := os.NewFile(3, "in")
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
	buf := make([]byte, o.size)
	if o.role == "uds-sub" || o.role == "pipe-sub" {
		br := bufio.NewReaderSize(r, 256<<10)
		return onCPU(o.cpu, func() error {
			if err := out.send(benchLine{Type: benchReady}); err != nil {
				return err
			}
			var sc streamCounter
			for {
				if _, err := io.ReadFull(br, buf); err != nil {
					return err
				}
				if sc.add(binary.LittleEndian.Uint64(buf[0:]), binary.LittleEndian.Uint64(buf[8:])) {
					return sc.report(ctx, out)
				}
			}
		})
	}
	return onCPU(o.cpu, func() error {
		if err := out.send(benchLine{Type: benchReady}); err != nil {
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
			c.first = shm.Now()
		}
		c.count++
	case phaseEnd:
		c.end = shm.Now()
		return true
	}
	return false
}

// report sends the counts and waits until the parent lets the child go.
func (c *streamCounter) report(ctx context.Context, out *lineWriter) error {
	if err := out.send(benchLine{Type: benchCounts, Count: c.count, First: c.first, End: c.end,
		Dropped: c.dropped, Disorder: c.disorder}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
