package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/shm"
	"github.com/offq/offq/internal/statview"
)

// TestReap: a subscriber process is killed with SIGKILL; offq reap reclaims it (once), and ls
// shows the bus clean again.
func TestReap(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "crash")
	sub := startOffq(t, "--dir", dir, "--bus", "crash", "sub", "x", "--queue-depth", "16")
	sub.waitStderr("subscribed", 30*time.Second)
	sub.cmd.Process.Kill()
	sub.wait(30 * time.Second)
	// (No other offq command in between: every bus participant reaps when it opens the bus.)
	code, out, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "crash", "reap", "--json")
	if code != exitOK {
		t.Fatalf("reap: %d %s", code, stderr)
	}
	var rep map[string]int
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("reap --json: %q: %v", out, err)
	}
	if rep["participants"] != 1 || rep["inboxes"] != 1 {
		t.Fatalf("reap reclaimed %v, want the subscriber and its inbox", rep)
	}
	code, out, _ = runOffq(t, context.Background(), "--dir", dir, "--bus", "crash", "reap")
	if code != exitOK || !strings.Contains(out, "no dead participants") {
		t.Fatalf("second reap: %d %q", code, out)
	}
	code, out, _ = runOffq(t, context.Background(), "--dir", dir, "ls")
	if code != exitOK || !regexp.MustCompile(`(?m)^crash .* 0 +0 +ok$`).MatchString(out) {
		t.Errorf("ls after reap: %d\n%s", code, out)
	}
	if code, _, _ := runOffq(t, context.Background(), "--dir", dir, "--bus", "missing", "reap"); code != exitRuntime {
		t.Errorf("reap of a missing bus: status %d, want %d", code, exitRuntime)
	}
}

// TestReapSweeps: while a process is attached (so no audit), a buffer holds a reference that
// nobody records, as a process killed between the two steps of moving one would leave. offq
// reap sweeps it, and leaves the buffer a live participant holds alone.
func TestReapSweeps(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "leaky")
	r, err := shm.Open("leaky", shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p, err := r.Attach("holder")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Detach()
	// The orphan: a reference added and never recorded.
	if err := p.OrphanForTest(8); err != nil {
		t.Fatal(err)
	}
	// A loan the live participant keeps.
	if _, err := p.Loan(8); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "leaky", "reap", "--json", "--settle", "1ms")
	if code != exitOK {
		t.Fatalf("reap: %d %s", code, stderr)
	}
	var rep map[string]int
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("reap --json: %q: %v", out, err)
	}
	if rep["swept"] != 1 || rep["participants"] != 0 {
		t.Fatalf("reap: %v, want the orphan swept and nobody reclaimed", rep)
	}
	if n, err := r.Allocated(); err != nil || n[0] != 1 {
		t.Fatalf("allocated per class %v (%v), want the loan alone: the orphan swept", n, err)
	}
}

// TestReapFreesTopics: a mistyped offq pub creates a topic; once it has exited and the bus is
// idle, offq reap (an audit) frees the entry, and offq info counts one topic fewer. A topic
// with history is kept. The next process to open the idle bus (here another offq pub) frees
// such an entry too, when it reaps on opening.
func TestReapFreesTopics(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "typo")
	pub := func(args ...string) {
		t.Helper()
		if code, _, stderr := runOffq(t, context.Background(), append([]string{"--dir", dir, "--bus", "typo", "pub"}, args...)...); code != exitOK {
			t.Fatalf("pub %v: %d %s", args, code, stderr)
		}
	}
	pub("sensors.temp", "--data", "2", "--history", "1")
	pub("sensors.tmep", "--data", "1")
	topics := func() int {
		t.Helper()
		code, out, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "typo", "info", "--json")
		if code != exitOK {
			t.Fatalf("info: %d %s", code, stderr)
		}
		var info struct{ Topics int }
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("info --json: %q: %v", out, err)
		}
		return info.Topics
	}
	if n := topics(); n != 2 {
		t.Fatalf("info before the reap: %d topics, want 2", n)
	}
	code, out, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "typo", "reap", "--json")
	if code != exitOK {
		t.Fatalf("reap: %d %s", code, stderr)
	}
	var rep map[string]int
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("reap --json: %q: %v", out, err)
	}
	if rep["topics_freed"] != 1 {
		t.Fatalf("reap: %v, want 1 topic freed", rep)
	}
	if n := topics(); n != 1 {
		t.Fatalf("info after the reap: %d topics, want 1 (the one with history)", n)
	}
	pub("sensors.tmpe", "--data", "3")
	pub("sensors.temp", "--data", "4", "--history", "1")
	if n := topics(); n != 1 {
		t.Fatalf("info after another mistyped pub and a pub: %d topics, want 1", n)
	}
}

// TestReapFreesTopicsWhileAttached: with a process attached to the bus all along (so no
// audit), a mistyped offq pub creates a topic and exits; offq reap frees the entry, and keeps
// a topic the attached process has a publisher of.
func TestReapFreesTopicsWhileAttached(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "live")
	b, err := bus.Open("live", bus.WithDir(dir), bus.WithName("long-lived"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	keep, err := b.Publisher("sensors.temp")
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	if code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "live", "pub", "sensors.tmep", "--data", "1"); code != exitOK {
		t.Fatalf("pub: %d %s", code, stderr)
	}
	code, out, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "live", "reap")
	if code != exitOK || !strings.Contains(out, "live: freed 1 unused topic(s)") {
		t.Fatalf("reap: %d %q %s", code, out, stderr)
	}
	code, out, stderr = runOffq(t, context.Background(), "--dir", dir, "--bus", "live", "stat", "--json")
	if code != exitOK {
		t.Fatalf("stat: %d %s", code, stderr)
	}
	var rep statview.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if ts := rep.Buses[0].Topics; len(ts) != 1 || ts[0].Name != "sensors.temp" || ts[0].Publishers != 1 {
		t.Fatalf("topics after the reap: %+v, want sensors.temp with one publisher", ts)
	}
}
