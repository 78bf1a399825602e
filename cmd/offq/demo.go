package main

// offq demo: a publisher and several subscribers as separate processes on a bus of their own.
// The parent creates the bus, re-executes this program as each child (the hidden demo-peer
// subcommand), relays the end of the stream, reads the inboxes' drop counters from shared
// memory, checks that no buffer is left in use, and removes the bus. The report is in
// demo_report.go, the children in demo_peer.go, what they say to each other in demo_wire.go.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/shm"
)

// envDemoPeer is set in the environment of the demo's children. The offq program does not
// need it (its arguments say what to run); a test binary that the demo re-executes does, to
// run the command line instead of the tests (see TestMain).
const envDemoPeer = "OFFQ_DEMO_PEER"

// Patterns of the fast subscribers, in turn; the slow one takes everything.
var (
	fastPatterns = [...]string{"demo.temp", "demo.>", "demo.pressure", "demo.*"}
)

const (
	slowPattern = "demo.>"
	slowDepth   = 8
	slowDelay   = time.Millisecond
	fastDepth   = 8192
)

type demoOptions struct {
	duration    time.Duration
	rate        int
	size        int
	subscribers int
}

func (o demoOptions) validate() error {
	switch {
	case o.duration <= 0 || o.duration > time.Hour:
		return fmt.Errorf("--duration %v: want more than 0 and at most 1h", o.duration)
	case o.rate < 1 || o.rate > 10_000_000:
		return fmt.Errorf("--rate %d: want 1 to 10000000 messages a second", o.rate)
	case o.size < minPayload || o.size > maxPayload:
		return fmt.Errorf("--size %d: want %d to %d bytes", o.size, minPayload, maxPayload)
	case o.subscribers < 1 || o.subscribers > 16:
		return fmt.Errorf("--subscribers %d: want 1 to 16", o.subscribers)
	}
	return nil
}

func newDemoCmd(a *app) *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "run a publisher and subscribers as separate processes and verify every message",
		Long: `demo creates a bus of its own (offq-demo-<pid>, or --bus if given) in --dir, and starts,
as separate processes, one publisher and --subscribers fast subscribers plus one slow one:

  sub-1  demo.temp       sub-2  demo.>     sub-3  demo.pressure    sub-4  demo.*   ...
  slow   demo.>          queue of 8, drop oldest, 1 ms per message

The publisher writes --rate messages a second (both topics together) for --duration, each of
--size bytes holding its topic, its sequence number, a fill derived from them and a CRC-32C,
in place in shared memory (Loan, write, Send). Every subscriber verifies each message's
checksum and sequence order and measures its latency. The demo prints the rates every
second, then a table of what each subscriber received, lost and how fast, and passes if
every fast subscriber received every message of its topics intact and in order, and the
slow one lost only messages its queue counted as dropped. Finally it checks that no buffer
is left in use and removes the bus. --dir defaults to /dev/shm, or to the temporary
directory where there is no /dev/shm.

A fast subscriber that falls further behind than its queue (8192 messages) loses messages
too: ask for more than the machine's cores can verify and the demo fails, saying so.
Exit status 1 if the verification fails.`,
		Example: "  offq demo\n  offq demo --duration 10s --size 4096 --subscribers 4",
		Args:    usageArgs(cobra.NoArgs),
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return usageError(err)
			}
			return a.runDemo(cmd, o)
		}),
	}
	f := cmd.Flags()
	f.DurationVar(&o.duration, "duration", 5*time.Second, "how long to publish")
	f.IntVar(&o.rate, "rate", 100_000, "messages a second, both topics together")
	f.IntVar(&o.size, "size", 256, "payload bytes")
	f.IntVar(&o.subscribers, "subscribers", 3, "fast subscribers (a slow one is added)")
	return cmd
}

// demoConfig sizes the demo's region: one size class for the payload, enough buffers to
// fill a fast subscriber's queue (within 64 MiB), queues deep enough to ride out a
// subscriber being descheduled for tens of milliseconds.
func demoConfig(o demoOptions) shm.Config {
	slot := (o.size + 63) &^ 63
	count := min(fastDepth+2048, max(64, (64<<20)/slot))
	return shm.Config{
		Classes:       []shm.Class{{Size: shm.Size(slot), Count: uint32(count)}},
		Inboxes:       uint32(o.subscribers + 2),
		InboxCapacity: fastDepth,
		Topics:        8,
		Participants:  uint32(o.subscribers + 4),
		HistoryDepth:  0,
		Held:          64,
	}
}

// child is one child process, as the parent sees it. Only the parent's event loop touches it
// after start.
type child struct {
	name    string
	pattern string // subscribers
	slow    bool
	depth   int

	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *prefixWriter

	pid        int
	ready      bool
	progress   peerMsg   // latest progress line
	progressAt time.Time // when it arrived
	prevCount  uint64    // messages counted at the previous live line,
	prevAt     time.Time // by the report that arrived then,
	lastRate   float64   // and the rate it showed
	done       *peerMsg
	summary    *peerMsg
	exited     bool
	exitErr    error
}

func (c *child) count() uint64 {
	if c.pattern == "" {
		return c.progress.Sent
	}
	return c.progress.Received
}

// finished reports whether the child said its last word.
func (c *child) finished() bool {
	if c.pattern == "" {
		return c.done != nil
	}
	return c.summary != nil
}

// event is what a child's reader goroutine reports: a line, or the child's exit.
type event struct {
	c      *child
	msg    peerMsg
	exited bool
	err    error
}

// demo is one run of offq demo.
type demo struct {
	a      *app
	o      demoOptions
	out    io.Writer
	log    *zap.Logger
	dir    string
	name   string
	exe    string
	b      *bus.Bus
	events chan event

	pub      *child
	subs     []*child
	all      []*child
	stopping bool // exits are expected from now on
	start    time.Time
}

func (a *app) runDemo(cmd *cobra.Command, o demoOptions) (err error) {
	ctx := cmd.Context()
	d := &demo{a: a, o: o, out: cmd.OutOrStdout(), log: a.log, dir: a.dir, name: a.busName,
		events: make(chan event, 256)}
	if !cmd.Flags().Changed("dir") {
		if _, err := os.Stat(d.dir); err != nil {
			d.dir = os.TempDir()
		}
	}
	if !cmd.Flags().Changed("bus") {
		d.name = fmt.Sprintf("offq-demo-%d", os.Getpid())
	}
	if d.exe, err = os.Executable(); err != nil {
		return fmt.Errorf("demo: find this program to start its children: %w", err)
	}

	// Create the region ourselves, so that an existing bus of that name is an error rather
	// than something to attach to (and remove afterwards).
	cfg := demoConfig(o)
	r, err := shm.Create(d.name, shm.Options{Dir: d.dir, Config: cfg})
	if err != nil {
		return fmt.Errorf("demo: create bus: %w", err)
	}
	size := r.Size()
	r.Close()
	path := shm.Path(d.dir, d.name)
	failed := false
	defer func() {
		if uerr := shm.Unlink(d.dir, d.name); uerr != nil {
			err = errors.Join(err, fmt.Errorf("demo: remove bus: %w", uerr))
			return
		}
		fmt.Fprintf(d.out, "bus closed, %s removed\n", path)
		switch {
		case err == nil:
			fmt.Fprintln(d.out, "\nPASS")
		case failed:
			fmt.Fprintln(d.out, "\nFAIL")
		}
	}()
	if d.b, err = bus.Open(d.name, bus.WithDir(d.dir), bus.WithConfig(cfg), bus.WithLogger(a.log), bus.WithName("offq demo")); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer func() {
		if cerr := d.b.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("demo: close bus: %w", cerr))
		}
	}()
	defer d.stopChildren()

	fmt.Fprintf(d.out, "offq demo: bus %s (%s, %.1f MiB: %d x %d B buffers, queues of %d)\n",
		d.name, path, float64(size)/(1<<20), cfg.Classes[0].Count, cfg.Classes[0].Size, cfg.InboxCapacity)
	fmt.Fprintf(d.out, "1 publisher -> %d subscribers + 1 slow; %d msgs/s on %s for %v; %d B payloads\n\n",
		o.subscribers, o.rate, strings.Join(demoTopics[:], " and "), o.duration, o.size)

	v, err := d.run(ctx)
	if err != nil {
		return err
	}
	d.report(v)
	if failed = !v.ok(); failed {
		return &exitError{code: exitRuntime, err: errors.New("demo: verification failed")}
	}
	return nil
}

// run starts the children, follows them to the end and gathers what the verdict needs.
func (d *demo) run(ctx context.Context) (*verdict, error) {
	for i := range d.o.subscribers {
		c := &child{name: fmt.Sprintf("sub-%d", i+1), pattern: fastPatterns[i%len(fastPatterns)], depth: fastDepth}
		d.subs = append(d.subs, c)
	}
	d.subs = append(d.subs, &child{name: "slow", pattern: slowPattern, slow: true, depth: slowDepth})
	for _, c := range d.subs {
		args := []string{"--role", "sub", "--pattern", c.pattern}
		if c.slow {
			args = append(args, "--queue-depth", fmt.Sprint(slowDepth), "--delay", slowDelay.String())
		}
		if err := d.startChild(c, args...); err != nil {
			return nil, err
		}
	}
	allSubs := func(f func(*child) bool) func() bool {
		return func() bool {
			for _, c := range d.subs {
				if !f(c) {
					return false
				}
			}
			return true
		}
	}
	if err := d.waitFor(ctx, "the subscribers to be ready", 30*time.Second, false, allSubs(func(c *child) bool { return c.ready })); err != nil {
		return nil, err
	}

	d.pub = &child{name: "pub"}
	if err := d.startChild(d.pub, "--role", "pub", "--rate", fmt.Sprint(d.o.rate),
		"--duration", d.o.duration.String(), "--size", fmt.Sprint(d.o.size)); err != nil {
		return nil, err
	}
	d.start = time.Now()
	for _, c := range d.all {
		c.prevAt, c.progressAt = d.start, d.start
	}
	if err := d.waitFor(ctx, "the publisher", 2*d.o.duration+30*time.Second, true, func() bool { return d.pub.done != nil }); err != nil {
		return nil, err
	}

	// Tell the subscribers where the stream ends; they drain up to it and report.
	line, _ := json.Marshal(parentMsg{Final: d.pub.done.Final})
	for _, c := range d.subs {
		if _, err := c.stdin.Write(append(line, '\n')); err != nil {
			return nil, fmt.Errorf("demo: tell %s the final sequence numbers: %w", c.name, err)
		}
	}
	if err := d.waitFor(ctx, "the subscribers to drain", drainTimeout+20*time.Second, false, allSubs(func(c *child) bool { return c.summary != nil })); err != nil {
		return nil, err
	}

	// The subscribers are still subscribed: read their inboxes' counters now.
	v := &verdict{final: d.pub.done.Final, pub: d.pub.done, inbox: make(map[*child]*shm.InboxStats)}
	r := d.b.Region()
	owner := make(map[int]*child) // participant index -> child
	parts, err := r.Participants()
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	inboxes, err := r.InboxStats()
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	for _, p := range parts {
		for _, c := range d.subs {
			if p.PID == c.pid {
				owner[p.Index] = c
			}
		}
	}
	for _, st := range inboxes {
		if c := owner[st.Owner]; c != nil {
			v.inbox[c] = &st
		}
	}

	// Let everyone go, then look for what they left behind.
	if err := d.closeAll(ctx); err != nil {
		return nil, err
	}
	if v.allocated, err = r.CountAllocated(); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if parts, err = r.Participants(); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	for _, p := range parts {
		if p.PID != os.Getpid() {
			v.leftover = append(v.leftover, p)
		}
	}
	for _, c := range d.all {
		if c.exitErr != nil {
			v.exitErrs = append(v.exitErrs, fmt.Sprintf("%s: %v", c.name, c.exitErr))
		}
	}
	v.subs = d.subs
	return v, nil
}

// startChild starts c as a child process running demo-peer with args.
func (d *demo) startChild(c *child, args ...string) error {
	full := append([]string{"demo-peer", "--dir", d.dir, "--bus", d.name, "--log-level", d.a.logLevel, "--name", c.name}, args...)
	c.cmd = exec.Command(d.exe, full...)
	c.cmd.Env = append(os.Environ(), envDemoPeer+"=1")
	c.stderr = &prefixWriter{prefix: "[" + c.name + "] ", w: d.a.stderr}
	c.cmd.Stderr = c.stderr
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return fmt.Errorf("demo: start %s: %w", c.name, err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("demo: start %s: %w", c.name, err)
	}
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("demo: start %s: %w", c.name, err)
	}
	d.all = append(d.all, c)
	d.log.Debug("started", zap.String("child", c.name), zap.Int("child_pid", c.cmd.Process.Pid), zap.Strings("args", full))
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var m peerMsg
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				d.log.Warn("demo: child wrote a line that is not JSON", zap.String("child", c.name), zap.ByteString("line", sc.Bytes()))
				continue
			}
			d.events <- event{c: c, msg: m}
		}
		io.Copy(io.Discard, stdout)
		err := c.cmd.Wait()
		c.stderr.flush()
		d.events <- event{c: c, exited: true, err: err}
	}()
	return nil
}

// waitFor handles events until cond holds, failing after timeout, when ctx is done, or when
// a child exits early. With live it prints the rates every second.
func (d *demo) waitFor(ctx context.Context, what string, timeout time.Duration, live bool, cond func() bool) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var tick <-chan time.Time
	if live {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
	}
	for !cond() {
		select {
		case ev := <-d.events:
			if err := d.apply(ev); err != nil {
				return err
			}
		case <-tick:
			d.liveLine()
		case <-timer.C:
			return fmt.Errorf("demo: gave up waiting for %s after %v", what, timeout)
		case <-ctx.Done():
			return fmt.Errorf("demo: interrupted while waiting for %s: %w", what, context.Cause(ctx))
		}
	}
	return nil
}

func (d *demo) apply(ev event) error {
	c := ev.c
	if ev.exited {
		c.exited, c.exitErr = true, ev.err
		switch {
		case d.stopping:
		case !c.finished():
			if ev.err == nil {
				ev.err = errors.New("exit status 0")
			}
			return fmt.Errorf("demo: %s ended before it finished: %v", c.name, ev.err)
		case ev.err != nil:
			return fmt.Errorf("demo: %s: %v", c.name, ev.err)
		}
		return nil
	}
	m := ev.msg
	switch m.Type {
	case msgReady:
		c.ready, c.pid = true, m.PID
	case msgProgress:
		c.progress, c.progressAt = m, time.Now()
	case msgDone:
		c.progress, c.done = m, &m
	case msgSummary:
		c.progress, c.summary = m, &m
	default:
		d.log.Warn("demo: unknown line type", zap.String("child", c.name), zap.String("type", m.Type))
	}
	return nil
}

// closeAll closes every child's stdin, which tells it to finish, and waits for all to exit.
func (d *demo) closeAll(ctx context.Context) error {
	d.stopping = true
	for _, c := range d.all {
		c.stdin.Close()
	}
	return d.waitFor(ctx, "the children to exit", 20*time.Second, false, func() bool {
		for _, c := range d.all {
			if !c.exited {
				return false
			}
		}
		return true
	})
}

// stopChildren ends every child still running, on any path out of the demo: it asks them
// (closing stdin), then kills those that have not exited after a grace period.
func (d *demo) stopChildren() {
	running := func() bool {
		for _, c := range d.all {
			if !c.exited {
				return true
			}
		}
		return false
	}
	if !running() {
		return
	}
	d.stopping = true
	for _, c := range d.all {
		c.stdin.Close()
	}
	if d.waitFor(context.Background(), "the children to exit", 3*time.Second, false, func() bool { return !running() }) == nil {
		return
	}
	for _, c := range d.all {
		if !c.exited {
			d.log.Warn("demo: killing child", zap.String("child", c.name), zap.Int("child_pid", c.cmd.Process.Pid))
			c.cmd.Process.Kill()
		}
	}
	if err := d.waitFor(context.Background(), "killed children to exit", 10*time.Second, false, func() bool { return !running() }); err != nil {
		d.log.Error("demo: children left running", zap.Error(err))
	}
}

// prefixWriter copies a child's stderr to ours, a line at a time, each line prefixed with the
// child's name.
type prefixWriter struct {
	prefix string
	w      io.Writer

	mu   sync.Mutex
	part []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := strings.IndexByte(string(b), '\n')
		if i < 0 {
			p.part = append(p.part, b...)
			break
		}
		line := append(append([]byte(p.prefix), p.part...), b[:i+1]...)
		p.part = p.part[:0]
		if _, err := p.w.Write(line); err != nil {
			return n, err
		}
		b = b[i+1:]
	}
	return n, nil
}

// flush writes a last line that had no newline.
func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.part) > 0 {
		p.w.Write(append(append([]byte(p.prefix), p.part...), '\n'))
		p.part = nil
	}
}
