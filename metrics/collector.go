package metrics

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/offq/offq/topics"
	"github.com/offq/offq/transport"
)

// Collector is a prometheus.Collector over offq buses. At each scrape it takes one
// transport.Stats snapshot per region and turns it into constant metrics labelled with the
// bus's name, so that one Collector can serve every bus of a host. It reads the regions'
// counters and never attaches to a bus: scraping costs the buses' processes nothing but the
// cache lines it reads.
//
// A Collector is safe for concurrent use by multiple goroutines; concurrent scrapes are
// serialised.
type Collector struct {
	src source
}

// source yields the snapshots of one scrape, and the collector's own metrics.
type source interface {
	snapshots() ([]transport.Stats, []prometheus.Metric)
	describesCollector() bool
	close() error
}

// NewRegionCollector returns a Collector over one region this process has open: a region
// opened with transport.Options{ReadOnly: true}, or a bus's (for a bus, see Register). The Collector
// does not own r: keep r open for as long as the Collector is registered, since a scrape of a
// closed region reads unmapped memory. Close does not close r. To export a bus without tying
// the two lifetimes together, use Register or NewCollector.
func NewRegionCollector(r *transport.Region) *Collector {
	return &Collector{src: regionSource{r}}
}

type regionSource struct{ r *transport.Region }

func (s regionSource) snapshots() ([]transport.Stats, []prometheus.Metric) {
	st, err := s.r.Stats()
	if err != nil {
		return nil, []prometheus.Metric{failed(s.r.Name(), err)}
	}
	return []transport.Stats{st}, nil
}

// failed is what a scrape exports for a region it could not read (its file truncated: the
// read faulted): an invalid metric, which makes Gather report err beside the other regions'
// metrics (an HTTP handler with promhttp.ContinueOnError serves those and logs err).
func failed(bus string, err error) prometheus.Metric {
	return prometheus.NewInvalidMetric(mRegionSize.desc, fmt.Errorf("metrics: read region %q: %w", bus, err))
}

func (regionSource) describesCollector() bool { return false }
func (regionSource) close() error             { return nil }

// Close releases what the Collector holds: the read-only mappings NewCollector made. A closed
// Collector exports nothing. Close is idempotent.
func (c *Collector) Close() error { return c.src.close() }

// Describe implements prometheus.Collector. The descriptions are fixed: every region's metrics
// have the same names and label names, and the bus label tells the regions apart.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range regionMetrics {
		ch <- m.desc
	}
	if c.src.describesCollector() {
		for _, m := range collectorMetrics {
			ch <- m.desc
		}
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	stats, own := c.src.snapshots()
	for i := range stats {
		emit(ch, &stats[i])
	}
	for _, m := range own {
		ch <- m
	}
}

// emit sends the metrics of one region's snapshot.
func emit(ch chan<- prometheus.Metric, s *transport.Stats) {
	bus := label(s.Name)
	send := func(m *metric, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, v, labels...)
	}

	send(mRegionSize, float64(s.Size), bus)
	send(mRegionCreated, float64(s.Created.UnixNano())/1e9, bus)
	send(mReclaims, float64(s.Reclaims), bus)
	send(mSwept, float64(s.Swept), bus)
	send(mSweepRequests, float64(s.Sweep.Requests), bus)
	send(mSweepSteps, float64(s.Sweep.Steps), bus)
	send(mCorrupt, float64(s.Corrupt), bus)
	alive := 0
	for _, p := range s.Participants {
		if p.Alive {
			alive++
		}
	}
	for _, p := range s.Participants {
		if br := p.Bridge; br != nil {
			id := br.ID
			if id == "" {
				id = p.Name
			}
			l := []string{bus, label(id), strconv.Itoa(p.Index)}
			send(mBridgeForwarded, float64(br.Forwarded), l...)
			send(mBridgeImported, float64(br.Imported), l...)
			send(mBridgeDropped, float64(br.Dropped), l...)
			send(mBridgeReconnects, float64(br.Reconnects), l...)
			send(mBridgeDisconnects, float64(br.Disconnects), l...)
			connected := 0.0
			if br.Connected {
				connected = 1
			}
			send(mBridgeConnected, connected, l...)
			send(mBridgePending, float64(br.Pending), l...)
			send(mBridgeMismatched, float64(br.Mismatched), l...)
			send(mBridgeLooped, float64(br.Looped), l...)
			send(mBridgeGaps, float64(br.Gaps), l...)
		}
	}
	classes := make([]string, len(s.Pools))
	for i, p := range s.Pools {
		classes[i] = transport.Size(p.Size).String()
	}
	for _, p := range s.Participants {
		idx, pname := strconv.Itoa(p.Index), label(p.Name)
		for c, class := range classes {
			if c < len(p.Held) {
				send(mParticipantHeld, float64(p.Held[c]), bus, idx, pname, class)
			}
			if c < len(p.Loaned) {
				send(mParticipantLoaned, float64(p.Loaned[c]), bus, idx, pname, class)
			}
		}
	}
	send(mParticipants, float64(alive), bus, stateAlive)
	send(mParticipants, float64(len(s.Participants)-alive), bus, stateDead)
	for _, t := range []struct {
		table      string
		size, used int
	}{
		{tableParticipants, int(s.Config.Participants), len(s.Participants)},
		{tableInboxes, int(s.Config.Inboxes), len(s.Inboxes)},
		{tableTopics, int(s.Config.Topics), len(s.Topics)},
	} {
		send(mSlots, float64(t.size), bus, t.table)
		send(mSlotsUsed, float64(t.used), bus, t.table)
	}

	for _, p := range s.Pools {
		class := transport.Size(p.Size).String()
		send(mPoolBuffers, float64(p.Capacity), bus, class)
		send(mPoolInUse, float64(p.InUse), bus, class)
		send(mPoolLowWater, float64(p.LowWater), bus, class)
		send(mPoolAllocFails, float64(p.AllocFails), bus, class)
	}

	subs := topicSubscribers(s)
	seen := make(map[string]bool, len(s.Topics))
	for i, t := range s.Topics {
		name := label(t.Name)
		if seen[name] {
			continue // two entries of one name: only a damaged table has them
		}
		seen[name] = true
		send(mTopicPublished, float64(t.Published), bus, name)
		send(mTopicBytes, float64(t.Bytes), bus, name)
		send(mTopicSubscribers, float64(subs[i]), bus, name)
		send(mTopicPublishers, float64(t.Publishers), bus, name)
		rq := t.Requests
		send(mTopicRequests, float64(rq.Requests), bus, name)
		send(mTopicReplies, float64(rq.Replies), bus, name)
		send(mTopicRequestFailures, float64(rq.TimedOut), bus, name, reasonTimeout)
		send(mTopicRequestFailures, float64(rq.NoResponders), bus, name, reasonNoResponders)
		send(mTopicRequestFailures, float64(rq.ResponderDied), bus, name, reasonResponderDied)
		send(mTopicGroupDropped, float64(rq.GroupDropped), bus, name)
		if t.Ring != nil {
			send(mTopicRingSlots, float64(t.Ring.Slots), bus, name)
		}
		for c, class := range classes {
			if c < len(t.InUse) {
				send(mTopicInUse, float64(t.InUse[c]), bus, name, class)
			}
		}
	}

	for _, in := range s.Inboxes {
		lv := []string{bus, strconv.Itoa(in.ID.Index()), label(in.Pattern), label(in.OwnerName)}
		send(mInboxDepth, float64(in.Depth), lv...)
		send(mInboxCapacity, float64(in.Capacity), lv...)
		send(mInboxRingBehind, float64(in.RingDepth), lv...)
		send(mInboxBlocked, float64(in.Blocked), lv...)
		send(mInboxDelivered, float64(in.Pushed), lv...)
		send(mInboxReceived, float64(in.Popped), lv...)
		for _, d := range []struct {
			reason string
			n      uint64
		}{
			{reasonOldest, in.DropOldest}, {reasonNewest, in.DropNewest},
			{reasonTimeout, in.DropTimeout}, {reasonCorrupt, in.Corrupt},
		} {
			send(mDropped, float64(d.n), append(lv, d.reason)...)
		}
		ch <- ageHistogram(&in, lv)
	}
}

// ageHistogram turns an inbox's age counts (one per bucket, not cumulative, the last
// unbounded) into offq_message_age_seconds.
func ageHistogram(in *transport.InboxStats, lv []string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(in.AgeBuckets))
	var n uint64
	for i, c := range in.AgeBuckets {
		n += c
		if i < len(in.AgeBuckets)-1 {
			buckets[in.AgeBucketBound(i).Seconds()] = n
		}
	}
	return prometheus.MustNewConstHistogram(mMessageAge.desc, n, float64(in.AgeSumNanos)/1e9, buckets, lv...)
}

// buildInfo is offq_build_info's labels: the main module's version ("(devel)" when it has
// none: built from a checkout, or no build information) and the Go version.
var buildInfo = func() [2]string {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	return [2]string{v, runtime.Version()}
}()

// topicSubscribers returns, for each of s.Topics, how many open inboxes have a pattern that
// matches it. Inboxes sharing a pattern are matched once.
func topicSubscribers(s *transport.Stats) []int {
	patterns := make(map[string]int, len(s.Inboxes))
	for _, in := range s.Inboxes {
		if topics.ValidatePattern(in.Pattern) == nil {
			patterns[in.Pattern]++
		}
	}
	out := make([]int, len(s.Topics))
	for i, t := range s.Topics {
		for p, n := range patterns {
			if topics.Match(p, t.Name) {
				out[i] += n
			}
		}
	}
	return out
}

// label makes a string read from shared memory a valid label value. Names are checked when
// written, but a participant name cut at 32 bytes may end inside a UTF-8 sequence, and any
// process with write access may scribble on the region.
func label(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
