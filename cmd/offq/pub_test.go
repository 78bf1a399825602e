package main

import (
	"context"
	"strings"
	"testing"

	"github.com/offq/offq/transport"
)

// TestPubHistoryOfExistingTopic: --history on a topic that exists with another depth is an
// error (nothing published), not silently ignored; the same depth, or none, is fine.
func TestPubHistoryOfExistingTopic(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "hist")
	pub := func(args ...string) (int, string) {
		code, _, stderr := runOffq(t, context.Background(), append([]string{"--dir", dir, "--bus", "hist", "pub", "h.x", "--data", "m"}, args...)...)
		return code, stderr
	}
	if code, stderr := pub("--history", "2"); code != exitOK {
		t.Fatalf("first pub --history 2: status %d, %s", code, stderr)
	}
	code, stderr := pub("--history", "3")
	if code != exitUsage || !strings.Contains(stderr, "--history 3: topic h.x exists and keeps 2 messages") {
		t.Errorf("pub --history 3 on a topic of depth 2: status %d, %q", code, stderr)
	}
	if code, stderr := pub("--history", "2"); code != exitOK {
		t.Errorf("pub --history 2 again: status %d, %s", code, stderr)
	}
	if code, stderr := pub(); code != exitOK {
		t.Errorf("pub without --history: status %d, %s", code, stderr)
	}
	if code, stderr := pub("--history", "1"); code != exitUsage || !strings.Contains(stderr, "keeps 2 messages") {
		t.Errorf("pub --history 1: status %d, %q", code, stderr)
	}
}

// TestPubWaitCountsOnce: a pub that waits for a free buffer and gives up adds one allocation
// failure, not one per retry.
func TestPubWaitCountsOnce(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "full", "create", "--classes", "256:2"); code != exitOK {
		t.Fatalf("create: %d %s", code, stderr)
	}
	// The topic's history keeps both buffers.
	if code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "full", "pub", "kept", "--history", "2", "--data", "x", "--count", "2"); code != exitOK {
		t.Fatalf("pub --history 2: %d %s", code, stderr)
	}
	code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "full", "pub", "other", "--data", "y", "--timeout", "100ms")
	if code != exitRuntime || !strings.Contains(stderr, "pool exhausted") {
		t.Fatalf("pub into a full pool: status %d, %q", code, stderr)
	}
	r, err := transport.Open("full", transport.Options{Dir: dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if f := st.Pools[0].AllocFails; f != 1 {
		t.Errorf("one failed pub counted %d allocation failures, want 1", f)
	}
}
