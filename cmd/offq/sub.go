package main

// offq sub: print the messages published on the topics a pattern matches.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/codec"
	"github.com/offq/offq/topics"
)

type subOptions struct {
	count      int
	timeout    time.Duration
	raw        bool
	json       bool
	queueDepth int
	overflow   string
	wait       string
	noHistory  bool
	quiet      bool
	attach     attachFlags
}

var (
	overflowNames = map[string]bus.Overflow{"drop-oldest": bus.DropOldest, "drop-newest": bus.DropNewest, "block": bus.Block}
	waitNames     = map[string]bus.WaitStrategy{"spin-then-sleep": bus.SpinThenSleep, "spin": bus.BusySpin, "sleep": bus.Sleep}
)

func newSubCmd(a *app) *cobra.Command {
	var o subOptions
	cmd := &cobra.Command{
		Use:   "sub PATTERN",
		Short: "print the messages published on the topics a pattern matches",
		Long: `sub subscribes to PATTERN on the bus --bus and prints each message it receives, until
interrupted (SIGINT or SIGTERM: it detaches cleanly and exits with status 0), until --count
messages, or until --timeout. PATTERN is a topic name, or a pattern where '*' matches one token
and '>' the remaining tokens: sensors.*.temp, sensors.>.

Output, one line per message:

  (default)     TOPIC #SEQ: PAYLOAD   the payload as text if it is printable UTF-8,
                                      otherwise hex (the first 64 bytes) and its size
  --raw         the payload's bytes as they are, then a newline
  --json        {"topic":..., "seq":..., "time":..., "data":...}: the payload decoded from
                MessagePack into JSON, for topics that record the msgpack codec (typed msgpack
                publishers, offq pub --json); for other topics, or a malformed message,
                "error" says what the topic carries and "bytes" has the payload in base64
  --json --raw  the decoded JSON alone

The subscription sees messages published after it starts, and first the history of topics
that keep one (unless --no-history). It says on stderr when it is subscribed, and at the end
how many messages it received and how many its queue dropped meanwhile because it did not keep
up (the queue's --overflow policy; not with --quiet).
The bus must exist (offq create) unless --create is given. Exit status 0 on interrupt or after
--count messages, 1 on an error or when --timeout passes before --count messages arrived, 2 for
a bad flag.`,
		Example: `  offq sub 'sensors.>'
  offq sub sensors.temp --count 10 --raw
  offq sub 'jobs.*' --json --queue-depth 64 --overflow block
  offq sub logs.app --timeout 30s > app.log`,
		Args: oneArg("PATTERN"),
		RunE: runtimeErrors(func(cmd *cobra.Command, args []string) error {
			if err := topics.ValidatePattern(args[0]); err != nil {
				return usageError(err)
			}
			opts, err := o.subscribeOptions()
			if err != nil {
				return usageError(err)
			}
			return a.runSub(cmd, args[0], o, opts)
		}),
	}
	f := cmd.Flags()
	f.IntVarP(&o.count, "count", "n", 0, "exit after this many messages (0: no limit)")
	f.DurationVar(&o.timeout, "timeout", 0, "exit after this long (0: no limit); with --count, an error if fewer arrived")
	f.BoolVar(&o.raw, "raw", false, "print payloads only, as they are, each followed by a newline")
	f.BoolVar(&o.json, "json", false, "decode payloads from MessagePack and print them as JSON")
	f.IntVar(&o.queueDepth, "queue-depth", 0, "the subscription's queue, a power of two (default: the bus's inbox capacity)")
	f.StringVar(&o.overflow, "overflow", "drop-oldest", "when the queue is full: drop-oldest, drop-newest or block (the publisher waits)")
	f.StringVar(&o.wait, "wait", "spin-then-sleep", "how to wait for messages: spin-then-sleep, spin (a core while waiting) or sleep")
	f.BoolVar(&o.noHistory, "no-history", false, "skip the messages topics keep for late subscribers")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print nothing on stderr but errors")
	o.attach.register(f)
	return cmd
}

func (o *subOptions) subscribeOptions() ([]bus.SubscribeOption, error) {
	if o.count < 0 {
		return nil, fmt.Errorf("--count %d: want 0 or more", o.count)
	}
	if o.timeout < 0 {
		return nil, fmt.Errorf("--timeout %v: want 0 or more", o.timeout)
	}
	pol, ok := overflowNames[o.overflow]
	if !ok {
		return nil, fmt.Errorf("--overflow %q: want drop-oldest, drop-newest or block", o.overflow)
	}
	w, ok := waitNames[o.wait]
	if !ok {
		return nil, fmt.Errorf("--wait %q: want spin-then-sleep, spin or sleep", o.wait)
	}
	if o.queueDepth != 0 && (o.queueDepth < 2 || o.queueDepth&(o.queueDepth-1) != 0) {
		return nil, fmt.Errorf("--queue-depth %d: want a power of two, 2 or more (0: the bus's inbox capacity)", o.queueDepth)
	}
	opts := []bus.SubscribeOption{bus.WithOverflow(pol), bus.WithWait(w)}
	if o.queueDepth != 0 {
		opts = append(opts, bus.WithQueueDepth(o.queueDepth))
	}
	if o.noHistory {
		opts = append(opts, bus.WithoutHistory())
	}
	return opts, nil
}

func (a *app) runSub(cmd *cobra.Command, pattern string, o subOptions, opts []bus.SubscribeOption) (err error) {
	// A reader that goes away (offq sub | head) makes writes fail with EPIPE instead of
	// killing the process with SIGPIPE, so that it detaches from the bus on the way out.
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	defer signal.Stop(pipe)

	b, err := a.openBus(&o.attach, "offq sub")
	if err != nil {
		return fmt.Errorf("sub: %w", err)
	}
	defer func() { err = errors.Join(err, b.Close()) }()
	if c := b.Config().InboxCapacity; o.queueDepth > int(c) {
		return usageError(fmt.Errorf("--queue-depth %d: the queues of bus %s hold at most %d messages (its inbox capacity)", o.queueDepth, a.busName, c))
	}
	s, err := b.Subscribe(pattern, opts...)
	if errors.Is(err, bus.ErrInvalidOption) {
		return usageError(fmt.Errorf("sub: %w", err))
	}
	if err != nil {
		return fmt.Errorf("sub: %w", err)
	}
	if !o.quiet {
		fmt.Fprintf(a.stderr, "offq sub: subscribed to %s on bus %s\n", pattern, a.busName)
	}
	ctx := cmd.Context()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	out := bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10)
	pr := &printer{w: out, errw: a.stderr, raw: o.raw, json: o.json}
	n := 0
	for o.count == 0 || n < o.count {
		m, err := s.Receive(ctx)
		if err != nil {
			if ctx.Err() == nil {
				return fmt.Errorf("sub: %w", err)
			}
			break
		}
		// The payload is read under the fault guard: a region cut under the message is an
		// error here, not a SIGBUS in the printer.
		perr := m.Read(func(data []byte) error { return pr.print(m, data) })
		m.Release()
		if errors.Is(perr, bus.ErrCorrupt) {
			return fmt.Errorf("sub: %w", perr)
		}
		n++
		if perr == nil && (s.Len() == 0 || out.Buffered() > 32<<10) {
			perr = out.Flush()
		}
		if perr != nil {
			return fmt.Errorf("sub: write: %w", perr)
		}
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("sub: write: %w", err)
	}
	if !o.quiet {
		fmt.Fprintf(a.stderr, "offq sub: received %d message%s%s\n", n, plural(n), subDrops(s))
	}
	if o.count > 0 && n < o.count && cmd.Context().Err() == nil {
		return fmt.Errorf("sub: %d of %d messages within --timeout %v", n, o.count, o.timeout)
	}
	return nil
}

// subDrops returns, for sub's summary, what its queue dropped while it ran ("; its queue
// dropped 6 messages (drop-oldest): ..."), or "" if nothing. A sub that cannot keep up (a slow
// terminal, a slow pipe) loses messages by its queue's policy; "received 10 messages" alone
// would read as everything published.
func subDrops(s *bus.Subscription) string {
	st, err := s.Stats()
	if err != nil {
		return ""
	}
	kinds := []struct {
		n    uint64
		what string
	}{
		{st.DropOldest, "drop-oldest"},
		{st.DropNewest, "drop-newest"},
		{st.DropTimeout, "block timeout"},
	}
	var total uint64
	var why []string // a queue has one policy, so in practice one kind
	for _, k := range kinds {
		if k.n > 0 {
			total += k.n
			why = append(why, k.what)
		}
	}
	if total == 0 {
		return ""
	}
	hint := "--queue-depth for a deeper queue, --overflow block to hold publishers back instead"
	if st.DropOldest+st.DropNewest == 0 {
		// Only publishers that gave up waiting for room in a blocking queue (their context
		// ended): the queue holds them back already.
		hint = "--queue-depth for a deeper queue (publishers gave up waiting for room)"
	}
	return fmt.Sprintf("; its queue dropped %d message%s (%s): %s", total, plural(int(min(total, 2))), strings.Join(why, ", "), hint)
}

// printer writes messages in the format the flags chose.
type printer struct {
	w    io.Writer
	errw io.Writer // where --json --raw reports a payload that is not msgpack
	raw  bool
	json bool
	line []byte
}

func (p *printer) print(m bus.Message, data []byte) error {
	switch {
	case p.json:
		return p.printJSON(m, data)
	case p.raw:
		p.line = append(append(p.line[:0], data...), '\n')
	default:
		p.line = fmt.Appendf(p.line[:0], "%s #%d: ", m.Topic(), m.Seq())
		p.line = appendPayload(p.line, data)
		p.line = append(p.line, '\n')
	}
	_, err := p.w.Write(p.line)
	return err
}

// subJSON is one line of sub --json.
type subJSON struct {
	Topic string          `json:"topic"`
	Seq   uint64          `json:"seq"`
	Time  time.Time       `json:"time"`
	Data  json.RawMessage `json:"data,omitempty"`
	Error string          `json:"error,omitempty"`
	Bytes string          `json:"bytes,omitempty"` // the payload in base64, when it is not msgpack
}

func (p *printer) printJSON(m bus.Message, data []byte) error {
	buf := &sliceBuffer{b: p.line[:0]}
	var derr error
	// Only a topic that records msgpack carries it: the bytes of an untyped or struct topic
	// often parse as msgpack too ("5" is the positive fixint 53), and would print as nonsense.
	switch c, _ := m.Codec(); c {
	case "msgpack":
		derr = codec.MsgpackToJSON(buf, data)
	case "":
		derr = errors.New("the topic records no codec (untyped bytes), not msgpack")
	default:
		derr = fmt.Errorf("the topic carries codec %q, not msgpack", c)
	}
	if p.raw {
		if derr != nil {
			fmt.Fprintf(p.errw, "offq sub: %s #%d: not MessagePack (%d B): %v\n", m.Topic(), m.Seq(), len(data), derr)
			return nil
		}
		p.line = append(buf.b, '\n')
		_, err := p.w.Write(p.line)
		return err
	}
	line := subJSON{Topic: m.Topic(), Seq: m.Seq(), Time: m.Time().UTC()}
	if derr != nil {
		line.Error, line.Bytes = derr.Error(), base64.StdEncoding.EncodeToString(data)
	} else {
		line.Data = json.RawMessage(buf.b)
	}
	b, err := json.Marshal(line)
	if err != nil {
		return err
	}
	p.line = append(b, '\n')
	_, err = p.w.Write(p.line)
	return err
}

// sliceBuffer is an io.Writer appending to a slice it owns.
type sliceBuffer struct{ b []byte }

func (s *sliceBuffer) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

// appendPayload appends data as text if it is printable UTF-8, otherwise as hex.
func appendPayload(dst, data []byte) []byte {
	if printable(data) {
		return append(dst, data...)
	}
	const show = 64
	dst = append(dst, "0x"...)
	dst = hex.AppendEncode(dst, data[:min(len(data), show)])
	if len(data) > show {
		dst = append(dst, "..."...)
	}
	return fmt.Appendf(dst, " (%d B)", len(data))
}

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && r != '\t' {
			return false
		}
	}
	return true
}
