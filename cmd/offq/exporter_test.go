package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offq/offq/transport"
)

// exporterClient keeps no idle connections, whose goroutines goleak would report.
var exporterClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}

// runningExporter is offq exporter run in-process, as the command line would run it.
type runningExporter struct {
	url    string // http://host:port
	cancel context.CancelFunc
	done   chan int
	stderr *exporterOutput
}

// startExporter runs offq exporter with args on a free local port and returns once it serves.
func startExporter(t *testing.T, args ...string) *runningExporter {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	e := &runningExporter{cancel: cancel, done: make(chan int, 1), stderr: &exporterOutput{}}
	go func() {
		e.done <- run(ctx, append([]string{"exporter", "--listen", "127.0.0.1:0"}, args...), pw, e.stderr)
		pw.Close()
	}()
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		io.Copy(io.Discard, pr)
	}()
	t.Cleanup(func() { e.stop(t) })
	select {
	case l, ok := <-line:
		_, addr, found := strings.Cut(l, " at ")
		if !ok || !found || !strings.HasPrefix(addr, "http://") {
			t.Fatalf("exporter wrote %q first; stderr: %s", l, e.stderr)
		}
		e.url = strings.TrimSuffix(addr, "/metrics")
	case <-time.After(20 * time.Second):
		t.Fatal("exporter did not start")
	}
	return e
}

// stop interrupts the exporter and checks that it exits 0.
func (e *runningExporter) stop(t *testing.T) {
	t.Helper()
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case code := <-e.done:
		if code != exitOK {
			t.Errorf("exporter exited with status %d: %s", code, e.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Error("exporter did not stop when interrupted")
	}
}

func (e *runningExporter) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := exporterClient.Get(e.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func (e *runningExporter) scrape(t *testing.T) string {
	t.Helper()
	code, body := e.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	return body
}

// exporterOutput is a strings.Builder safe for the exporter's goroutines and the test's.
type exporterOutput struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *exporterOutput) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *exporterOutput) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestExporterServesBuses runs offq exporter over a directory: it serves the buses there, picks
// up one created later, drops one removed, serves a landing page, passes promtool check
// metrics, and exits 0 when interrupted.
func TestExporterServesBuses(t *testing.T) {
	dir := t.TempDir()
	statBusFixture(t, dir, "one")
	e := startExporter(t, "--dir", dir)

	body := e.scrape(t)
	for _, want := range []string{
		`offq_inbox_depth{bus="one",inbox="0",pattern="a.>",subscriber="tester"} 2`,
		`offq_messages_dropped_total{bus="one",inbox="0",pattern="a.>",reason="oldest",subscriber="tester"} 2`,
		`offq_topic_messages_published_total{bus="one",topic="a.b"} 6`,
		`offq_pool_buffers_in_use{bus="one",class="256B"} 2`,
		`offq_participants{bus="one",state="alive"} 1`,
		`offq_collector_regions 1`,
		"go_goroutines ", "process_cpu_seconds_total ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}

	statBusFixture(t, dir, "two")
	body = e.scrape(t)
	if !strings.Contains(body, `offq_region_size_bytes{bus="two"}`) || !strings.Contains(body, "offq_collector_regions 2") {
		t.Errorf("a bus created after the exporter started is not served:\n%s", body)
	}
	// The bus stays open in this process; its file is gone, so nobody new can join it.
	if err := transport.Unlink(dir, "one"); err != nil {
		t.Fatal(err)
	}
	body = e.scrape(t)
	if strings.Contains(body, `bus="one"`) || !strings.Contains(body, "offq_collector_regions 1") {
		t.Errorf("a removed bus is still served:\n%s", body)
	}

	if code, page := e.get(t, "/"); code != http.StatusOK || !strings.Contains(page, `href="/metrics"`) || !strings.Contains(page, "every bus in "+dir) {
		t.Errorf("GET /: %d %q", code, page)
	}
	if code, _ := e.get(t, "/nosuch"); code != http.StatusNotFound {
		t.Errorf("GET /nosuch: %d", code)
	}
	e.stop(t)
}

// TestExporterNamedBus: with --bus, only that bus is served.
func TestExporterNamedBus(t *testing.T) {
	dir := t.TempDir()
	statBusFixture(t, dir, "one")
	statBusFixture(t, dir, "two")
	e := startExporter(t, "--dir", dir, "--bus", "two")
	body := e.scrape(t)
	if strings.Contains(body, `bus="one"`) || !strings.Contains(body, `offq_region_size_bytes{bus="two"}`) {
		t.Errorf("--bus two serves:\n%s", body)
	}
}

func TestExporterListenError(t *testing.T) {
	code, _, stderr := runOffq(t, context.Background(), "exporter", "--dir", t.TempDir(), "--listen", "256.0.0.1:bad")
	if code != exitRuntime || !strings.Contains(stderr, "offq: exporter: listen tcp") {
		t.Errorf("status %d, stderr %q", code, stderr)
	}
}

// TestExporterPromtool runs promtool check metrics on what the exporter serves for a busy bus.
// Without promtool the test is skipped, unless CI=true, where it fails: CI installs it (Debian
// package prometheus).
func TestExporterPromtool(t *testing.T) {
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found; install the Debian package prometheus")
		}
		t.Skip("promtool not found (Debian package prometheus); CI=true makes this a failure")
	}
	dir := t.TempDir()
	statBusFixture(t, dir, "one")
	statBusFixture(t, dir, "two")
	e := startExporter(t, "--dir", dir)
	body := e.scrape(t)
	cmd := exec.Command(p, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("promtool check metrics: %v\n%s\nscrape:\n%s", err, out, body)
	}
}
