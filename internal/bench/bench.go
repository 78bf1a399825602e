package bench

// The plan and the run are here; the processes in proc.go, offq's cases in offq.go, the raw
// shared-memory and futex floors in raw.go, Unix sockets and pipes in socket.go, NATS and the
// bridge in nats.go and bridge.go, the children's side in roles.go, the output in report.go.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/floor"
	"github.com/offq/offq/transport"
)

// Systems, modes and patterns, as they appear in the output (a stable contract: scripts
// filter on these names).
const (
	sysOffq  = "offq"
	sysShm   = "shm-raw"
	sysFutex = "futex-raw"
	sysUDS   = "uds"
	sysPipe  = "pipe"
	sysNATS  = "nats"
	sysBrdg  = "bridge"
	sysSPSC  = "spsc-raw"
	sysPool  = "pool-raw"
	sysLines = "lines-raw"
	sysHead  = "headonly-raw"
	sysTwo   = "twoline-raw"
	sysIn    = "inline-raw"
	sysRing  = "slotring-raw"
	sysORing = "offq-ring"    // offq's bus with slot-ring publishers (WithSlotRing)
	sysSRing = "slotring-shm" // offq's slot rings through internal/shm, without the bus

	modeSpin  = "spin"  // waits without entering the kernel
	modeSleep = "sleep" // spins briefly, then sleeps in the kernel (offq's default)
	modeBlock = "block" // sleeps in the kernel for every message

	patPingPong = "pingpong"
	patStream   = "stream"
	patFanout   = "fanout"
	patSubs     = "subscriptions" // 1 publisher → many subscriptions in one child process
	patRequest  = "request"       // request/reply round trips (request.go); not in the default run
)

// ringSizes is the largest message the slot ring rows measure: rings are for small messages,
// copied into the slot and out of it (docs/slot-rings.md); at 4 KiB the copies already take
// longer than the round trip through the pool.
const ringSizes = 4 << 10

// manySubs is the number of subscriptions of the subscriptions pattern.
const manySubs = 256

var (
	allSystems  = builtSystems()
	allPatterns = []string{patPingPong, patStream, patFanout, patSubs}
	// knownPatterns are what --patterns accepts: the default run's and request.
	knownPatterns = []string{patPingPong, patStream, patFanout, patSubs, patRequest}
)

// builtSystems lists the systems this build can measure, in the order they are reported.
func builtSystems() []string {
	s := []string{sysOffq, sysORing, sysSRing, sysShm, sysLines, sysHead, sysTwo, sysIn, sysRing, sysSPSC, sysPool, sysFutex, sysUDS, sysPipe, sysNATS, sysBrdg}
	if !haveNATS {
		s = s[:len(s)-2]
	}
	return s
}

// Options is one run's plan, as Flags.Options makes it.
type Options struct {
	quick    bool
	json     bool
	progress bool
	noPin    bool
	sizes    []int
	fanout   []int
	systems  []string
	patterns []string
	warmup   time.Duration
	duration time.Duration
	batch    int // messages per batch of the batched offq rows; 0: none
}

// Defaults, and what --quick changes.
var (
	defaultSizes  = []int{64, 4 << 10, 64 << 10, 1 << 20}
	quickSizes    = []int{64, 1 << 20}
	defaultFanout = []int{1, 4, 8}
	quickFanout   = []int{1, 4}
)

const (
	defaultWarmup   = 250 * time.Millisecond
	defaultDuration = time.Second
	quickWarmup     = 100 * time.Millisecond
	quickDuration   = 300 * time.Millisecond

	minBenchSize = 16 // the stream header: sequence number and phase
	maxBenchSize = 64 << 20
	maxFanout    = 32

	defaultBatch = 64 // bus.MaxBatch
)

// Help is offq bench's long help.
const Help = `bench measures offq between processes and, in the same run, the transports a user would
otherwise pick, so that the ratios hold even on a noisy machine:

  offq       the bus API (Loan, write the header in place, Send; Receive, read, Release)
  offq-ring  the bus API as offq, with each side's publisher owning a slot ring of 8 slots
             (WithSlotRing, docs/slot-rings.md): the subscriber polls the message's own slot
             and copies it out at Receive. Ping-pong, spin, up to 4 KiB. In stream (spin) and
             fan-out (sleep), the publisher's ring has as many slots as offq's stream queue
             and its subscribers drop their oldest: a ring's writer waits for no reader, so a
             reader slower than it is lapped, and the row says how many it missed
  slotring-shm
             the same rings through offq's protocol package without the bus (internal/shm:
             headers checked, laps detected, each message stamped): what the bus adds
  shm-raw    a counter passed through two words of a shared file, both sides spinning: the floor
  lines-raw  a round trip through the cache lines and locked operations of one offq message each
             way (slot, cell, tail, head, held entry) with none of offq's code, both sides
             spinning: what the hardware charges for offq's line pattern
  headonly-raw
             the same with takes that claim on the head and never write the cell
  twoline-raw
             an 8-byte payload each way on a line of its own, announced by a word on another
             line that names it; the reader waits for the word, then reads the payload: the
             lines of any ring of offsets into a pool, with no claim and no bookkeeping
  inline-raw the same with the payload on the announcing word's own line: the lines of a ring
             of message slots whose reader polls the message's header
  slotring-raw
             such a ring with its bookkeeping: eight one-line slots each way (sequence word,
             length, topic, payload), the reader's cursor on a line of its own, read by the
             writer once a lap; no clock read (docs/slot-rings.md)
  spsc-raw   a stream of 64-bit words through a single-producer ring in a shared file (one
             atomic store per word on each side): the floor of a one-way stream
  pool-raw   a stream of messages written in place into 64-byte buffers of a pool, their
             indexes passed through a single-producer ring published once per batch (--batch),
             each buffer freed by the consumer's store: the floor of offq's batched stream,
             whose buffer lines go to the subscriber and back for every message
  futex-raw  the same, with FUTEX_WAKE and FUTEX_WAIT on every message
  uds        a Unix stream socket (Go's net package), one write per message
  pipe       a pair of pipes (os.Pipe), one write per message
  (nats: a request/reply round trip through an embedded NATS server on loopback, the engine the bridge uses between hosts)

Patterns:

  pingpong   round trip between this process and a child: p50, p99, p99.9 and max from an
             HdrHistogram of every round trip after the warm-up
  stream     one-way, this process publishing to a child as fast as it takes (offq subscribes
             with the Block policy, so nothing is dropped; offq-ring's readers are lapped
             instead, counted): messages/s received
  fanout     one publisher to N child processes: deliveries/s, all subscribers together
  subscriptions
             one publisher to 256 subscriptions (256 topics) in one child process, a goroutine
             each in Receive (sleep mode): deliveries/s and the child's OS threads

  request    request/reply round trip (offq Request and ReplyLoan, zero copy both ways; nats
             Request through the embedded server): p50, p99, p99.9 and max, as ping-pong.
             Not in the default run: ask for it (--patterns request)

With --batch N (default 64; 0: none) offq's stream and fan-out also run batched: LoanBatch and
SendBatch N messages at a time, ReceiveBatch and ReleaseBatch up to N ("offq batch N" rows).

Modes: spin (offq BusySpin; shm-raw), sleep (offq SpinThenSleep, the default: spin ~50µs,
then sleep on a futex), block (offq Sleep, futex-raw, uds, pipe: into the kernel on every
message). offq runs in spin and sleep at every size, and in block at 64 B ping-pong beside
futex-raw; fan-out subscribers use sleep, so that N of them do not all spin on two cores.
shm-raw and futex-raw carry no payload and run at 64 B only; so do lines-raw, headonly-raw,
twoline-raw, inline-raw and slotring-raw (one 8-byte payload word).

This process runs on the first allowed CPU and every child on the second (a thread locked with
runtime.LockOSThread and sched_setaffinity), unless --no-pin. offq's payloads are written and
read in place: only a 16-byte header (sequence number, phase) is touched per message, which is
the point of zero copy; uds and pipe move every byte through the kernel.

The defaults take about 2 minutes (95 measurements); --quick about 25 seconds (47). A progress
bar goes to stderr when it is a terminal (or with --progress). At the end a markdown table goes
to stdout, with the machine, the command and each baseline's ratio to offq, or with --json one
JSON object: {"machine": {...}, "results": [{"system", "mode", "pattern", "size",
"subscribers", "rtt_ns": {"p50", "p99", "p999", "max", "mean", "stalls", "stalls_per_sec",
"slow_5us", "slow_5us_per_sec"} | "msgs_per_sec", ...}]}. Ping-pong counts the round trips over
5 µs and over 10 µs and their rate per second spent in round trips: on a virtual machine they
are nearly all a CPU taken away (interrupts, the host), and a system's p99.9 falls among them
once they exceed 0.1% of its round trips.

Everything runs in a private directory under --dir (its regions, files and sockets), removed at
the end; --bus is not used. Exit status 1 if a measurement failed (the others are still
reported), 2 for a bad flag.`

// Example is offq bench's example section.
const Example = `  offq bench
  offq bench --quick --json > bench.json
  offq bench --patterns pingpong --sizes 64,1MiB --duration 2s
  offq bench --systems offq,uds --patterns stream,fanout --fanout 1,2,4`

// Flags are offq bench's flags as given on the command line.
type Flags struct {
	quick, json, progress, noPin     bool
	sizes, fanout, systems, patterns string
	warmup, duration                 time.Duration
	batch                            int
	fs                               *pflag.FlagSet
}

// Register defines the flags in fs.
func (f *Flags) Register(fs *pflag.FlagSet) {
	f.fs = fs
	fs.BoolVar(&f.quick, "quick", false, "fewer sizes and fan-outs, shorter runs (about 15 s)")
	fs.BoolVar(&f.json, "json", false, "print the results as JSON instead of a markdown table")
	fs.BoolVar(&f.progress, "progress", false, "show progress on stderr even when it is not a terminal")
	fs.BoolVar(&f.noPin, "no-pin", false, "do not pin the measuring threads to CPUs")
	fs.StringVar(&f.sizes, "sizes", "", "payload sizes, comma-separated (default 64,4KiB,64KiB,1MiB; --quick 64,1MiB)")
	fs.StringVar(&f.fanout, "fanout", "", "subscriber counts of the fan-out (default 1,4,8; --quick 1,4)")
	fs.StringVar(&f.systems, "systems", strings.Join(allSystems, ","), "systems to measure")
	fs.StringVar(&f.patterns, "patterns", strings.Join(allPatterns, ","), "patterns to measure")
	fs.DurationVar(&f.warmup, "warmup", defaultWarmup, "warm-up of each measurement (--quick: 100ms)")
	fs.DurationVar(&f.duration, "duration", defaultDuration, "length of each measurement after its warm-up (--quick: 300ms)")
	fs.IntVar(&f.batch, "batch", defaultBatch, "messages per batch of the batched offq stream and fan-out rows (LoanBatch/SendBatch, ReceiveBatch/ReleaseBatch), 1 to 64; 0: no batched rows")
}

// Options validates the flags (its errors are usage errors) and makes the run's options.
func (f *Flags) Options() (Options, error) {
	o := Options{quick: f.quick, json: f.json, progress: f.progress, noPin: f.noPin, warmup: f.warmup, duration: f.duration, batch: f.batch}
	err := o.parse(f.fs.Changed, f.sizes, f.fanout, f.systems, f.patterns)
	return o, err
}

func (o *Options) parse(changed func(string) bool, sizes, fanout, systems, patterns string) error {
	o.sizes, o.fanout = defaultSizes, defaultFanout
	if o.quick {
		o.sizes, o.fanout = quickSizes, quickFanout
		if !changed("warmup") {
			o.warmup = quickWarmup
		}
		if !changed("duration") {
			o.duration = quickDuration
		}
	}
	if changed("sizes") {
		o.sizes = nil
		for _, s := range splitList(sizes) {
			n, err := transport.ParseSize(s)
			if err != nil || n < minBenchSize || n > maxBenchSize {
				return fmt.Errorf("--sizes: %q: want sizes from %d B to %s", s, minBenchSize, transport.Size(maxBenchSize))
			}
			o.sizes = append(o.sizes, int(n))
		}
	}
	if changed("fanout") {
		o.fanout = nil
		for _, s := range splitList(fanout) {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > maxFanout {
				return fmt.Errorf("--fanout: %q: want subscriber counts from 1 to %d", s, maxFanout)
			}
			o.fanout = append(o.fanout, n)
		}
	}
	var err error
	for _, s := range splitList(systems) {
		if !haveNATS && (s == sysNATS || s == sysBrdg) {
			return fmt.Errorf("--systems: %q: this offq was built with -tags offq_nonats, without the NATS server it needs", s)
		}
	}
	if o.systems, err = pickNames("--systems", systems, allSystems); err != nil {
		return err
	}
	if o.patterns, err = pickNames("--patterns", patterns, knownPatterns); err != nil {
		return err
	}
	switch {
	case len(o.sizes) == 0:
		return errors.New("--sizes: no sizes")
	case len(o.fanout) == 0 && slices.Contains(o.patterns, patFanout):
		return errors.New("--fanout: no subscriber counts")
	case o.warmup < 0 || o.warmup > time.Minute:
		return fmt.Errorf("--warmup %v: want 0 to 1m", o.warmup)
	case o.duration < 10*time.Millisecond || o.duration > 10*time.Minute:
		return fmt.Errorf("--duration %v: want 10ms to 10m", o.duration)
	case o.batch < 0 || o.batch > bus.MaxBatch:
		return fmt.Errorf("--batch %d: want 0 (no batched rows) to %d", o.batch, bus.MaxBatch)
	}
	slices.Sort(o.sizes)
	o.sizes = slices.Compact(o.sizes)
	slices.Sort(o.fanout)
	o.fanout = slices.Compact(o.fanout)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// pickNames parses a comma-separated subset of known, returned in known's order.
func pickNames(flag, s string, known []string) ([]string, error) {
	want := splitList(s)
	for _, w := range want {
		if !slices.Contains(known, w) {
			return nil, fmt.Errorf("%s: %q: want some of %s", flag, w, strings.Join(known, ", "))
		}
	}
	var out []string
	for _, k := range known {
		if slices.Contains(want, k) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: none given", flag)
	}
	return out, nil
}

// benchCase is one measurement.
type benchCase struct {
	System  string
	Mode    string
	Pattern string
	Size    int
	Subs    int
	Batch   int // offq: messages per batch (batched forms); 0: one at a time
}

func (c benchCase) String() string {
	s := fmt.Sprintf("%s %s %s %s", c.System, c.Pattern, transport.Size(c.Size), c.Mode)
	if c.Pattern == patFanout || c.Pattern == patSubs {
		s += fmt.Sprintf(" 1→%d", c.Subs)
	}
	if c.Batch > 0 {
		s += fmt.Sprintf(" batch %d", c.Batch)
	}
	return s
}

// plan lists the measurements in the order they run: by pattern, then size, with each
// baseline right after the offq case it is compared with, so that the two are measured
// seconds apart.
func (o Options) plan() []benchCase {
	has := func(s string) bool { return slices.Contains(o.systems, s) }
	var out []benchCase
	add := func(sys, mode, pat string, size, subs int) {
		if has(sys) {
			out = append(out, benchCase{System: sys, Mode: mode, Pattern: pat, Size: size, Subs: subs})
		}
	}
	smallest := o.sizes[0]
	for _, pat := range o.patterns {
		for _, size := range o.sizes {
			switch pat {
			case patPingPong:
				if size == smallest {
					add(sysShm, modeSpin, pat, size, 1)
					add(sysLines, modeSpin, pat, size, 1)
					add(sysHead, modeSpin, pat, size, 1)
					add(sysTwo, modeSpin, pat, size, 1)
					add(sysIn, modeSpin, pat, size, 1)
					add(sysRing, modeSpin, pat, size, 1)
				}
				if size <= ringSizes {
					add(sysSRing, modeSpin, pat, size, 1)
					add(sysORing, modeSpin, pat, size, 1)
				}
				add(sysOffq, modeSpin, pat, size, 1)
				add(sysOffq, modeSleep, pat, size, 1)
				if size == smallest {
					add(sysFutex, modeBlock, pat, size, 1)
					add(sysOffq, modeBlock, pat, size, 1)
				}
				add(sysUDS, modeBlock, pat, size, 1)
				add(sysPipe, modeBlock, pat, size, 1)
				add(sysNATS, modeBlock, pat, size, 1)
				add(sysBrdg, modeSleep, pat, size, 1)
			case patStream:
				add(sysOffq, modeSpin, pat, size, 1)
				add(sysOffq, modeSleep, pat, size, 1)
				if has(sysOffq) && o.batch > 0 {
					out = append(out, benchCase{System: sysOffq, Mode: modeSpin, Pattern: pat, Size: size, Subs: 1, Batch: o.batch},
						benchCase{System: sysOffq, Mode: modeSleep, Pattern: pat, Size: size, Subs: 1, Batch: o.batch})
				}
				if size <= ringSizes {
					add(sysORing, modeSpin, pat, size, 1)
				}
				if size == smallest {
					add(sysSPSC, modeSpin, pat, size, 1)
					if has(sysPool) {
						out = append(out, benchCase{System: sysPool, Mode: modeSpin, Pattern: pat, Size: size, Subs: 1, Batch: max(o.batch, 1)})
					}
				}
				add(sysUDS, modeBlock, pat, size, 1)
				add(sysPipe, modeBlock, pat, size, 1)
			case patRequest:
				add(sysOffq, modeSpin, pat, size, 1)
				add(sysOffq, modeSleep, pat, size, 1)
				add(sysNATS, modeBlock, pat, size, 1)
			case patFanout:
				for _, n := range o.fanout {
					add(sysOffq, modeSleep, pat, size, n)
					if has(sysOffq) && o.batch > 0 {
						out = append(out, benchCase{System: sysOffq, Mode: modeSleep, Pattern: pat, Size: size, Subs: n, Batch: o.batch})
					}
					if size <= ringSizes {
						add(sysORing, modeSleep, pat, size, n)
					}
					add(sysUDS, modeBlock, pat, size, n)
				}
			case patSubs:
				if size == smallest {
					add(sysOffq, modeSleep, pat, size, manySubs)
				}
			}
		}
	}
	return out
}

// Env is where a run happens and reports.
type Env struct {
	Dir      string      // the private directory of the run is made in it
	Log      *zap.Logger // this process's logger
	LogLevel string      // the children's log level
	Stdout   io.Writer   // the report
	Stderr   io.Writer   // progress and the children's complaints
	Command  string      // the command line, for the report
}

// ErrNothing says that the options select no measurement.
var ErrNothing = errors.New("bench: nothing to measure with these --systems and --patterns")

// Run makes every measurement of o's plan and writes the report. Its error says how many
// failed (the others are still reported), or that ctx ended the run.
func Run(ctx context.Context, o Options, env Env) error {
	plan := o.plan()
	if len(plan) == 0 {
		return ErrNothing
	}
	tmp, err := os.MkdirTemp(env.Dir, "offq-bench-")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(tmp)
	bn := &bencher{env: env, log: env.Log, o: o, tmp: tmp, cpus: [2]int{-1, -1}}
	if !o.noPin {
		if cpus, err := floor.CPUs(); err == nil && len(cpus) >= 2 {
			bn.cpus = [2]int{cpus[0], cpus[1]}
		}
	}
	rep := &benchReport{Machine: machineInfo(bn.cpus), Results: make([]benchResult, 0, len(plan))}
	rep.Machine.Command = env.Command
	prog := newProgress(env.Stderr, o.progress || stderrIsTerminal(), len(plan), o.estimate(plan))
	var failed int
	for i, c := range plan {
		if ctx.Err() != nil {
			break
		}
		prog.step(i, c)
		res, err := bn.run(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			failed++
			res = resultOf(c)
			res.Error = err.Error()
			prog.note(fmt.Sprintf("offq bench: %s: %v", c, err))
		}
		rep.Results = append(rep.Results, res)
	}
	prog.done()
	rep.Machine.LoadEnd = loadAvg()
	rep.compare()
	out := env.Stdout
	if o.json {
		if err := rep.writeJSON(out); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	} else {
		rep.writeMarkdown(out)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bench: interrupted after %d of %d measurements: %w", len(rep.Results), len(plan), context.Cause(ctx))
	}
	if failed > 0 {
		return fmt.Errorf("bench: %d of %d measurements failed", failed, len(plan))
	}
	return nil
}

// estimate guesses how long plan takes: each case's warm-up and measurement, plus starting
// its processes.
func (o Options) estimate(plan []benchCase) time.Duration {
	var d time.Duration
	for _, c := range plan {
		d += o.warmup + o.duration + 60*time.Millisecond + time.Duration(c.Subs)*20*time.Millisecond
	}
	return d
}

func stderrIsTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// bencher runs measurements.
type bencher struct {
	env  Env
	log  *zap.Logger
	o    Options
	tmp  string // private directory: regions, files, sockets
	cpus [2]int // this process's measuring thread, the children's; -1: not pinned
	seq  int    // names files of successive cases apart

	// rounds, if set, replaces the timed part of a ping-pong after its warm-up: go test
	// -bench runs b.N rounds and times them itself (pingpong_bench_test.go).
	rounds func(round func() error) error
}

// caseTimeout bounds one measurement beyond its warm-up and duration: starting processes,
// draining queues, stopping.
const caseTimeout = 30 * time.Second

// run makes one measurement.
func (bn *bencher) run(ctx context.Context, c benchCase) (benchResult, error) {
	bn.seq++
	ctx, cancel := context.WithTimeoutCause(ctx, bn.o.warmup+bn.o.duration+caseTimeout,
		fmt.Errorf("took longer than %v", bn.o.warmup+bn.o.duration+caseTimeout))
	defer cancel()
	switch {
	case c.System == sysOffq && c.Pattern == patPingPong:
		return bn.offqPingPong(ctx, c)
	case c.System == sysOffq && c.Pattern == patSubs:
		return bn.offqSubscriptions(ctx, c)
	case c.System == sysOffq && c.Pattern == patRequest:
		return bn.offqRequest(ctx, c)
	case c.System == sysOffq:
		return bn.offqStream(ctx, c)
	case c.System == sysShm || c.System == sysFutex:
		return bn.rawPingPong(ctx, c)
	case c.System == sysSPSC:
		return bn.rawStream(ctx, c)
	case c.System == sysPool:
		return bn.poolStream(ctx, c)
	case c.System == sysLines || c.System == sysHead:
		return bn.linesPingPong(ctx, c)
	case c.System == sysORing && c.Pattern == patPingPong:
		return bn.offqPingPong(ctx, c)
	case c.System == sysORing:
		return bn.offqStream(ctx, c)
	case c.System == sysSRing:
		return bn.ringPingPong(ctx, c)
	case c.System == sysTwo || c.System == sysIn || c.System == sysRing:
		return bn.payloadPingPong(ctx, c)
	case c.System == sysNATS:
		return bn.natsPingPong(ctx, c)
	case c.System == sysBrdg:
		return bn.bridgePingPong(ctx, c)
	case c.Pattern == patPingPong:
		return bn.socketPingPong(ctx, c)
	}
	return bn.socketStream(ctx, c)
}

// onCPU runs fn on a goroutine locked to a thread pinned to cpu (if cpu >= 0). The goroutine
// ends locked, so the runtime ends the pinned thread with it.
func onCPU(cpu int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		if err := floor.PinThread(cpu); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// minMeasured is the fewest round trips or messages a measurement counts, however long
// they take: on a machine too busy to make them within --duration, the measurement runs
// longer rather than report nothing.
const minMeasured = 100

// schedule is the warm-up and the measurement of one stream: timers move its phase on, and
// the publisher reads it with one atomic load per message instead of reading the clock.
type schedule struct {
	phase  atomic.Uint64
	timers [2]*time.Timer
}

func (bn *bencher) startSchedule() *schedule {
	s := &schedule{}
	s.timers[0] = time.AfterFunc(bn.o.warmup, func() { s.phase.CompareAndSwap(phaseWarm, phaseMeasure) })
	s.timers[1] = time.AfterFunc(bn.o.warmup+bn.o.duration, func() { s.phase.Store(phaseEnd) })
	return s
}

func (s *schedule) stop() {
	for _, t := range s.timers {
		t.Stop()
	}
}

// publish calls send for messages 1, 2, ... with the phase each belongs to, then for the end
// marker once the measurement is over and at least minMeasured messages were measured.
func (bn *bencher) publish(send func(seq, phase uint64) error) error {
	s := bn.startSchedule()
	defer s.stop()
	measured := 0
	for seq := uint64(1); ; seq++ {
		ph := s.phase.Load()
		if ph == phaseEnd {
			if measured >= minMeasured {
				return send(seq, phaseEnd)
			}
			ph = phaseMeasure
		}
		if ph == phaseMeasure {
			measured++
		}
		if err := send(seq, ph); err != nil {
			return err
		}
	}
}
