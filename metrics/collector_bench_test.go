package metrics

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/transport"
)

// BenchmarkCollect: one scrape (Gather) of a bus with the default configuration in use: 32
// topics, 16 subscriptions, traffic on every topic. It is what an exporter pays per scrape
// and per bus, in a process of its own.
func BenchmarkCollect(b *testing.B) {
	dir := b.TempDir()
	ctx := context.Background()
	bs, err := bus.Open("bench", bus.WithDir(dir), bus.WithConfig(transport.DefaultConfig()))
	if err != nil {
		b.Fatal(err)
	}
	defer bs.Close()
	for i := range 16 {
		if _, err := bs.Subscribe(fmt.Sprintf("t.%d.>", i), bus.WithQueueDepth(64)); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 32 {
		p, err := bs.Publisher(fmt.Sprintf("t.%d.x", i%16) + fmt.Sprint(i))
		if err != nil {
			b.Fatal(err)
		}
		for range 10 {
			p.Publish(ctx, make([]byte, 64))
		}
	}
	c := NewCollector(Options{Dir: dir})
	defer c.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStreamScraped is bus's BenchmarkStream (a publisher goroutine and a busy-spinning
// subscriber goroutine, 64 B messages, Block, two cores) while another process scrapes the
// bus through a collector over a read-only mapping, as offq exporter does: never, every
// 100 ms, 10 ms, 1 ms. Prometheus scrapes every 15 s or so; these intervals are 150 to 15000
// times more often, to make the cost of reading the counters visible at all. On a machine
// with two cores the scraping process also takes CPU time from the two busy goroutines.
func BenchmarkStreamScraped(b *testing.B) {
	if runtime.GOMAXPROCS(0) < 2 {
		b.Skip("needs two cores")
	}
	for _, every := range []time.Duration{0, 100 * time.Millisecond, 10 * time.Millisecond, time.Millisecond} {
		name := "scrape=never"
		if every > 0 {
			name = "scrape=" + every.String()
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			cfg := transport.DefaultConfig()
			cfg.Classes = []transport.Class{{Size: 256, Count: 4096}}
			bs, err := bus.Open("bench", bus.WithDir(dir), bus.WithConfig(cfg), bus.WithReapInterval(0))
			if err != nil {
				b.Fatal(err)
			}
			defer bs.Close()
			ctx := context.Background()
			sub, _ := bs.Subscribe("bench.s", bus.WithQueueDepth(1024), bus.WithOverflow(bus.Block), bus.WithWait(bus.BusySpin))
			pub, _ := bs.Publisher("bench.s")

			var scraper *peer.Proc
			if every > 0 {
				scraper = peer.Start(b, "scraper", "OFFQ_DIR="+dir, "OFFQ_EVERY="+every.String())
				if _, err := scraper.Expect("ready", 30*time.Second); err != nil {
					b.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() {
				for range b.N {
					m, err := sub.Receive(ctx)
					if err != nil {
						done <- err
						return
					}
					m.Release()
				}
				done <- nil
			}()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				l, err := pub.Loan(64)
				if err != nil {
					b.Fatal(err)
				}
				if err := pub.Send(ctx, l); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			if scraper != nil {
				scraper.CloseStdin()
				n, err := scraper.Expect("scrapes", 30*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				if err := scraper.Wait(30 * time.Second); err != nil {
					b.Fatal(err)
				}
				var scrapes int
				fmt.Sscan(n, &scrapes)
				b.ReportMetric(float64(scrapes)/el.Seconds(), "scrapes/s")
			}
		})
	}
}

// roleScraper: OFFQ_DIR, OFFQ_EVERY. Gathers a collector over OFFQ_DIR every OFFQ_EVERY
// after printing "ready", until its stdin is closed; then prints "scrapes N".
func roleScraper(c *peer.Child) error {
	every, err := time.ParseDuration(os.Getenv("OFFQ_EVERY"))
	if err != nil {
		return err
	}
	col := NewCollector(Options{Dir: os.Getenv("OFFQ_DIR")})
	defer col.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	if _, err := reg.Gather(); err != nil {
		return err
	}
	c.Send("ready")
	t := time.NewTicker(every)
	defer t.Stop()
	n := 0
	for {
		select {
		case <-c.Context().Done():
			c.Send("scrapes %d", n)
			return nil
		case <-t.C:
			if _, err := reg.Gather(); err != nil {
				return err
			}
			n++
		}
	}
}
