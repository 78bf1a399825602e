package metrics

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/shm"
	"github.com/offq/offq/transport"
)

// goldenConfig is small enough that the golden scenario exhausts the pool.
func goldenConfig() transport.Config {
	return transport.Config{
		Classes: []transport.Class{{Size: 256, Count: 8}},
		Inboxes: 4, InboxCapacity: 8, Topics: 4, Participants: 4, HistoryDepth: 0, Held: 16,
	}
}

// populate opens bus "golden" in dir and drives it into the state testdata/golden.prom
// describes; the bus stays open until the test ends.
//
//	inbox 0  a.>  depth 4, drop oldest   a.b x6: delivered 6, 2 evicted; 2 received -> depth 2
//	inbox 1  a.b  depth 2, drop newest   a.b x6: delivered 2, 4 refused             -> depth 2
//	inbox 2  c.*  depth 2, block 1ms     c.x x3: delivered 2, 1 timed out          -> depth 2
//
// Another participant then exhausts the pool of 8 with two loans and a third that fails (1
// allocation failure; the high-water mark is sampled at exhaustion: 8, so the low-water mark
// is 0), and detaches, which ends its loans: 6 buffers stay in use, the ones queued.
func populate(t testing.TB, dir string) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := bus.Open("golden", bus.WithDir(dir), bus.WithConfig(goldenConfig()), bus.WithName("tester"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	s1, err := b.Subscribe("a.>", bus.WithQueueDepth(4))
	must(err)
	_, err = b.Subscribe("a.b", bus.WithQueueDepth(2), bus.WithOverflow(bus.DropNewest))
	must(err)
	_, err = b.Subscribe("c.*", bus.WithQueueDepth(2), bus.WithOverflow(bus.Block), bus.WithBlockLimit(time.Millisecond))
	must(err)
	ab, err := b.Publisher("a.b")
	must(err)
	cx, err := b.Publisher("c.x")
	must(err)
	for range 6 {
		must(ab.Publish(ctx, make([]byte, 10)))
	}
	for range 2 {
		m, err := s1.Receive(ctx)
		must(err)
		must(m.Release())
	}
	for range 3 {
		must(cx.Publish(ctx, make([]byte, 100)))
	}
	// Exhaust the pool through transport: bus's Loan retries once after reaping when the pool
	// is exhausted, which would count a second failure.
	r, err := shm.Open("golden", shm.Options{Dir: dir})
	must(err)
	defer r.Close()
	p, err := r.Attach("exhauster")
	must(err)
	for range 2 {
		_, err := p.Loan(1)
		must(err)
	}
	if _, err := p.Loan(1); !errors.Is(err, shm.ErrPoolExhausted) {
		t.Fatalf("third loan from a full pool: %v", err)
	}
	must(p.Detach()) // ends its two loans
	return b
}

// regionMetricNames lists the metrics the golden file pins: all of a region's except its size
// and creation time, and the message ages, which are checked apart.
func regionMetricNames() []string {
	var out []string
	for _, m := range regionMetrics {
		if m != mRegionSize && m != mRegionCreated && m != mMessageAge {
			out = append(out, m.name)
		}
	}
	return out
}

func golden(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "golden.prom"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func openReadOnly(t *testing.T, dir, name string) *transport.Region {
	t.Helper()
	r, err := transport.Open(name, transport.Options{Dir: dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestCollectorGolden checks the three ways of collecting one bus against the same text: a
// region opened read-only, the bus's own region, and a collector over the directory.
func TestCollectorGolden(t *testing.T) {
	dir := t.TempDir()
	b := populate(t, dir)
	want := golden(t)

	dc := NewCollector(Options{Dir: dir})
	defer dc.Close()
	for name, c := range map[string]*Collector{
		"read-only region":  NewRegionCollector(openReadOnly(t, dir, "golden")),
		"read-write region": NewRegionCollector(openReadWrite(t, b)),
		"directory":         dc,
	} {
		if err := testutil.CollectAndCompare(c, strings.NewReader(want), regionMetricNames()...); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	// The directory collector also says how many regions it exported and failed to open.
	os.WriteFile(filepath.Join(dir, "not-a-region"), []byte("hello"), 0o600)
	if err := testutil.CollectAndCompare(dc, strings.NewReader(`
# HELP offq_collector_open_failures_total Times the collector found a region it could not open (not a valid region, another user's, unreadable).
# TYPE offq_collector_open_failures_total counter
offq_collector_open_failures_total 0
# HELP offq_collector_regions Regions the collector exported at this scrape.
# TYPE offq_collector_regions gauge
offq_collector_regions 1
`), "offq_collector_regions", "offq_collector_open_failures_total"); err != nil {
		t.Error(err)
	}
}

// TestMessageAgeHistogram: offq_message_age_seconds counts, per subscription, the messages
// received (2 on inbox 0 of the golden bus, none on the others), in cumulative buckets
// doubling from 1µs, with a positive sum (the test samples every take); offq_build_info is 1 with the build's labels.
func TestMessageAgeHistogram(t *testing.T) {
	defer shm.SampleEveryAgeForTest()()
	dir := t.TempDir()
	populate(t, dir)
	c := NewCollector(Options{Dir: dir})
	defer c.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen, info := 0, false
	for _, mf := range mfs {
		switch mf.GetName() {
		case "offq_build_info":
			for _, m := range mf.GetMetric() {
				ls := map[string]string{}
				for _, l := range m.GetLabel() {
					ls[l.GetName()] = l.GetValue()
				}
				if m.GetGauge().GetValue() != 1 || ls["version"] == "" || ls["goversion"] != runtime.Version() {
					t.Errorf("offq_build_info %v = %v", ls, m.GetGauge().GetValue())
				}
				info = true
			}
		case "offq_message_age_seconds":
			if mf.GetType().String() != "HISTOGRAM" {
				t.Fatalf("offq_message_age_seconds is a %v", mf.GetType())
			}
			for _, m := range mf.GetMetric() {
				seen++
				var inbox string
				for _, l := range m.GetLabel() {
					if l.GetName() == "inbox" {
						inbox = l.GetValue()
					}
				}
				h := m.GetHistogram()
				want := uint64(0)
				if inbox == "0" {
					want = 2
				}
				if h.GetSampleCount() != want || (want > 0) != (h.GetSampleSum() > 0) {
					t.Errorf("inbox %s: %d ages summing to %gs, want %d", inbox, h.GetSampleCount(), h.GetSampleSum(), want)
				}
				bs := h.GetBucket()
				if len(bs) != 24 || bs[0].GetUpperBound() != 1e-6 || bs[23].GetUpperBound() != float64(1<<23)*1e-6 {
					t.Fatalf("inbox %s: buckets %v", inbox, bs)
				}
				for i := range bs {
					if bs[i].GetCumulativeCount() > h.GetSampleCount() || i > 0 && bs[i].GetCumulativeCount() < bs[i-1].GetCumulativeCount() {
						t.Errorf("inbox %s: buckets %v not cumulative up to %d", inbox, bs, h.GetSampleCount())
					}
				}
			}
		}
	}
	if seen != 3 || !info {
		t.Errorf("%d age histograms (want one per subscription: 3), build info served: %v", seen, info)
	}
}

func TestCollectorRegionSizeAndCreated(t *testing.T) {
	dir := t.TempDir()
	b := populate(t, dir)
	r := openReadWrite(t, b)
	c := NewRegionCollector(r)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	s, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	got := gatherValues(t, reg)
	if v := got[`offq_region_size_bytes{bus="golden"}`]; v != float64(s.Size) || v == 0 {
		t.Errorf("offq_region_size_bytes %v, region is %d bytes", v, s.Size)
	}
	created := got[`offq_region_created_timestamp_seconds{bus="golden"}`]
	if d := time.Since(time.Unix(0, int64(created*1e9))); d < 0 || d > time.Minute {
		t.Errorf("offq_region_created_timestamp_seconds %v is %v ago", created, d)
	}
}

// TestCollectorLint runs promlint (the checks promtool check metrics makes) on a populated
// region's metrics.
func TestCollectorLint(t *testing.T) {
	dir := t.TempDir()
	populate(t, dir)
	c := NewCollector(Options{Dir: dir})
	defer c.Close()
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// TestLabelValuesFromLongNames: a participant name longer than the 32 bytes the region keeps
// is cut at a character boundary, and makes a valid scrape. (Names that a hostile process
// writes as invalid UTF-8 are repaired by label; see TestLabelRepairsInvalidUTF8.)
func TestLabelValuesFromLongNames(t *testing.T) {
	dir := t.TempDir()
	name := strings.Repeat("x", 31) + "é" // the 'é' does not fit: cut before it
	b, err := bus.Open("utf8", bus.WithDir(dir), bus.WithConfig(goldenConfig()), bus.WithName(name))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Subscribe("a"); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewRegionCollector(openReadWrite(t, b)))
	got := gatherValues(t, reg)
	want := `offq_inbox_depth{bus="utf8",inbox="0",pattern="a",subscriber="` + strings.Repeat("x", 31) + `"}`
	if _, ok := got[want]; !ok {
		t.Errorf("no %s in %v", want, got)
	}
}

// TestTopicSubscribers counts the open subscriptions whose pattern matches each topic.
func TestTopicSubscribers(t *testing.T) {
	s := &transport.Stats{
		Topics: []transport.TopicStats{{Name: "a.b"}, {Name: "a.b.c"}, {Name: "x"}},
		Inboxes: []transport.InboxStats{
			{Pattern: "a.>"}, {Pattern: "a.>"}, {Pattern: "a.*"}, {Pattern: "a.b.c"}, {Pattern: ">"}, {Pattern: "bad..pattern"},
		},
	}
	got := topicSubscribers(s)
	if want := []int{4, 4, 1}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("topicSubscribers = %v, want %v", got, want)
	}
}

// TestCollectorDuplicateTopic: a damaged table with two entries of one name does not break
// the scrape (a registry refuses two series with the same labels).
func TestCollectorDuplicateTopic(t *testing.T) {
	s := transport.Stats{Name: "dup", Topics: []transport.TopicStats{{Name: "a", Published: 1}, {Name: "a", Published: 2}}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(&Collector{src: fixedSource{s}})
	got := gatherValues(t, reg)
	if v := got[`offq_topic_messages_published_total{bus="dup",topic="a"}`]; v != 1 {
		t.Errorf("published %v, want the first entry's 1", v)
	}
}

type fixedSource struct{ s transport.Stats }

func (f fixedSource) snapshots() ([]transport.Stats, []prometheus.Metric) {
	return []transport.Stats{f.s}, nil
}
func (fixedSource) describesCollector() bool { return false }
func (fixedSource) close() error             { return nil }

// TestLabelRepairsInvalidUTF8: bytes a hostile process wrote into a name are not valid UTF-8;
// the label value replaces them rather than breaking the scrape.
func TestLabelRepairsInvalidUTF8(t *testing.T) {
	if got := label("ab\xc3"); got != "ab\uFFFD" {
		t.Fatalf("label(%q) = %q", "ab\xc3", got)
	}
	if got := label("ok é"); got != "ok é" {
		t.Fatalf("label changed a valid string: %q", got)
	}
}

// openReadWrite maps the region b is attached to again, as a tool would.
func openReadWrite(t *testing.T, b *bus.Bus) *transport.Region {
	t.Helper()
	r, err := transport.Open(b.Name(), transport.Options{Dir: filepath.Dir(b.Path())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestSeriesPerTableEntry counts the series one scrape serves for each entry of a region's
// tables (the bus itself, a size class, a topic, a topic and class, a topic with a slot ring,
// a participant and class, a bridge, an inbox) and checks them, and the worst case they give
// for the default configuration, against the cardinality paragraph of docs/metrics.md: a
// metric or a label value added without a word there fails here.
func TestSeriesPerTableEntry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := transport.Config{
		Classes: []transport.Class{{Size: 256, Count: 64}, {Size: 16 << 10, Count: 4}},
		Inboxes: 4, InboxCapacity: 4, Topics: 4, Participants: 4, HistoryDepth: 0, Held: 16,
	}
	b, err := bus.Open("series", bus.WithDir(t.TempDir()), bus.WithConfig(cfg), bus.WithName("tester"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.RecordBridgeCounters(bus.BridgeCounters{ID: "br"})
	for _, pattern := range []string{"s.a", "s.>"} {
		s, err := b.Subscribe(pattern)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	ring, err := b.Publisher("s.a", bus.WithSlotRing(8, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	plain, err := b.Publisher("s.b")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	for _, p := range []*bus.Publisher{ring, plain} {
		if err := p.Publish(ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}

	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(NewRegionCollector(openReadOnly(t, filepath.Dir(b.Path()), "series"))); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// Each series goes to the table entry its labels name; a histogram is its buckets (with
	// +Inf), _sum and _count.
	entries := map[string]map[string]int{} // kind → entry → series
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			n := 1
			if h := m.GetHistogram(); h != nil {
				n = len(h.GetBucket()) + 2
				if bs := h.GetBucket(); len(bs) == 0 || !math.IsInf(bs[len(bs)-1].GetUpperBound(), 1) {
					n++
				}
			}
			var kind, key string
			switch _, cl := l["class"]; {
			case l["inbox"] != "":
				kind, key = "inbox", l["inbox"]
			case l["bridge"] != "":
				kind, key = "bridge", l["bridge"]
			case l["participant"] != "" && cl:
				kind, key = "participant and class", l["participant"]+"/"+l["class"]
			case l["topic"] != "" && cl:
				kind, key = "topic and class", l["topic"]+"/"+l["class"]
			case mf.GetName() == "offq_topic_ring_slots":
				kind, key = "topic with a ring", l["topic"]
			case l["topic"] != "":
				kind, key = "topic", l["topic"]
			case cl:
				kind, key = "class", l["class"]
			default:
				kind, key = "bus", l["bus"]
			}
			if entries[kind] == nil {
				entries[kind] = map[string]int{}
			}
			entries[kind][key] += n
		}
	}
	per := map[string]int{}
	for kind, want := range map[string]int{"bus": 1, "class": 2, "topic": 2, "topic and class": 4, "topic with a ring": 1,
		"participant and class": 2, "bridge": 1, "inbox": 2} {
		es := entries[kind]
		if len(es) != want {
			t.Errorf("%d entries of kind %q serve series (%v), want %d", len(es), kind, es, want)
		}
		for e, n := range es {
			if p, ok := per[kind]; ok && p != n {
				t.Errorf("%s %q: %d series, another %d", kind, e, n, p)
			}
			per[kind] = n
		}
	}
	for kind := range entries {
		if _, ok := per[kind]; !ok {
			t.Errorf("series of an unexpected kind %q: %v", kind, entries[kind])
		}
	}

	// The default configuration, 16 participants, none a bridge, every topic with a ring.
	def := transport.DefaultConfig()
	classes, topics, inboxes, parts := len(def.Classes), int(def.Topics), int(def.Inboxes), 16
	total := per["bus"] + classes*per["class"] + topics*per["topic"] + topics*classes*per["topic and class"] +
		topics*per["topic with a ring"] + parts*classes*per["participant and class"] + inboxes*per["inbox"]
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(doc)), " ")
	thousands := func(n int) string {
		s := strconv.Itoa(n)
		for i := len(s) - 3; i > 0; i -= 3 {
			s = s[:i] + "," + s[i:]
		}
		return s
	}
	for _, want := range []string{
		fmt.Sprintf("per bus %d region series, %d per size class", per["bus"], per["class"]),
		fmt.Sprintf("%d per topic plus %d per topic and class, and %d more per topic with a slot ring", per["topic"], per["topic and class"], per["topic with a ring"]),
		fmt.Sprintf("%d per attached participant and class", per["participant and class"]),
		fmt.Sprintf("%d per bridge and %d per open inbox", per["bridge"], per["inbox"]),
		fmt.Sprintf("(%d classes, %d topics, %d inboxes) and %d participants", classes, topics, inboxes, parts),
		fmt.Sprintf("%d + %s + %s + %s + %s + %s + %s = %s series per bus", per["bus"], thousands(classes*per["class"]),
			thousands(topics*per["topic"]), thousands(topics*classes*per["topic and class"]), thousands(topics*per["topic with a ring"]),
			thousands(parts*classes*per["participant and class"]), thousands(inboxes*per["inbox"]), thousands(total)),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("docs/metrics.md's cardinality paragraph does not say %q (series per entry counted: %v)", want, per)
		}
	}
}
