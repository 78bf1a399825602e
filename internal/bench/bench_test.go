package bench

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/bus"
	"github.com/spf13/pflag"
)

// TestBenchPlan: baselines run right after the offq case they are compared with; the floors
// only at the smallest size.
func TestBenchPlan(t *testing.T) {
	o := Options{sizes: []int{64, 4096}, fanout: []int{1, 8}, systems: allSystems, patterns: allPatterns, batch: 64}
	var got []string
	for _, c := range o.plan() {
		got = append(got, c.String())
	}
	want := []string{
		"shm-raw pingpong 64B spin", "lines-raw pingpong 64B spin", "headonly-raw pingpong 64B spin",
		"twoline-raw pingpong 64B spin", "inline-raw pingpong 64B spin", "slotring-raw pingpong 64B spin",
		"slotring-shm pingpong 64B spin", "offq-ring pingpong 64B spin", "offq pingpong 64B spin", "offq pingpong 64B sleep", "futex-raw pingpong 64B block",
		"offq pingpong 64B block", "uds pingpong 64B block", "pipe pingpong 64B block", "nats pingpong 64B block", "bridge pingpong 64B sleep",
		"slotring-shm pingpong 4KiB spin", "offq-ring pingpong 4KiB spin", "offq pingpong 4KiB spin", "offq pingpong 4KiB sleep", "uds pingpong 4KiB block", "pipe pingpong 4KiB block", "nats pingpong 4KiB block", "bridge pingpong 4KiB sleep",
		"offq stream 64B spin", "offq stream 64B sleep", "offq stream 64B spin batch 64", "offq stream 64B sleep batch 64", "offq-ring stream 64B spin",
		"spsc-raw stream 64B spin", "pool-raw stream 64B spin batch 64", "uds stream 64B block", "pipe stream 64B block",
		"offq stream 4KiB spin", "offq stream 4KiB sleep", "offq stream 4KiB spin batch 64", "offq stream 4KiB sleep batch 64", "offq-ring stream 4KiB spin",
		"uds stream 4KiB block", "pipe stream 4KiB block",
		"offq fanout 64B sleep 1→1", "offq fanout 64B sleep 1→1 batch 64", "offq-ring fanout 64B sleep 1→1", "uds fanout 64B block 1→1",
		"offq fanout 64B sleep 1→8", "offq fanout 64B sleep 1→8 batch 64", "offq-ring fanout 64B sleep 1→8", "uds fanout 64B block 1→8",
		"offq fanout 4KiB sleep 1→1", "offq fanout 4KiB sleep 1→1 batch 64", "offq-ring fanout 4KiB sleep 1→1", "uds fanout 4KiB block 1→1",
		"offq fanout 4KiB sleep 1→8", "offq fanout 4KiB sleep 1→8 batch 64", "offq-ring fanout 4KiB sleep 1→8", "uds fanout 4KiB block 1→8",
		"offq subscriptions 64B sleep 1→256",
	}
	want = slices.DeleteFunc(want, func(c string) bool { // a build without NATS plans no nats or bridge rows
		return !slices.Contains(allSystems, strings.Fields(c)[0])
	})
	if !slices.Equal(got, want) {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestStreamDepth(t *testing.T) {
	for _, tc := range []struct {
		size   int
		budget int64
		want   int
	}{
		{64, 128 << 20, 4096},
		{4096, 128 << 20, 4096},
		{64 << 10, 128 << 20, 2048},
		{1 << 20, 128 << 20, 128},
		{1 << 20, 8 << 20, 16},
		{100, 8 << 20, 4096},
	} {
		if got := streamDepth(tc.size, tc.budget); got != tc.want {
			t.Errorf("streamDepth(%d, %d) = %d, want %d", tc.size, tc.budget, got, tc.want)
		}
	}
	if b := bufferBudget(t.TempDir()); b < 8<<20 || b > 128<<20 {
		t.Errorf("bufferBudget = %d", b)
	}
}

// TestBenchCompare: each baseline's speed-up is against offq at the same pattern, size and
// subscriber count, in each mode offq ran in.
func TestBenchCompare(t *testing.T) {
	rep := benchReport{Results: []benchResult{
		{System: sysOffq, Mode: modeSpin, Pattern: patPingPong, Size: 64, Subscribers: 1, RTT: &benchRTT{P50: 200}},
		{System: sysOffq, Mode: modeSleep, Pattern: patPingPong, Size: 64, Subscribers: 1, RTT: &benchRTT{P50: 400}},
		{System: sysShm, Mode: modeSpin, Pattern: patPingPong, Size: 64, Subscribers: 1, RTT: &benchRTT{P50: 100}},
		{System: sysUDS, Mode: modeBlock, Pattern: patPingPong, Size: 4096, Subscribers: 1, RTT: &benchRTT{P50: 100}},
		{System: sysOffq, Mode: modeSleep, Pattern: patFanout, Size: 64, Subscribers: 4, MsgsPerSec: 4e6},
		{System: sysOffq, Mode: modeSleep, Pattern: patFanout, Size: 64, Subscribers: 1, MsgsPerSec: 1e6},
		{System: sysUDS, Mode: modeBlock, Pattern: patFanout, Size: 64, Subscribers: 4, MsgsPerSec: 5e5},
		{System: sysPipe, Mode: modeBlock, Pattern: patStream, Size: 64, Subscribers: 1, Error: "broken"},
	}}
	rep.compare()
	r := rep.Results
	if r[0].OffqSpeedup != nil || r[2].OffqSpeedup[modeSpin] != 0.5 || r[2].OffqSpeedup[modeSleep] != 0.25 || len(r[2].OffqSpeedup) != 2 {
		t.Errorf("ping-pong: %v %v", r[0].OffqSpeedup, r[2].OffqSpeedup)
	}
	if r[3].OffqSpeedup != nil {
		t.Errorf("no offq at 4 KiB, yet %v", r[3].OffqSpeedup)
	}
	if r[6].OffqSpeedup[modeSleep] != 8 || len(r[6].OffqSpeedup) != 1 {
		t.Errorf("fan-out: %v", r[6].OffqSpeedup)
	}
	if r[7].OffqSpeedup != nil {
		t.Errorf("failed row: %v", r[7].OffqSpeedup)
	}
}

func TestFlags(t *testing.T) {
	var f Flags
	fs := pflag.NewFlagSet("bench", pflag.ContinueOnError)
	f.Register(fs)
	if err := fs.Parse([]string{"--quick", "--sizes", "1MiB,64,64", "--systems", "pipe,offq"}); err != nil {
		t.Fatal(err)
	}
	o, err := f.Options()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.sizes, []int{64, 1 << 20}) || !slices.Equal(o.fanout, quickFanout) || !slices.Equal(o.systems, []string{sysOffq, sysPipe}) ||
		o.warmup != quickWarmup || o.duration != quickDuration {
		t.Errorf("options %+v", o)
	}
}

// TestPingResultStalls: round trips over 10 µs (stalls) and over 5 µs (slow) are counted, and
// their rates are per second spent in round trips.
func TestPingResultStalls(t *testing.T) {
	h := newHist()
	for range 998 {
		record(h, 1_000) // 998 µs of round trips
	}
	record(h, 9_000)   // not a stall
	record(h, 993_000) // one stall: 1 ms in all with the others
	record(h, 20_000)  // and another
	r := pingResult(benchCase{System: sysOffq, Mode: modeSpin, Pattern: patPingPong, Size: 64, Subs: 1}, h)
	if r.RTT.Stalls != 2 {
		t.Errorf("stalls = %d, want 2", r.RTT.Stalls)
	}
	// 2 stalls in 998+9+993+20 µs = 2.02 ms of round trips: about 990 a second (the histogram
	// keeps 3 significant digits).
	if got := r.RTT.StallsPerSec; got < 980 || got > 1000 {
		t.Errorf("stalls per second = %v, want about 990", got)
	}
	// Over 5 µs: the 9 µs round trip too.
	if r.RTT.Slow != 3 {
		t.Errorf("slow = %d, want 3", r.RTT.Slow)
	}
	if got := r.RTT.SlowPerSec; got < 1470 || got > 1500 {
		t.Errorf("slow per second = %v, want about 1,485", got)
	}
}

// TestStreamConfigTakesWholeBatches: a batched subscriber of the stream's region receives a
// whole batch in one ReceiveBatch. The region once gave each subscriber 4 held entries, so
// the "batch 64" rows measured a receiving side that took at most 4 messages per call.
func TestStreamConfigTakesWholeBatches(t *testing.T) {
	for _, batch := range []int{8, 64} {
		c := benchCase{System: sysOffq, Mode: modeSpin, Pattern: patStream, Size: 64, Subs: 1, Batch: batch}
		dir := t.TempDir()
		b, err := bus.Open("cfg", bus.WithDir(dir), bus.WithConfig(streamConfig(c, 128)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		sub, err := b.Subscribe(topicStream, bus.WithoutHistory())
		if err != nil {
			t.Fatal(err)
		}
		pub, err := b.Publisher(topicStream)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for range batch {
			if err := pub.Publish(ctx, []byte("m")); err != nil {
				t.Fatal(err)
			}
		}
		ms, err := sub.ReceiveBatch(ctx, make([]bus.Message, batch))
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != batch {
			t.Errorf("batch %d: ReceiveBatch took %d of %d queued messages", batch, len(ms), batch)
		}
		bus.ReleaseBatch(ms)
		cancel()
	}
}

// TestRingStreamReadsRing: in an offq-ring stream's region, a subscriber made as the child
// makes it reads the publisher's ring, and readsRing says so; a subscriber of the pool's
// stream (Block) gets copies through its queue, and readsRing fails it, so that a ring row
// cannot report the queue's figures under the ring's name.
func TestRingStreamReadsRing(t *testing.T) {
	for _, size := range []int{64, 4 << 10} {
		c := benchCase{System: sysORing, Mode: modeSpin, Pattern: patStream, Size: size, Subs: 2}
		cfg, ring, depth := ringStreamConfig(c, 8<<20)
		if ring <= depth {
			t.Fatalf("%d B: a ring of %d slots for queues of %d: the subscribers would not read it", size, ring, depth)
		}
		b, err := bus.Open("ringcfg", bus.WithDir(t.TempDir()), bus.WithConfig(cfg))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		w := bus.WithWait(bus.BusySpin)
		reader, err := b.Subscribe(topicStream, streamSubOptions(peerArg{Ring: ring, Depth: depth}, w)...)
		if err != nil {
			t.Fatal(err)
		}
		queued, err := b.Subscribe(topicStream, streamSubOptions(peerArg{Depth: depth}, w)...)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := b.Publisher(topicStream, bus.WithSlotRing(ring, size))
		if err != nil {
			t.Fatalf("%d B: %v", size, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := pub.Publish(ctx, make([]byte, size)); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*bus.Subscription{reader, queued} {
			m, err := s.Receive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m.Release()
		}
		cancel()
		if err := readsRing(reader); err != nil {
			t.Errorf("%d B: the ring's reader: %v", size, err)
		}
		if err := readsRing(queued); err == nil {
			t.Errorf("%d B: readsRing passed a Block subscriber that got the message through its queue", size)
		}
	}
}

// TestReportSaysPingPongLayout: the markdown report says that offq's ping-pong row measures
// queues that share a cache line (the favourable layout), and only when it has such a row.
func TestReportSaysPingPongLayout(t *testing.T) {
	const note = "queues of 8 or more (any default-sized bus) measured about 15% slower"
	md := func(rs ...benchResult) string {
		var b strings.Builder
		rep := benchReport{Results: rs}
		rep.writeMarkdown(&b)
		return b.String()
	}
	pp := benchResult{System: sysOffq, Mode: modeSpin, Pattern: patPingPong, Size: 64, Subscribers: 1, RTT: &benchRTT{P50: 800}}
	if got := md(pp); !strings.Contains(got, note) {
		t.Errorf("report with offq's ping-pong does not say its layout:\n%s", got)
	}
	st := benchResult{System: sysOffq, Mode: modeSleep, Pattern: patStream, Size: 64, Subscribers: 1, MsgsPerSec: 3e6}
	if got := md(st); strings.Contains(got, note) {
		t.Errorf("report without a ping-pong says the ping-pong's layout:\n%s", got)
	}
}
