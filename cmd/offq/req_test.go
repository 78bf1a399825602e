package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReqReplyProcesses: offq reply in a process of its own answers two offq req, as in two
// shells; a request nobody answers exits with status 1.
func TestReqReplyProcesses(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "rr")
	ctx := context.Background()
	if code, _, stderr := runOffq(t, ctx, "--dir", dir, "--bus", "rr", "req", "svc.upper", "--data", "x", "--timeout", "1h"); code != exitRuntime || !strings.Contains(stderr, "no responders") {
		t.Fatalf("req without a responder: status %d, %q", code, stderr)
	}
	reply := startOffq(t, "--dir", dir, "--bus", "rr", "reply", "svc.*", "--command", "tr a-z A-Z", "--count", "2", "--json")
	reply.waitStderr("answering requests on svc.*", 30*time.Second)
	code, out, stderr := runOffq(t, ctx, "--dir", dir, "--bus", "rr", "req", "svc.upper", "--data", "hello")
	if code != exitOK || out != "HELLO" {
		t.Fatalf("req: status %d, stdout %q, stderr %q", code, out, stderr)
	}
	code, out, stderr = runOffq(t, ctx, "--dir", dir, "--bus", "rr", "req", "svc.upper", "--data", "json please", "--json")
	var r struct {
		Topic string `json:"topic"`
		Data  string `json:"data"`
		Bytes int    `json:"bytes"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &r) != nil || r.Topic != "svc.upper" || r.Data != "JSON PLEASE" || r.Bytes != 11 {
		t.Fatalf("req --json: status %d, stdout %q, stderr %q", code, out, stderr)
	}
	code, out, stderr = reply.wait(30 * time.Second)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 2 || !strings.Contains(lines[0], `"request":"hello","reply":"HELLO","exit_status":0`) {
		t.Fatalf("reply: status %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// TestReqTimeout: a subscriber that never answers makes req fail with status 1 at its
// timeout.
func TestReqTimeout(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "rt")
	sub := startOffq(t, "--dir", dir, "--bus", "rt", "sub", "svc.mute")
	sub.waitStderr("subscribed to svc.mute", 30*time.Second)
	code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "rt", "req", "svc.mute", "--data", "x", "--timeout", "50ms")
	if code != exitRuntime || !strings.Contains(stderr, "timed out") {
		t.Fatalf("req: status %d, %q", code, stderr)
	}
}

// TestReplyBadQueueGroup: a queue group name the bus refuses is a usage error (status 2),
// found before the bus is opened; it used to open the bus and exit 1.
func TestReplyBadQueueGroup(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "reply", "a.>", "--command", "cat", "--queue", "a b")
	if code != exitUsage || !strings.Contains(stderr, `queue group "a b"`) {
		t.Fatalf("status %d, stderr %q; want %d and the group named", code, stderr, exitUsage)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a usage error opened a bus: %v", ents)
	}
}

// TestReplyTooLarge: offq reply whose command writes more than the bus's largest buffer (4 KiB
// here) says so on stderr and answers with an error reply, and offq req fails at once with
// status 1, naming the size and the largest buffer. The responder used to fail to loan the
// reply and send nothing: req waited for its whole --timeout and said "timed out".
func TestReplyTooLarge(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "big")
	reply := startOffq(t, "--dir", dir, "--bus", "big", "reply", "svc.big", "--command", "head -c 5000 /dev/zero", "--json")
	reply.waitStderr("answering requests on svc.big", 30*time.Second)
	start := time.Now()
	code, out, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "big", "req", "svc.big", "--data", "x", "--timeout", "10s")
	if code != exitRuntime || out != "" || !strings.Contains(stderr, "offq: req: bus: request \"svc.big\": responder failed: reply too large: 5000 bytes, largest buffer 4KiB\n") {
		t.Fatalf("req after %v: status %d, stdout %q, stderr %q; want status 1 and the size named", time.Since(start), code, out, stderr)
	}
	reply.waitStderr("offq reply: request on svc.big", 30*time.Second)
	reply.cmd.Process.Signal(syscall.SIGINT)
	code, out, stderr = reply.wait(30 * time.Second)
	if code != exitOK || !strings.Contains(stderr, "offq reply: request on svc.big: reply too large: 5000 bytes, largest buffer 4KiB (the requester was sent an error reply)") ||
		!strings.Contains(out, `"reply":"","exit_status":0,"error":"reply too large`) {
		t.Fatalf("reply: status %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// TestReqTooLarge: a request larger than the bus's largest buffer, from --data or from
// standard input, is refused with status 1 before anything is sent, naming the size (or, for
// standard input, which is not read past the limit, that it is larger) and the largest buffer.
func TestReqTooLarge(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "bigreq")
	// A subscriber that would receive the request if one were sent: nothing may reach it.
	sub := startOffq(t, "--dir", dir, "--bus", "bigreq", "sub", "svc.big", "--raw")
	sub.waitStderr("subscribed to svc.big", 30*time.Second)
	code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "bigreq", "req", "svc.big", "--data", strings.Repeat("x", 5000), "--timeout", "20s")
	if code != exitRuntime || !strings.Contains(stderr, "offq: req: request too large: 5000 bytes, largest buffer 4KiB\n") {
		t.Fatalf("req --data: status %d, stderr %q", code, stderr)
	}
	req := startOffq(t, "--dir", dir, "--bus", "bigreq", "req", "svc.big", "--timeout", "20s")
	if _, err := io.WriteString(req.in, strings.Repeat("x", 1<<20)); err != nil && !errors.Is(err, syscall.EPIPE) {
		t.Fatal(err)
	}
	req.in.Close()
	if code, _, stderr := req.wait(30 * time.Second); code != exitRuntime || !strings.Contains(stderr, "offq: req: request too large: more than 4096 bytes, largest buffer 4KiB") {
		t.Fatalf("req from stdin: status %d, stderr %q", code, stderr)
	}
	// Nothing was sent: the topic counts no request.
	if code, out, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "bigreq", "stat", "--json"); code != exitOK || !strings.Contains(out, `"svc.big"`) || strings.Contains(out, `"requests"`) {
		t.Fatalf("stat: status %d, stdout %q, stderr %q; want svc.big and no requests", code, out, stderr)
	}
}
