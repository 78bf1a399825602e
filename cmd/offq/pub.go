package main

// offq pub: publish messages on a topic from a flag, a file, standard input, or generated
// payloads of a given size. The sources and --json's encoding are in internal/pubsrc.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/codec"
	"github.com/offq/offq/internal/pubsrc"
	"github.com/offq/offq/internal/statview"
	"github.com/offq/offq/topics"
	"github.com/offq/offq/transport"
)

type pubOptions struct {
	data     string
	file     string
	size     int
	count    int
	rate     float64
	json     bool
	history  int
	waitSubs int
	timeout  time.Duration
	quiet    bool
	attach   attachFlags
}

func newPubCmd(a *app) *cobra.Command {
	var o pubOptions
	cmd := &cobra.Command{
		Use:   "pub TOPIC",
		Short: "publish messages on a topic from a flag, a file or standard input",
		Long: `pub publishes on TOPIC (a name like sensors.line1.temp, no wildcards) of the bus --bus.
The messages come from one of:

  --data TEXT    TEXT, --count times (default once)
  --size N       generated payloads of N bytes ("message 1 ...", padded), --count times
  --file PATH    each line of PATH, without its newline (--count: at most that many)
  (none)         each line of standard input, until end of input or interrupt

--json reads each message as JSON and publishes it encoded as MessagePack, as a typed msgpack
publisher: the topic records the msgpack codec (for typed subscribers and offq sub --json), and
a topic of another codec refuses it. Blank lines of input are skipped; an integer that does not
fit in 64 bits or a number beyond a float64's range is an error. --rate paces the messages (per second; default as fast
as the subscribers' queues allow). Subscribers receive only what is published after they
subscribe, unless the topic keeps a history (--history, when the topic is first used).
--wait-subs makes pub wait until that many subscriptions match TOPIC before publishing.

The bus must exist (offq create) unless --create is given. pub prints a summary on stderr
(not with --quiet): what it published, to how many subscribers, and how many messages their
queues dropped meanwhile by their overflow policy (a subscriber that does not keep up loses
the oldest or the newest; offq stat shows which queue). Published is not received: exit
status 0 when everything was published (or on interrupt), 1 on an
error (a missing bus, no subscribers within --timeout, a message larger than the largest
buffer), 2 for a bad flag, or one the bus cannot honour (--size larger than its largest
buffer, --history deeper than its history depth, or --history other than the depth of a topic
that exists: a topic's history depth is fixed when it is first used).`,
		Example: `  offq pub sensors.temp --data 21.5
  offq pub sensors.temp --size 256 --count 100000 --rate 10000
  offq pub sensors.temp --json --data '{"celsius": 21.5, "ok": true}'
  tail -f events.log | offq pub logs.app
  offq pub jobs.new --file jobs.txt --wait-subs 1`,
		Args: oneArg("TOPIC"),
		RunE: runtimeErrors(func(cmd *cobra.Command, args []string) error {
			if err := o.validate(cmd); err != nil {
				return usageError(err)
			}
			if err := topics.ValidateName(args[0]); err != nil {
				return usageError(err)
			}
			return a.runPub(cmd, args[0], o)
		}),
	}
	f := cmd.Flags()
	f.StringVarP(&o.data, "data", "d", "", "message payload")
	f.StringVarP(&o.file, "file", "f", "", `publish each line of this file ("-": standard input)`)
	f.Var(sizeFlag{&o.size}, "size", "publish generated payloads of this many bytes (units KiB, MiB, GiB)")
	f.IntVarP(&o.count, "count", "n", 0, "messages to publish (default: 1 with --data or --size; every line otherwise)")
	f.Float64Var(&o.rate, "rate", 0, "messages per second (0: as fast as possible)")
	f.BoolVar(&o.json, "json", false, "read each message as JSON and publish it encoded as MessagePack")
	f.IntVar(&o.history, "history", 0, "keep the topic's last N messages for late subscribers (set when the topic is first used; an existing topic of another depth is an error)")
	f.IntVar(&o.waitSubs, "wait-subs", 0, "wait until N subscriptions match TOPIC before publishing")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for --wait-subs, or for a free buffer when the pool is exhausted")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print no summary")
	o.attach.register(f)
	return cmd
}

func (o *pubOptions) validate(cmd *cobra.Command) error {
	changed := cmd.Flags().Changed
	sources := 0
	for _, n := range []string{"data", "file", "size"} {
		if changed(n) {
			sources++
		}
	}
	switch {
	case sources > 1:
		return errors.New("--data, --file and --size are alternatives: give one")
	case changed("size") && (o.size < 1 || o.size > 1<<30):
		return fmt.Errorf("--size %d: want 1 byte to 1 GiB", o.size)
	case changed("size") && o.json:
		return errors.New("--size generates payloads that are not JSON; drop --json")
	case o.count < 0:
		return fmt.Errorf("--count %d: want 0 or more", o.count)
	case !(o.rate == 0 || o.rate >= pubMinRate && o.rate <= 1e9): // NaN fails every comparison
		return fmt.Errorf("--rate %g: want 0 (no limit), or %g to 1e9 messages a second", o.rate, pubMinRate)
	case o.history < 0:
		return fmt.Errorf("--history %d: want 0 or more", o.history)
	case o.waitSubs < 0:
		return fmt.Errorf("--wait-subs %d: want 0 or more", o.waitSubs)
	case o.timeout <= 0:
		return fmt.Errorf("--timeout %v: want more than 0", o.timeout)
	}
	if (changed("data") || changed("size")) && o.count == 0 {
		o.count = 1
	}
	return nil
}

func (a *app) runPub(cmd *cobra.Command, topic string, o pubOptions) (err error) {
	ctx := cmd.Context()
	b, err := a.openBus(&o.attach, "offq pub")
	if err != nil {
		return fmt.Errorf("pub: %w", err)
	}
	defer func() { err = errors.Join(err, b.Close()) }()
	cfg := b.Config()
	largest := b.MaxMessageSize()
	// Flags the bus cannot honour are refused before anything is built or published.
	if o.size > largest {
		return usageError(fmt.Errorf("--size %d: larger than the largest buffer of bus %s (%s)", o.size, a.busName, statview.Bytes(int64(largest))))
	}
	if o.history > int(cfg.HistoryDepth) {
		return usageError(fmt.Errorf("--history %d: bus %s keeps at most %d messages a topic (its history depth)", o.history, a.busName, cfg.HistoryDepth))
	}
	var popts []bus.PublisherOption
	if o.history > 0 {
		popts = append(popts, bus.WithHistory(o.history))
	}
	p, err := b.Publisher(topic, popts...)
	if err != nil {
		return fmt.Errorf("pub: %w", err)
	}
	// A topic's history depth is fixed by its first publisher: an operator who asks for
	// another one expects late subscribers to get what they will not, so nothing is published.
	if cmd.Flags().Changed("history") && p.HistoryDepth() != o.history {
		return usageError(fmt.Errorf("--history %d: topic %s exists and keeps %d message%s (its depth is fixed when first used); drop --history or give --history %d",
			o.history, topic, p.HistoryDepth(), plural(p.HistoryDepth()), p.HistoryDepth()))
	}
	if o.json {
		// A typed msgpack publisher, as far as the topic knows: it records msgpack, so that
		// sub --json and typed subscribers know what the topic carries, and a topic of
		// another codec (a struct, raw bytes) refuses it.
		fp, _ := codec.NewMsgpack[any]().Fingerprint()
		if err := p.ClaimCodec("msgpack", fp, ""); err != nil {
			return fmt.Errorf("pub: --json: %w", err)
		}
	}
	if o.waitSubs > 0 {
		if err := waitSubscribers(ctx, b, topic, o.waitSubs, o.timeout); err != nil {
			return fmt.Errorf("pub: %w", err)
		}
	}
	next, closeSrc, err := pubSource(cmd, o, largest)
	if err != nil {
		return fmt.Errorf("pub: %w", err)
	}
	defer closeSrc()
	lines := !cmd.Flags().Changed("data") && !cmd.Flags().Changed("size") // messages are lines of input
	var enc *pubsrc.JSON
	if o.json {
		enc = pubsrc.NewJSON(largest)
	}
	var pools poolWatch
	defer pools.close()
	// The subscribers' drops while we publish, for the summary: a slow subscriber loses
	// messages by its queue's policy, and "published N to 1 subscriber" alone would read as
	// delivered.
	var drops dropWatch
	if !o.quiet {
		drops.start(a, &pools, topic)
	}
	var sent, bytesSent int
	start := time.Now()
	for o.count == 0 || sent < o.count {
		msg, err := next(ctx, sent)
		if errors.Is(err, io.EOF) || ctx.Err() != nil {
			break
		}
		if err != nil {
			return fmt.Errorf("pub: %w", err)
		}
		if enc != nil {
			if lines && len(bytes.TrimSpace(msg)) == 0 {
				continue // a blank line between JSON messages
			}
			if msg, err = enc.Encode(msg); err != nil {
				return fmt.Errorf("pub: message %d: %w", sent+1, err)
			}
		}
		if o.rate > 0 {
			at := min(float64(sent)/o.rate*float64(time.Second), float64(math.MaxInt64/2)) // no overflow into the past
			if d := time.Until(start.Add(time.Duration(at))); d > 0 && sleepCtx(ctx, d) != nil {
				break
			}
		}
		if err := a.publishRetry(ctx, p, msg, o.timeout, &pools); err != nil {
			if ctx.Err() != nil {
				break
			}
			return fmt.Errorf("pub: message %d: %w", sent+1, err)
		}
		sent++
		bytesSent += len(msg)
	}
	if !o.quiet {
		subs := p.FanOut()
		fmt.Fprintf(a.stderr, "offq pub: published %d message%s (%s) on %s to %d subscriber%s%s\n",
			sent, plural(sent), statview.Bytes(int64(bytesSent)), topic, subs, plural(subs), drops.summary(a))
	}
	return nil
}

// pubMinRate is the slowest --rate: one message every 1000 s.
const pubMinRate = 1e-3

// sizeFlag is a flag holding a byte count, given as a number with an optional unit (KiB,
// MiB, GiB), as in --classes.
type sizeFlag struct{ n *int }

func (s sizeFlag) String() string {
	if s.n == nil {
		return "0"
	}
	return strconv.Itoa(*s.n)
}

func (s sizeFlag) Set(v string) error {
	sz, err := transport.ParseSize(v)
	if err != nil {
		return errors.New("want a number of bytes, optionally with KiB, MiB or GiB")
	}
	*s.n = int(sz)
	return nil
}

func (sizeFlag) Type() string { return "size" }

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// pubSource returns the function that yields message i, and what to close at the end.
func pubSource(cmd *cobra.Command, o pubOptions, largest int) (next pubsrc.Next, closeSrc func(), err error) {
	switch {
	case cmd.Flags().Changed("data"):
		return pubsrc.Fixed([]byte(o.data)), func() {}, nil
	case cmd.Flags().Changed("size"):
		return pubsrc.Generated(o.size), func() {}, nil
	}
	return pubsrc.Lines(o.file, cmd.InOrStdin(), largest)
}

// publishRetry publishes msg, waiting while the pool is exhausted (every buffer is queued for
// some subscriber) for at most timeout. It waits by reading the pools' counters, not by
// trying to loan again: each failed try counts in offq_pool_alloc_failures_total, and one
// message that waits should count once, not hundreds of times. It tries again when a buffer
// that fits is free (another publisher may take it first: that try counts too).
func (a *app) publishRetry(ctx context.Context, p *bus.Publisher, msg []byte, timeout time.Duration, pools *poolWatch) error {
	err := p.Publish(ctx, msg)
	if !errors.Is(err, bus.ErrPoolExhausted) {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		for pause := 50 * time.Microsecond; ; pause = min(2*pause, 10*time.Millisecond) {
			free, ferr := pools.free(a, len(msg))
			if ferr != nil {
				return ferr
			}
			if free {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%w for %v: subscribers hold every buffer", err, timeout)
			}
			if err := sleepCtx(ctx, pause); err != nil {
				return err
			}
		}
		if err = p.Publish(ctx, msg); !errors.Is(err, bus.ErrPoolExhausted) {
			return err
		}
	}
}

// poolWatch reads a bus's pool counters through a read-only mapping of its own, opened at
// the first exhaustion.
type poolWatch struct {
	r *transport.Region
}

// region returns the read-only mapping, opened at the first call.
func (w *poolWatch) region(a *app) (*transport.Region, error) {
	if w.r == nil {
		r, err := a.openReadOnly(a.busName)
		if err != nil {
			return nil, err
		}
		w.r = r
	}
	return w.r, nil
}

// free reports whether some size class that fits n bytes has a free buffer.
func (w *poolWatch) free(a *app, n int) (bool, error) {
	r, err := w.region(a)
	if err != nil {
		return false, err
	}
	st, err := r.Stats()
	if err != nil {
		return false, err
	}
	for _, c := range st.Pools {
		if n <= c.Size && c.InUse < int64(c.Capacity) {
			return true, nil
		}
	}
	return false, nil
}

func (w *poolWatch) close() {
	if w.r != nil {
		w.r.Close()
	}
}

// dropWatch counts what the queues of the subscriptions that match a topic dropped (by
// their overflow policy: the oldest, the newest, or on a Block timeout) between start and
// summary, from the inboxes' counters in the region. The counters are per queue, not per
// topic: a queue whose pattern also matches other topics counts their drops too, hence
// "meanwhile" in the summary.
type dropWatch struct {
	r      *transport.Region
	topic  string
	before map[transport.InboxID]transport.InboxStats
}

func (w *dropWatch) start(a *app, pools *poolWatch, topic string) {
	r, err := pools.region(a)
	if err != nil {
		return // the summary goes without the drops; publishing does not need them
	}
	w.r, w.topic = r, topic
	w.before = w.matching()
}

// matching returns the inboxes of subscriptions whose pattern matches the topic.
func (w *dropWatch) matching() map[transport.InboxID]transport.InboxStats {
	st, err := w.r.Stats()
	if err != nil {
		return nil
	}
	m := make(map[transport.InboxID]transport.InboxStats)
	for _, in := range st.Inboxes {
		if !in.Reply && topics.Match(in.Pattern, w.topic) {
			m[in.ID] = in
		}
	}
	return m
}

func inboxDrops(in transport.InboxStats) uint64 {
	return in.DropOldest + in.DropNewest + in.DropTimeout
}

// summary returns "; its queue (or N queues) dropped M messages meanwhile ..." for the summary line,
// or "" if none were dropped or the counters could not be read.
func (w *dropWatch) summary(a *app) string {
	if w.r == nil || w.before == nil {
		return ""
	}
	var n uint64
	queues := 0
	for id, in := range w.matching() {
		d := inboxDrops(in)
		if b, ok := w.before[id]; ok && b.Pattern == in.Pattern && b.Owner == in.Owner && inboxDrops(b) <= d {
			d -= inboxDrops(b) // the same subscription: only what it dropped since
		}
		if d > 0 {
			n += d
			queues++
		}
	}
	if n == 0 {
		return ""
	}
	whose := "its queue"
	if queues > 1 {
		whose = fmt.Sprintf("%d queues", queues)
	}
	return fmt.Sprintf("; %s dropped %d message%s meanwhile, by overflow policy (%s)",
		whose, n, plural(int(min(n, 2))), a.commandLine("stat", "--bus", a.busName))
}

// waitSubscribers waits until n subscriptions on b match topic.
func waitSubscribers(ctx context.Context, b *bus.Bus, topic string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for pause := 100 * time.Microsecond; ; pause = min(2*pause, 20*time.Millisecond) {
		got, err := b.Subscribers(topic)
		if err != nil {
			return err
		}
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d subscribers to %s after %v (--wait-subs)", got, n, topic, timeout)
		}
		if err := sleepCtx(ctx, pause); err != nil {
			return err
		}
	}
}
