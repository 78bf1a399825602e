package bench

// What offq bench prints: progress on stderr while it runs, then the machine and the results
// as markdown tables or as JSON (a stable contract: keep the names).

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/offq/offq/internal/shm"
	"github.com/offq/offq/transport"
)

// benchReport is the --json output.
type benchReport struct {
	Machine benchMachine  `json:"machine"`
	Results []benchResult `json:"results"`
}

type benchMachine struct {
	CPUs        int       `json:"cpus"`
	CPUModel    string    `json:"cpu_model"`
	Kernel      string    `json:"kernel"`
	Go          string    `json:"go"`
	OS          string    `json:"os"`
	Arch        string    `json:"arch"`
	GOMAXPROCS  int       `json:"gomaxprocs"`
	Clocksource string    `json:"clocksource,omitempty"`
	StampClock  string    `json:"stamp_clock"` // the clock offq stamps messages with: tsc or kernel (shm.StampClock)
	Pinned      bool      `json:"pinned"`
	ParentCPU   int       `json:"parent_cpu"` // -1: not pinned
	ChildCPU    int       `json:"child_cpu"`
	LoadStart   []float64 `json:"load_start"` // load average over 1, 5 and 15 minutes
	LoadEnd     []float64 `json:"load_end"`
	Date        time.Time `json:"date"`
	Command     string    `json:"command"`
}

// benchResult is one measurement.
type benchResult struct {
	System      string `json:"system"`
	Mode        string `json:"mode"`
	Pattern     string `json:"pattern"`
	Size        int    `json:"size"`
	Subscribers int    `json:"subscribers"`
	// Batch, on offq rows measured with the batched forms, is the messages per batch.
	Batch int `json:"batch,omitempty"`
	// RTT is the round trip, on ping-pong rows.
	RTT *benchRTT `json:"rtt_ns,omitempty"`
	// MsgsPerSec is the rate on stream rows, and deliveries per second (all subscribers
	// together) on fan-out rows.
	MsgsPerSec float64 `json:"msgs_per_sec,omitempty"`
	// Samples is the number of round trips timed, or of deliveries counted.
	Samples int64 `json:"samples"`
	// Dropped counts messages a subscriber never received (none are expected).
	Dropped uint64 `json:"dropped,omitempty"`
	// Threads, on subscriptions rows: the subscriber process's OS threads at the end
	// (/proc/self/status), with a goroutine per subscription waiting in Receive.
	Threads int `json:"threads,omitempty"`
	// OffqSpeedup, on baseline rows: how many times faster offq is than this row, by offq
	// mode (the baseline's p50 over offq's, or offq's rate over the baseline's) at the same
	// pattern, size and subscriber count. Below 1 the baseline is faster.
	OffqSpeedup map[string]float64 `json:"offq_speedup,omitempty"`
	// Error says why the measurement failed; the row has no figures then.
	Error string `json:"error,omitempty"`
}

type benchRTT struct {
	P50  int64 `json:"p50"`
	P99  int64 `json:"p99"`
	P999 int64 `json:"p999"`
	Max  int64 `json:"max"`
	Mean int64 `json:"mean"`
	// Stalls counts the round trips over stallNanos: on a virtual machine nearly all of them
	// are a CPU taken away (a timer tick, the host), not the transport. StallsPerSec is that
	// count per second spent in round trips. A transport whose round trips number more than
	// 1,000 times the stalls a second has them in its p99.9 whatever it does itself.
	Stalls       int64   `json:"stalls"`
	StallsPerSec float64 `json:"stalls_per_sec"`
	// Slow counts the round trips over slowNanos, SlowPerSec per second as StallsPerSec. On
	// the 2-vCPU VM of docs/performance.md every spinning system, shm-raw included, has about
	// 1,300-1,800 a second (the guest's timer ticks and rescheduling interrupts, the host's
	// own), nearly all of them 5 µs or more: a system's p99.9 falls among them when SlowPerSec
	// exceeds 0.1% of its round trips a second, which is what sets offq's p99.9 there.
	Slow       int64   `json:"slow_5us"`
	SlowPerSec float64 `json:"slow_5us_per_sec"`
}

// stallNanos: a round trip slower than this is counted as a stall (benchRTT.Stalls); slowNanos
// as slow (benchRTT.Slow).
const (
	stallNanos = 10_000
	slowNanos  = 5_000
)

func resultOf(c benchCase) benchResult {
	return benchResult{System: c.System, Mode: c.Mode, Pattern: c.Pattern, Size: c.Size, Subscribers: c.Subs, Batch: c.Batch}
}

func pingResult(c benchCase, h *hdrhistogram.Histogram) benchResult {
	r := resultOf(c)
	r.RTT = &benchRTT{P50: h.ValueAtQuantile(50), P99: h.ValueAtQuantile(99), P999: h.ValueAtQuantile(99.9),
		Max: h.Max(), Mean: int64(math.Round(h.Mean()))}
	r.Samples = h.TotalCount()
	for _, b := range h.Distribution() {
		if b.From > stallNanos {
			r.RTT.Stalls += b.Count
		}
		if b.From > slowNanos {
			r.RTT.Slow += b.Count
		}
	}
	if busy := h.Mean() * float64(h.TotalCount()); busy > 0 {
		r.RTT.StallsPerSec = math.Round(float64(r.RTT.Stalls)/busy*1e9*10) / 10
		r.RTT.SlowPerSec = math.Round(float64(r.RTT.Slow)/busy*1e9*10) / 10
	}
	return r
}

func machineInfo(cpus [2]int) benchMachine {
	m := benchMachine{
		CPUs: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		GOMAXPROCS: runtime.GOMAXPROCS(0), Pinned: cpus[0] >= 0, ParentCPU: cpus[0], ChildCPU: cpus[1],
		LoadStart: loadAvg(), Date: time.Now().UTC().Truncate(time.Second),
		Kernel:      readLine("/proc/sys/kernel/osrelease"),
		Clocksource: readLine("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
		StampClock:  shm.StampClock(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func readLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// loadAvg returns the load averages over 1, 5 and 15 minutes (nil if unknown).
func loadAvg() []float64 {
	var l [3]float64
	if n, _ := fmt.Sscan(readLine("/proc/loadavg"), &l[0], &l[1], &l[2]); n != 3 {
		return nil
	}
	return l[:]
}

// compare fills in each baseline's OffqSpeedup.
func (r *benchReport) compare() {
	for i := range r.Results {
		b := &r.Results[i]
		if b.System == sysOffq || b.Error != "" {
			continue
		}
		for _, o := range r.Results {
			if o.System != sysOffq || o.Error != "" || o.Pattern != b.Pattern || o.Size != b.Size || o.Subscribers != b.Subscribers {
				continue
			}
			var x float64
			if b.RTT != nil && o.RTT != nil && o.RTT.P50 > 0 {
				x = float64(b.RTT.P50) / float64(o.RTT.P50)
			} else if b.MsgsPerSec > 0 {
				x = o.MsgsPerSec / b.MsgsPerSec
			}
			if x > 0 {
				if b.OffqSpeedup == nil {
					b.OffqSpeedup = make(map[string]float64)
				}
				b.OffqSpeedup[speedupKey(o)] = math.Round(x*1000) / 1000
			}
		}
	}
}

func (r *benchReport) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (m benchMachine) describe() string {
	s := fmt.Sprintf("%d × %s, Linux %s, %s %s/%s, GOMAXPROCS %d", m.CPUs, m.CPUModel, m.Kernel, m.Go, m.OS, m.Arch, m.GOMAXPROCS)
	if m.Clocksource != "" {
		s += ", clocksource " + m.Clocksource
	}
	if m.StampClock != "" {
		s += ", stamps from " + m.StampClock
	}
	return s
}

func (r *benchReport) writeMarkdown(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "## offq bench\n\n")
	fmt.Fprintf(w, "- machine: %s\n", m.describe())
	if m.Pinned {
		fmt.Fprintf(w, "- pinned: this process on CPU %d, every child on CPU %d\n", m.ParentCPU, m.ChildCPU)
	} else {
		fmt.Fprintf(w, "- not pinned\n")
	}
	fmt.Fprintf(w, "- load average (1, 5, 15 min): %s at the start, %s at the end\n", fmtLoad(m.LoadStart), fmtLoad(m.LoadEnd))
	fmt.Fprintf(w, "- command: `%s`, %s\n", m.Command, m.Date.Format(time.RFC3339))

	rows := func(pat string) []benchResult {
		var out []benchResult
		for _, x := range r.Results {
			if x.Pattern == pat {
				out = append(out, x)
			}
		}
		return out
	}
	if pp := rows(patPingPong); len(pp) > 0 {
		fmt.Fprintf(w, "\n### Ping-pong: round trip between two processes (ns)\n\n")
		fmt.Fprintln(w, "| system | mode | size | p50 | p99 | p99.9 | max | round trips | over 5 µs, per s | over 10 µs, per s | offq speed-up |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
		for _, x := range pp {
			if x.Error != "" {
				fmt.Fprintf(w, "| %s | %s | %s | failed: %s | | | | | | | |\n", x.System, x.Mode, transport.Size(x.Size), mdEscape(x.Error))
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %d | %d | %d | %d | %d | %.0f | %.0f | %s |\n", sysCell(x), x.Mode, transport.Size(x.Size),
				x.RTT.P50, x.RTT.P99, x.RTT.P999, x.RTT.Max, x.Samples, x.RTT.SlowPerSec, x.RTT.StallsPerSec, speedups(x))
		}
	}
	if rq := rows(patRequest); len(rq) > 0 {
		fmt.Fprintf(w, "\n### Request/reply: round trip between two processes (ns)\n\n")
		fmt.Fprintln(w, "| system | mode | size | p50 | p99 | p99.9 | max | requests | offq speed-up |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---|")
		for _, x := range rq {
			if x.Error != "" {
				fmt.Fprintf(w, "| %s | %s | %s | failed: %s | | | | | |\n", x.System, x.Mode, transport.Size(x.Size), mdEscape(x.Error))
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %d | %d | %d | %d | %d | %s |\n", sysCell(x), x.Mode, transport.Size(x.Size),
				x.RTT.P50, x.RTT.P99, x.RTT.P999, x.RTT.Max, x.Samples, speedups(x))
		}
	}
	if st := rows(patStream); len(st) > 0 {
		fmt.Fprintf(w, "\n### Stream: one-way, 1 publisher → 1 subscriber process\n\n")
		fmt.Fprintln(w, "| system | mode | size | msgs/s | MiB/s | messages | offq speed-up |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---|")
		for _, x := range st {
			if x.Error != "" {
				fmt.Fprintf(w, "| %s | %s | %s | failed: %s | | | |\n", x.System, x.Mode, transport.Size(x.Size), mdEscape(x.Error))
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %d%s | %s |\n", sysCell(x), x.Mode, transport.Size(x.Size),
				human(x.MsgsPerSec), mibps(x), x.Samples, dropNote(x), speedups(x))
		}
	}
	if fo := rows(patFanout); len(fo) > 0 {
		fmt.Fprintf(w, "\n### Fan-out: 1 publisher → N subscriber processes (deliveries/s, all subscribers together)\n\n")
		fmt.Fprintln(w, "| system | mode | size | subscribers | deliveries/s | per subscriber | deliveries | offq speed-up |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---|")
		for _, x := range fo {
			if x.Error != "" {
				fmt.Fprintf(w, "| %s | %s | %s | %d | failed: %s | | | |\n", x.System, x.Mode, transport.Size(x.Size), x.Subscribers, mdEscape(x.Error))
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %d | %s | %s | %d%s | %s |\n", sysCell(x), x.Mode, transport.Size(x.Size), x.Subscribers,
				human(x.MsgsPerSec), human(x.MsgsPerSec/float64(x.Subscribers)), x.Samples, dropNote(x), speedups(x))
		}
	}
	if sb := rows(patSubs); len(sb) > 0 {
		fmt.Fprintf(w, "\n### Subscriptions: 1 publisher → N subscriptions in one process, a goroutine each (deliveries/s)\n\n")
		fmt.Fprintln(w, "| system | mode | size | subscriptions | deliveries/s | OS threads | deliveries |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|")
		for _, x := range sb {
			if x.Error != "" {
				fmt.Fprintf(w, "| %s | %s | %s | %d | failed: %s | | |\n", x.System, x.Mode, transport.Size(x.Size), x.Subscribers, mdEscape(x.Error))
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %d | %s | %d | %d%s |\n", sysCell(x), x.Mode, transport.Size(x.Size), x.Subscribers,
				human(x.MsgsPerSec), x.Threads, x.Samples, dropNote(x))
		}
	}
	fmt.Fprintln(w, "\noffq speed-up: on a baseline's row, how many times faster offq is in each of its modes at the same")
	fmt.Fprintln(w, "size (ping-pong: the baseline's p50 over offq's; stream and fan-out: offq's rate over the baseline's).")
	fmt.Fprintln(w, "Below 1×, the baseline is faster. Modes: spin = busy-spin, sleep = spin-then-sleep (offq's default),")
	fmt.Fprintln(w, "block = into the kernel on every message. offq payloads are written and read in place (16-byte header).")
	for _, x := range rows(patPingPong) {
		if x.System == sysOffq {
			fmt.Fprintf(w, "offq's ping-pong bus has queues of %d cells, so its two queues share a cache line, which carries a\n", pingPongQueue)
			fmt.Fprintln(w, "take and the reply together: queues of 8 or more (any default-sized bus) measured about 15% slower.")
			break
		}
	}
}

func sysCell(x benchResult) string {
	if x.System == sysOffq {
		if x.Batch > 0 {
			return fmt.Sprintf("**offq** batch %d", x.Batch)
		}
		return "**offq**"
	}
	if x.System == sysPool {
		return fmt.Sprintf("%s batch %d", x.System, x.Batch)
	}
	return x.System
}

// speedupKey is the key of an offq row's ratio on a baseline's row: its mode, and "+batch"
// for a batched row.
func speedupKey(o benchResult) string {
	if o.Batch > 0 {
		return o.Mode + "+batch"
	}
	return o.Mode
}

func speedups(x benchResult) string {
	if len(x.OffqSpeedup) == 0 {
		return ""
	}
	var parts []string
	for _, m := range []string{modeSpin, modeSleep, modeBlock, modeSpin + "+batch", modeSleep + "+batch"} {
		if v, ok := x.OffqSpeedup[m]; ok {
			parts = append(parts, fmt.Sprintf("%s %s×", m, ratio(v)))
		}
	}
	return strings.Join(parts, ", ")
}

// ratio formats a ratio with about three significant digits.
func ratio(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func mibps(x benchResult) string {
	if x.System == sysOffq {
		return "in place"
	}
	return fmt.Sprintf("%.0f", x.MsgsPerSec*float64(x.Size)/(1<<20))
}

func dropNote(x benchResult) string {
	if x.Dropped == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d dropped)", x.Dropped)
}

func fmtLoad(l []float64) string {
	if len(l) != 3 {
		return "unknown"
	}
	return fmt.Sprintf("%.2f %.2f %.2f", l[0], l[1], l[2])
}

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// benchProgress draws a bar on stderr: redrawn in place on a terminal, a line per step otherwise.
type benchProgress struct {
	w       io.Writer
	on      bool
	tty     bool
	total   int
	start   time.Time
	planned time.Duration
	drawn   bool
}

func newProgress(w io.Writer, on bool, total int, planned time.Duration) *benchProgress {
	p := &benchProgress{w: w, on: on, tty: stderrIsTerminal(), total: total, start: time.Now(), planned: planned}
	if on {
		fmt.Fprintf(w, "offq bench: %d measurements, about %v\n", total, planned.Round(time.Second))
	}
	return p
}

func (p *benchProgress) step(i int, c benchCase) {
	if !p.on {
		return
	}
	const width = 30
	fill := width * i / p.total
	bar := strings.Repeat("█", fill) + strings.Repeat("░", width-fill)
	line := fmt.Sprintf("%s %2d/%d %5.1fs  %s", bar, i+1, p.total, time.Since(p.start).Seconds(), c)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.drawn = true
		return
	}
	fmt.Fprintln(p.w, line)
}

// note prints a message without breaking the bar.
func (p *benchProgress) note(msg string) {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintln(p.w, msg)
}

func (p *benchProgress) done() {
	if !p.on {
		return
	}
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "offq bench: done in %.1fs\n", time.Since(p.start).Seconds())
}

// newHist returns a histogram of 1 ns to 100 s at 3 significant digits.
func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 100e9, 3) }

func record(h *hdrhistogram.Histogram, ns int64) {
	h.RecordValue(min(max(ns, 1), h.HighestTrackableValue()))
}

// human formats n as 950, 12.3k, 4.56M.
func human(n float64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", n/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fk", n/1e3)
	}
	return fmt.Sprintf("%.0f", n)
}
