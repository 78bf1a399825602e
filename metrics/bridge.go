package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/offq/offq/bridge"
)

// BridgeSource is what BridgeCollector reads: a *bridge.Bridge.
type BridgeSource interface {
	ID() string
	Stats() bridge.Stats
}

// Bridge metrics: label bridge (the bridge's instance id). They are served by
// BridgeCollector, not by Collector, and documented in docs/distributed.md.
var (
	mBridgeForwarded = newMetric("offq_bridge_forwarded_total", counter,
		"Local messages the bridge published to NATS.", "bridge")
	mBridgeImported = newMetric("offq_bridge_imported_total", counter,
		"NATS messages the bridge published on the local bus.", "bridge")
	mBridgeDropped = newMetric("offq_bridge_dropped_total", counter,
		"Messages the bridge lost: local queue overflow, NATS refusal, slow consumer, local refusal.", "bridge")
	mBridgeMismatched = newMetric("offq_bridge_mismatched_total", counter,
		"Imported messages refused because their type differs from the local topic's.", "bridge")
	mBridgeLooped = newMetric("offq_bridge_looped_total", counter,
		"Messages not forwarded because the bridge itself imported or sent them.", "bridge")
	mBridgeReconnects = newMetric("offq_bridge_reconnects_total", counter,
		"NATS reconnections of the bridge.", "bridge")
	mBridgeDisconnects = newMetric("offq_bridge_disconnects_total", counter,
		"NATS disconnections of the bridge.", "bridge")
	mBridgeConnected = newMetric("offq_bridge_connected", gauge,
		"1 if the bridge's NATS connection is up, else 0.", "bridge")

	bridgeMetrics = []*metric{mBridgeForwarded, mBridgeImported, mBridgeDropped, mBridgeMismatched,
		mBridgeLooped, mBridgeReconnects, mBridgeDisconnects, mBridgeConnected}
)

// BridgeCollector is a prometheus.Collector over one bridge's counters (bridge.Stats), read
// at each scrape. It is safe for concurrent use by multiple goroutines.
type BridgeCollector struct{ src BridgeSource }

// NewBridgeCollector returns a Collector over src's counters, labelled with src.ID().
func NewBridgeCollector(src BridgeSource) *BridgeCollector { return &BridgeCollector{src: src} }

// Describe implements prometheus.Collector.
func (c *BridgeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range bridgeMetrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (c *BridgeCollector) Collect(ch chan<- prometheus.Metric) {
	s, id := c.src.Stats(), c.src.ID()
	connected := 0.0
	if s.Connected {
		connected = 1
	}
	for _, v := range []struct {
		m *metric
		v float64
	}{
		{mBridgeForwarded, float64(s.Forwarded)}, {mBridgeImported, float64(s.Imported)},
		{mBridgeDropped, float64(s.Dropped)}, {mBridgeMismatched, float64(s.Mismatched)},
		{mBridgeLooped, float64(s.Looped)}, {mBridgeReconnects, float64(s.Reconnects)},
		{mBridgeDisconnects, float64(s.Disconnects)}, {mBridgeConnected, connected},
	} {
		ch <- prometheus.MustNewConstMetric(v.m.desc, v.m.typ, v.v, id)
	}
}
