package metrics

import (
	"net/http/httptest"
	"testing"

	"github.com/offq/offq/bus"
)

// TestBridgeMetrics: a bridge's counters are served labelled by its id, not by the
// participant's name, with the connection state, the reconnect buffer and the refusals.
func TestBridgeMetrics(t *testing.T) {
	dir := t.TempDir()
	b := populate(t, dir)
	b.RecordBridgeCounters(bus.BridgeCounters{ID: "eu-west-1", Forwarded: 3, Imported: 2, Dropped: 1, Reconnects: 4,
		Disconnects: 5, Mismatched: 6, Looped: 7, Gaps: 8, Pending: 9, Connected: false})
	c := NewCollector(Options{Dir: dir})
	defer c.Close()
	srv := httptest.NewServer(Handler(c, nil))
	defer srv.Close()
	s, _, _ := scrape(t, srv.URL+"/metrics")
	for name, want := range map[string]float64{
		"offq_bridge_forwarded_total":   3,
		"offq_bridge_imported_total":    2,
		"offq_bridge_dropped_total":     1,
		"offq_bridge_reconnects_total":  4,
		"offq_bridge_disconnects_total": 5,
		"offq_bridge_mismatched_total":  6,
		"offq_bridge_looped_total":      7,
		"offq_bridge_gaps_total":        8,
		"offq_bridge_pending_messages":  9,
		"offq_bridge_connected":         0,
	} {
		if got := s.with(name, "bridge=eu-west-1"); len(got) != 1 {
			t.Errorf("%s{bridge=\"eu-west-1\"}: %v", name, s.with(name))
			continue
		}
		if v := s.one(t, name, "bridge=eu-west-1"); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
}
