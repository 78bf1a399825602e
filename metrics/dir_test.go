package metrics

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/transport"
)

func smallConfig() transport.Config {
	return transport.Config{
		Classes: []transport.Class{{Size: 64, Count: 4}},
		Inboxes: 2, InboxCapacity: 2, Topics: 2, Participants: 2, Held: 4,
	}
}

// createRegion creates region name in dir and publishes n messages on topic "t" through it.
func createRegion(t *testing.T, dir, name string, n int) {
	t.Helper()
	b, err := bus.Open(name, bus.WithDir(dir), bus.WithConfig(smallConfig()), bus.WithName("maker"), bus.WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pub, err := b.Publisher("t")
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := pub.Publish(context.Background(), []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
}

func registry(c *Collector) *prometheus.Registry {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	return reg
}

// TestDirectoryFollowsRegions: regions that appear are exported at the next scrape, removed
// ones leave it (and their mapping is dropped), and a region re-created under the same name
// is read afresh rather than through the old mapping.
func TestDirectoryFollowsRegions(t *testing.T) {
	dir := t.TempDir()
	c := NewCollector(Options{Dir: dir})
	defer c.Close()
	reg := registry(c)
	published := func(s samples, bus string) float64 {
		return s.with("offq_topic_messages_published_total", "bus="+bus)[`offq_topic_messages_published_total{bus="`+bus+`",topic="t"}`]
	}

	s := gatherValues(t, reg)
	if s.one(t, "offq_collector_regions") != 0 {
		t.Fatalf("empty directory: %v", s)
	}

	createRegion(t, dir, "one", 1)
	createRegion(t, dir, "two", 2)
	s = gatherValues(t, reg)
	if s.one(t, "offq_collector_regions") != 2 || published(s, "one") != 1 || published(s, "two") != 2 {
		t.Fatalf("two regions: %v", s)
	}

	if err := transport.Unlink(dir, "one"); err != nil {
		t.Fatal(err)
	}
	s = gatherValues(t, reg)
	if s.one(t, "offq_collector_regions") != 1 || len(s.with("offq_region_size_bytes", "bus=one")) != 0 {
		t.Fatalf("after removing one: %v", s)
	}
	if _, ok := c.src.(*dirSource).open["one"]; ok {
		t.Error("the removed region is still mapped")
	}

	// Re-created: a new file under the old name, which the collector must map anew.
	if err := transport.Unlink(dir, "two"); err != nil {
		t.Fatal(err)
	}
	createRegion(t, dir, "two", 5)
	s = gatherValues(t, reg)
	if published(s, "two") != 5 {
		t.Fatalf("re-created region: published %v, want 5", published(s, "two"))
	}
}

// TestDirectoryNamedBus exports only the bus named, and nothing while it does not exist.
func TestDirectoryNamedBus(t *testing.T) {
	dir := t.TempDir()
	c := NewCollector(Options{Dir: dir, Bus: "two"})
	defer c.Close()
	reg := registry(c)
	createRegion(t, dir, "one", 1)
	if s := gatherValues(t, reg); s.one(t, "offq_collector_regions") != 0 {
		t.Fatalf("before it exists: %v", s)
	}
	createRegion(t, dir, "two", 2)
	s := gatherValues(t, reg)
	if s.one(t, "offq_collector_regions") != 1 || len(s.with("offq_region_size_bytes", "bus=one")) != 0 ||
		len(s.with("offq_region_size_bytes", "bus=two")) != 1 {
		t.Fatalf("named bus: %v", s)
	}
}

// TestDirectoryOpenFailures: a file that looks like a region but is not one is counted (each
// scrape) and logged, and does not hide the good regions; a missing directory exports nothing.
func TestDirectoryOpenFailures(t *testing.T) {
	dir := t.TempDir()
	createRegion(t, dir, "good", 1)
	// The magic number of a region, and nothing else: List takes it for one, Open refuses it.
	src, err := os.ReadFile(filepath.Join(dir, "good"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad"), src[:64], 0o600); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	c := NewCollector(Options{Dir: dir, Logger: zap.New(core)})
	defer c.Close()
	reg := registry(c)
	for i := 1; i <= 2; i++ {
		s := gatherValues(t, reg)
		if s.one(t, "offq_collector_regions") != 1 || s.one(t, "offq_collector_open_failures_total") != float64(i) {
			t.Fatalf("scrape %d: %v", i, s)
		}
	}
	if logs.Len() != 1 || !strings.Contains(logs.All()[0].ContextMap()["error"].(string), "corrupt") {
		t.Errorf("want one warning about the corrupt region, got %v", logs.All())
	}

	gone := NewCollector(Options{Dir: filepath.Join(dir, "missing")})
	defer gone.Close()
	if s := gatherValues(t, registry(gone)); s.one(t, "offq_collector_regions") != 0 {
		t.Fatalf("missing directory: %v", s)
	}
}

// TestCollectorClose: a closed collector unmaps everything and exports no region.
func TestCollectorClose(t *testing.T) {
	dir := t.TempDir()
	createRegion(t, dir, "one", 1)
	c := NewCollector(Options{Dir: dir})
	reg := registry(c)
	if s := gatherValues(t, reg); s.one(t, "offq_collector_regions") != 1 {
		t.Fatalf("before Close: %v", s)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if len(c.src.(*dirSource).open) != 0 {
		t.Error("regions still mapped after Close")
	}
	if s := gatherValues(t, reg); s.one(t, "offq_collector_regions") != 0 {
		t.Fatalf("after Close: %v", s)
	}
}
