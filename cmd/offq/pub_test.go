package main

import (
	"context"
	"strings"
	"testing"
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
