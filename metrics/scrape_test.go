package metrics

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Samples maps a series, written as in the text format (`name{a="x",b="y"}`, labels sorted by
// name), to its value.
type samples map[string]float64

// gatherValues gathers g and returns its samples (counters and gauges only).
func gatherValues(t testing.TB, g prometheus.Gatherer) samples {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := samples{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(ls)
			key := mf.GetName()
			if len(ls) > 0 {
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// parseText reads the Prometheus text format: every sample line, keyed as its series is
// written, and the names given a # TYPE.
func parseText(t testing.TB, r io.Reader) (samples, map[string]bool) {
	t.Helper()
	out, names := samples{}, map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			names[strings.Fields(rest)[0]] = true
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out, names
}

// testClient keeps no idle connections, whose goroutines goleak would report.
var testClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}

// scrape GETs url and parses the text it serves.
func scrape(t testing.TB, url string) (samples, map[string]bool, string) {
	t.Helper()
	resp, err := testClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v\n%s", url, resp.Status, err, body)
	}
	s, n := parseText(t, strings.NewReader(string(body)))
	return s, n, string(body)
}

// with returns the samples of metric name whose labels include every one of want
// ("key=value" pairs).
func (s samples) with(name string, want ...string) samples {
	out := samples{}
	for k, v := range s {
		metric, labels, _ := strings.Cut(k, "{")
		if metric != name {
			continue
		}
		ok := true
		for _, w := range want {
			lk, lv, _ := strings.Cut(w, "=")
			if !strings.Contains(labels, fmt.Sprintf("%s=%q", lk, lv)) {
				ok = false
			}
		}
		if ok {
			out[k] = v
		}
	}
	return out
}

// one returns the value of the single sample of metric name with the given labels, failing
// the test if there is not exactly one.
func (s samples) one(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	m := s.with(name, labels...)
	if len(m) != 1 {
		t.Fatalf("%s%v: %d samples, want 1: %v", name, labels, len(m), m)
	}
	for _, v := range m {
		return v
	}
	return 0
}
