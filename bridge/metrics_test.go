package bridge_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/offq/offq/bridge"
	"github.com/offq/offq/metrics"
)

type fakeBridge struct{ s bridge.Stats }

func (f fakeBridge) ID() string          { return "host-a" }
func (f fakeBridge) Stats() bridge.Stats { return f.s }

func TestBridgeCollector(t *testing.T) {
	c := metrics.NewBridgeCollector(fakeBridge{bridge.Stats{
		Forwarded: 10, Imported: 7, Dropped: 2, Mismatched: 1, Looped: 7, Reconnects: 3, Disconnects: 4, Connected: true,
	}})
	want := `
# HELP offq_bridge_connected 1 if the bridge's NATS connection is up, else 0.
# TYPE offq_bridge_connected gauge
offq_bridge_connected{bridge="host-a"} 1
# HELP offq_bridge_dropped_total Messages the bridge lost: local queue overflow, NATS refusal, slow consumer, local refusal.
# TYPE offq_bridge_dropped_total counter
offq_bridge_dropped_total{bridge="host-a"} 2
# HELP offq_bridge_forwarded_total Local messages the bridge published to NATS.
# TYPE offq_bridge_forwarded_total counter
offq_bridge_forwarded_total{bridge="host-a"} 10
# HELP offq_bridge_reconnects_total NATS reconnections of the bridge.
# TYPE offq_bridge_reconnects_total counter
offq_bridge_reconnects_total{bridge="host-a"} 3
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"offq_bridge_connected", "offq_bridge_dropped_total", "offq_bridge_forwarded_total", "offq_bridge_reconnects_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c); n != 8 {
		t.Fatalf("%d metrics, want 8", n)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
}
