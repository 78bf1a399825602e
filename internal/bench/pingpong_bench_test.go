package bench

// Two-process round trips under go test -bench, through the very code offq bench runs: each
// sub-benchmark is one of its ping-pong cases at 64 B, with b.N timed round trips after the
// warm-up instead of --duration. offq goes through package bus; the baselines (the raw
// shared-memory and futex floors of internal/floor, a Unix socket, pipes) are offq bench's
// own, and so are the line patterns of one offq message (floor.LinePingPong). Both loops are pinned to different CPUs (OFFQ_BENCH_PIN=0: not pinned).
// docs/performance.md has results.
//
//	go test -run='^$' -bench=PingPong -benchtime=200000x -count=3 ./internal/bench

import (
	"context"
	"os"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/offq/offq/internal/floor"
)

func BenchmarkPingPong(b *testing.B) {
	for _, tc := range []struct {
		name string
		c    benchCase
	}{
		{"raw-shm-spin", benchCase{System: sysShm, Mode: modeSpin}},
		{"raw-lines-offq", benchCase{System: sysLines, Mode: modeSpin}},
		{"raw-lines-head-only", benchCase{System: sysHead, Mode: modeSpin}},
		{"raw-payload-two-lines", benchCase{System: sysTwo, Mode: modeSpin}},
		{"raw-payload-inline", benchCase{System: sysIn, Mode: modeSpin}},
		{"raw-payload-slot-ring", benchCase{System: sysRing, Mode: modeSpin}},
		{"offq-busy-spin", benchCase{System: sysOffq, Mode: modeSpin}},
		{"offq-spin-then-sleep", benchCase{System: sysOffq, Mode: modeSleep}},
		{"raw-futex", benchCase{System: sysFutex, Mode: modeBlock}},
		{"offq-sleep", benchCase{System: sysOffq, Mode: modeBlock}},
		{"uds-64B", benchCase{System: sysUDS, Mode: modeBlock}},
		{"pipe-64B", benchCase{System: sysPipe, Mode: modeBlock}},
	} {
		tc.c.Pattern, tc.c.Size, tc.c.Subs = patPingPong, 64, 1
		b.Run(tc.name, func(b *testing.B) { benchPingPong(b, tc.c) })
	}
}

// benchPingPong runs c with b.N timed round trips and reports ns/rtt.
func benchPingPong(b *testing.B, c benchCase) {
	bn := &bencher{log: zap.NewNop(), tmp: b.TempDir(), cpus: [2]int{-1, -1},
		o: Options{warmup: 100 * time.Millisecond, duration: 10 * time.Minute}}
	if cpus, err := floor.CPUs(); err == nil && len(cpus) >= 2 && os.Getenv("OFFQ_BENCH_PIN") != "0" {
		bn.cpus = [2]int{cpus[0], cpus[1]}
	}
	b.ReportAllocs()
	bn.rounds = func(round func() error) error {
		b.ResetTimer()
		for range b.N {
			if err := round(); err != nil {
				return err
			}
		}
		b.StopTimer()
		return nil
	}
	if _, err := bn.run(context.Background(), c); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/rtt")
}
