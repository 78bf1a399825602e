package main

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/offq/offq/bus"
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

// TestPubJSONTyped: pub --json is a typed msgpack publisher (the topic records msgpack) that
// writes integers compactly, refuses numbers it would change, and skips blank lines; sub
// --json decodes only topics that record msgpack, and says what the others carry.
func TestPubJSONTyped(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "js")
	offq := func(args ...string) (int, string, string) {
		return runOffq(t, context.Background(), append([]string{"--dir", dir, "--bus", "js"}, args...)...)
	}
	if code, _, stderr := offq("pub", "j.n", "--json", "--data", "5", "--history", "1"); code != exitOK {
		t.Fatalf("pub --json: %d %s", code, stderr)
	}
	if code, out, stderr := offq("sub", "j.n", "--count", "1", "-q"); code != exitOK || out != "j.n #1: 0x05 (1 B)\n" {
		t.Errorf("pub --json --data 5 published %q (status %d, %s), want the one-byte fixint 0x05", out, code, stderr)
	}
	if code, out, stderr := offq("sub", "j.n", "--json", "--raw", "--count", "1", "-q"); code != exitOK || out != "5\n" {
		t.Errorf("sub --json --raw: %d %q %s", code, out, stderr)
	}
	r, err := transport.Open("js", transport.Options{Dir: dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range st.Topics {
		if tp.Name == "j.n" && tp.Codec != "msgpack" {
			t.Errorf("topic j.n records codec %q after pub --json, want msgpack", tp.Codec)
		}
	}
	// Untyped bytes are not decoded as msgpack ("5" would print as 53).
	if code, _, stderr := offq("pub", "j.u", "--data", "5", "--history", "1"); code != exitOK {
		t.Fatalf("pub: %d %s", code, stderr)
	}
	code, out, _ := offq("sub", "j.u", "--json", "--count", "1", "-q")
	if code != exitOK || strings.Contains(out, `"data"`) || !strings.Contains(out, `"error":"the topic records no codec (untyped bytes), not msgpack"`) || !strings.Contains(out, `"bytes":"NQ=="`) {
		t.Errorf("sub --json of an untyped topic: %d %s", code, out)
	}
	// Numbers that msgpack would carry as another number are refused.
	for _, tc := range []struct{ data, want string }{
		{"1e400", "number 1e400 is beyond the range of a float64"},
		{`{"x": [18446744073709551616]}`, "integer 18446744073709551616 does not fit in 64 bits"},
		{"-9223372036854775809", "does not fit in 64 bits"},
	} {
		if code, _, stderr := offq("pub", "j.bad", "--json", "--data", tc.data); code != exitRuntime || !strings.Contains(stderr, tc.want) {
			t.Errorf("pub --json --data %s: %d %q, want %q", tc.data, code, stderr, tc.want)
		}
	}
	// Blank lines between messages are skipped.
	cmdIn := "{\"a\": 1}\n\n   \n{\"a\": 2}\n"
	file := dir + "/in.jsonl"
	if err := os.WriteFile(file, []byte(cmdIn), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := offq("pub", "j.f", "--json", "--file", file); code != exitOK || !strings.Contains(stderr, "published 2 messages") {
		t.Errorf("pub --json of lines with blank ones: %d %s", code, stderr)
	}
}

// TestPubReportsDrops: a subscriber that does not keep up loses messages by its queue's
// policy, and pub's summary says how many, instead of "published 100 to 1 subscriber" alone;
// a publication that loses nothing says nothing of drops.
func TestPubReportsDrops(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "slow", "create", "--classes", "256:64"); code != exitOK {
		t.Fatalf("create: %d %s", code, stderr)
	}
	b, err := bus.Open("slow", bus.WithDir(dir), bus.WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Queues of 16 that nobody reads: 100 messages drop 84, the oldest or the newest.
	for _, pol := range []bus.Overflow{bus.DropOldest, bus.DropNewest} {
		sub, err := b.Subscribe("d.>", bus.WithQueueDepth(16), bus.WithOverflow(pol))
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
	}
	pub := func(topic string, count int) string {
		t.Helper()
		code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "slow", "pub", topic, "--size", "16", "--count", strconv.Itoa(count))
		if code != exitOK {
			t.Fatalf("pub: status %d, %s", code, stderr)
		}
		return stderr
	}
	if got, want := pub("d.x", 100), "to 2 subscribers; 2 queues dropped 168 messages meanwhile, by overflow policy (offq --dir "+dir+" stat --bus slow)"; !strings.Contains(got, want) {
		t.Errorf("pub of 100 into two queues of 16: %q, want %q", got, want)
	}
	// Only what was dropped during this pub counts: the queues are full, so each of these
	// drops one more.
	if got, want := pub("d.y", 1), "to 2 subscribers; 2 queues dropped 2 messages meanwhile"; !strings.Contains(got, want) {
		t.Errorf("pub of 1 more: %q, want %q", got, want)
	}
	if got := pub("other", 5); strings.Contains(got, "dropped") {
		t.Errorf("pub on a topic nobody subscribes to reports drops: %q", got)
	}
}
