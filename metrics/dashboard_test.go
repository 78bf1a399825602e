package metrics

import (
	"encoding/json"
	"fmt"
	"github.com/offq/offq/bus"
	"github.com/offq/offq/transport"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

const dashboardPath = "../docs/grafana/offq.json"

var (
	metricName = regexp.MustCompile(`offq_[a-z_]+`)
	matcher    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	grouping   = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// served scrapes a populated region through Handler, as offq exporter serves it, and returns
// the metric names and the label names it serves.
func served(t *testing.T) (names, labels map[string]bool) {
	t.Helper()
	dir := t.TempDir()
	b := populate(t, dir)
	b.RecordBridgeCounters(bus.BridgeCounters{Forwarded: 3, Imported: 2, Dropped: 1}) // as a NATS bridge would
	ringBus(t, dir)
	c := NewCollector(Options{Dir: dir})
	defer c.Close()
	srv := httptest.NewServer(Handler(c, nil))
	defer srv.Close()
	s, names, _ := scrape(t, srv.URL+"/metrics")
	labels = map[string]bool{}
	for k := range s {
		_, ls, _ := strings.Cut(k, "{")
		for _, m := range matcher.FindAllStringSubmatch(ls, -1) {
			labels[m[1]] = true
		}
	}
	for _, m := range append(regionMetrics, collectorMetrics...) {
		if !names[m.name] {
			t.Errorf("%s is in the metric table but not served", m.name)
		}
		if m.hist && names[m.name] { // its series are name_bucket, name_sum, name_count
			for _, n := range histSeries(m.name) {
				names[n] = true
			}
		}
	}
	return names, labels
}

// histSeries returns the names of a histogram's series.
func histSeries(name string) []string {
	return []string{name + "_bucket", name + "_sum", name + "_count"}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

// expressions returns every PromQL expression of the dashboard, with where it is.
func (d *dashboard) expressions(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 || len(p.Datasource) == 0 {
				t.Errorf("panel %q has no targets or no datasource", p.Title)
			}
			for i, tg := range p.Targets {
				out[fmt.Sprintf("panel %q target %d", p.Title, i)] = tg.Expr
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Errorf("variable %s: query %s", v.Name, v.Query)
			}
		}
		out["variable "+v.Name] = q.Query
	}
	return out
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 || len(d.Panels) == 0 {
		t.Fatalf("%s: not a dashboard (uid %q, title %q, schemaVersion %d, %d panels)", dashboardPath, d.UID, d.Title, d.SchemaVersion, len(d.Panels))
	}
	return &d
}

// TestDashboardUsesServedMetrics: every expression of docs/grafana/offq.json names only metrics
// and labels the exporter serves, and the dashboard shows what the issue asks for.
func TestDashboardUsesServedMetrics(t *testing.T) {
	names, labels := served(t)
	d := loadDashboard(t)
	exprs := d.expressions(t)
	used := map[string]bool{}
	for where, e := range exprs {
		found := metricName.FindAllString(e, -1)
		if len(found) == 0 {
			t.Errorf("%s: %q names no offq metric", where, e)
		}
		for _, n := range found {
			used[n] = true
			if !names[n] {
				t.Errorf("%s: %q uses %s, which the exporter does not serve", where, e, n)
			}
		}
		var ls []string
		for _, m := range matcher.FindAllStringSubmatch(e, -1) {
			ls = append(ls, m[1])
		}
		for _, m := range grouping.FindAllStringSubmatch(e, -1) {
			for _, l := range strings.Split(m[1], ",") {
				ls = append(ls, strings.TrimSpace(l))
			}
		}
		for _, l := range ls {
			if !labels[l] {
				t.Errorf("%s: %q uses label %q, which no served metric has", where, e, l)
			}
		}
	}
	for _, n := range []string{
		"offq_inbox_depth", "offq_messages_dropped_total", "offq_pool_buffers_in_use", "offq_pool_buffers",
		"offq_topic_messages_published_total", "offq_inbox_delivered_total", "offq_participants", "offq_reclaims_total",
		"offq_topic_buffers_in_use", "offq_participant_buffers_held", "offq_message_age_seconds_bucket",
	} {
		if !used[n] {
			t.Errorf("the dashboard does not show %s", n)
		}
	}
}

// TestDashboardExpressionsParse has promtool parse every expression, as recording rules, with
// Grafana's variables replaced by values.
func TestDashboardExpressionsParse(t *testing.T) {
	promtool := needPromtool(t)
	d := loadDashboard(t)
	vars := strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h", "$bus", ".*", "$topic", ".*")
	var keys []string
	exprs := d.expressions(t)
	for k := range exprs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("groups:\n- name: dashboard\n  rules:\n")
	for i, k := range keys {
		e := exprs[k]
		if strings.HasPrefix(k, "variable ") {
			// label_values(m, l) is Grafana's, not PromQL: check its selector.
			e = strings.TrimSuffix(strings.TrimPrefix(e, "label_values("), ")")
			e = e[:strings.LastIndexByte(e, ',')]
		}
		q, _ := json.Marshal(vars.Replace(e))
		fmt.Fprintf(&b, "  - record: dashboard:expr%d\n    expr: %s\n", i, q)
	}
	path := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s\n%s", err, out, b.String())
	}
}

// needPromtool returns promtool's path. Without it the test is skipped, unless CI=true, where
// it fails: CI installs it (Debian package prometheus).
func needPromtool(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found; install the Debian package prometheus")
		}
		t.Skip("promtool not found (Debian package prometheus); CI=true makes this a failure")
	}
	return p
}

// ringBus opens bus "ring" in dir, whose topic r.x has a slot ring (the golden bus's one
// class is too small for one), open until the test ends: offq_topic_ring_slots is served for
// it.
func ringBus(t *testing.T, dir string) {
	t.Helper()
	cfg := transport.Config{
		Classes: []transport.Class{{Size: 4096, Count: 8}},
		Inboxes: 4, InboxCapacity: 4, Topics: 4, Participants: 4, Held: 8,
	}
	b, err := bus.Open("ring", bus.WithDir(dir), bus.WithConfig(cfg), bus.WithName("ringer"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	p, err := b.Publisher("r.x", bus.WithSlotRing(8, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
}

// TestDocsListEveryMetric: docs/metrics.md describes every served metric, and names no other.
func TestDocsListEveryMetric(t *testing.T) {
	b, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	all := append(slices.Clone(regionMetrics), collectorMetrics...)
	known := map[string]bool{}
	for _, m := range all {
		known[m.name] = true
		if m.hist {
			for _, n := range histSeries(m.name) {
				known[n] = true
			}
		}
		if !strings.Contains(doc, "### `"+m.name+"`") {
			t.Errorf("docs/metrics.md has no section \"### `%s`\"", m.name)
		}
		for _, l := range m.labels {
			if !strings.Contains(doc, "`"+l+"`") {
				t.Errorf("docs/metrics.md does not mention label %s of %s", l, m.name)
			}
		}
	}
	for _, n := range metricName.FindAllString(doc, -1) {
		if !known[n] {
			t.Errorf("docs/metrics.md names %s, which is not served", n)
		}
	}
}

// TestDocsAlertRules has promtool check the rules file docs/metrics.md suggests.
func TestDocsAlertRules(t *testing.T) {
	promtool := needPromtool(t)
	b, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "## Alerting rules")
	if !ok {
		t.Fatal(`docs/metrics.md has no "## Alerting rules" section`)
	}
	_, rest, ok = strings.Cut(rest, "```yaml\n")
	rules, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 || !strings.Contains(rules, "alert: ") {
		t.Fatal("no yaml block of alerting rules under \"## Alerting rules\"")
	}
	path := filepath.Join(t.TempDir(), "offq.rules.yml")
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}
