package metrics

import (
	"context"
	"net/http/httptest"
	"os"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/transport"
)

// TestRegisterOutlivesBus: the collector Register adds has a mapping of its own, so the bus
// may be closed while it stays registered; the bus is exported until its region is removed.
func TestRegisterOutlivesBus(t *testing.T) {
	dir := t.TempDir()
	b, err := bus.Open("svc", bus.WithDir(dir), bus.WithConfig(goldenConfig()), bus.WithName("svc"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Subscribe("x.>"); err != nil {
		t.Fatal(err)
	}
	// Another bus in the same directory is not this collector's business.
	createRegion(t, dir, "other", 1)

	reg := prometheus.NewPedanticRegistry()
	c, err := Register(reg, b)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := Register(reg, b); err == nil {
		t.Error("registering a second collector for the same bus succeeded")
	}
	s := gatherValues(t, reg)
	if s.one(t, "offq_participants", "bus=svc", "state=alive") != 1 || s.one(t, "offq_table_slots_used", "bus=svc", "table=inboxes") != 1 ||
		len(s.with("offq_region_size_bytes", "bus=other")) != 0 {
		t.Fatalf("registered: %v", s)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	s = gatherValues(t, reg)
	if s.one(t, "offq_participants", "bus=svc", "state=alive") != 0 || s.one(t, "offq_table_slots_used", "bus=svc", "table=inboxes") != 0 {
		t.Fatalf("after Close: %v", s)
	}
	if err := transport.Unlink(dir, "svc"); err != nil {
		t.Fatal(err)
	}
	if s = gatherValues(t, reg); s.one(t, "offq_collector_regions") != 0 {
		t.Fatalf("after removal: %v", s)
	}
	if !reg.Unregister(c) {
		t.Error("Unregister found no collector")
	}
}

// TestHandlerServesStandardMetrics: Handler serves the collector's metrics and the Go,
// process and handler metrics promhttp.Handler would.
func TestHandlerServesStandardMetrics(t *testing.T) {
	dir := t.TempDir()
	createRegion(t, dir, "one", 3)
	c := NewCollector(Options{Dir: dir})
	defer c.Close()
	srv := httptest.NewServer(Handler(c, nil))
	defer srv.Close()
	s, names, _ := scrape(t, srv.URL)
	for _, n := range []string{"offq_topic_messages_published_total", "go_goroutines", "process_cpu_seconds_total", "promhttp_metric_handler_requests_total"} {
		if !names[n] {
			t.Errorf("%s not served", n)
		}
	}
	if v := s.one(t, "offq_topic_messages_published_total", "bus=one", "topic=t"); v != 3 {
		t.Errorf("published %v, want 3", v)
	}
}

// TestConcurrentScrapes: scrapes from several goroutines while regions come and go and the
// collector is finally closed (run with -race).
func TestConcurrentScrapes(t *testing.T) {
	dir := t.TempDir()
	c := NewCollector(Options{Dir: dir})
	reg := registry(c)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := reg.Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := range 20 {
		name := []string{"a", "b", "c"}[i%3]
		if i%2 == 0 {
			createRegion(t, dir, name+"x", 1)
		} else {
			os.Remove(transport.Path(dir, []string{"a", "b", "c"}[(i-1)%3]+"x"))
		}
	}
	c.Close()
	close(stop)
	wg.Wait()
}

// TestTopicsFreedByAudit: a topic published on once, with no history, is counted while its
// bus is open and after it closes; the next bus.Open audits the idle region and frees it, and
// offq_table_slots_used{table="topics"} goes down.
func TestTopicsFreedByAudit(t *testing.T) {
	dir := t.TempDir()
	b, err := bus.Open("svc", bus.WithDir(dir), bus.WithConfig(goldenConfig()), bus.WithName("svc"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p, err := b.Publisher("sensors.tmep")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(context.Background(), []byte("1")); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	c, err := Register(reg, b)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s := gatherValues(t, reg); s.one(t, "offq_table_slots_used", "bus=svc", "table=topics") != 1 {
		t.Fatalf("with the publisher: %v", s)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if s := gatherValues(t, reg); s.one(t, "offq_table_slots_used", "bus=svc", "table=topics") != 1 {
		t.Fatalf("after Close: %v", s)
	}
	b2, err := bus.Open("svc", bus.WithDir(dir), bus.WithName("svc2"))
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if s := gatherValues(t, reg); s.one(t, "offq_table_slots_used", "bus=svc", "table=topics") != 0 {
		t.Fatalf("after the next open's audit: %v", s)
	}
}
