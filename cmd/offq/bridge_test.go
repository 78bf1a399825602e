package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func TestBridgeUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bridge"}, "at least one --export or --import"},
		{[]string{"bridge", "--export", "a..b"}, "bridge:"},
		{[]string{"bridge", "--import", "x.>", "--tls-cert", "c.pem"}, "--tls-cert and --tls-key"},
		{[]string{"bridge", "--import", "x.>", "--queue-depth", "-1"}, "negative"},
		{[]string{"bridge", "--import", "x.>", "--request-timeout", "0s"}, "--request-timeout 0s: want more than 0"},
		{[]string{"bridge", "extra"}, `bridge takes no arguments (got "extra")`},
	} {
		code, _, stderr := runOffq(t, context.Background(), append([]string{"--dir", dir}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("offq %s: status %d, stderr %q; want status %d and %q", strings.Join(tc.args, " "), code, stderr, exitUsage, tc.want)
		}
	}
	// No NATS server: a runtime error.
	code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "bridge", "--create", "--import", "x.>", "--nats-url", "nats://127.0.0.1:1")
	if code != exitRuntime || !strings.Contains(stderr, "bridge: connect") {
		t.Errorf("bridge without NATS: status %d, stderr %q", code, stderr)
	}
}

// TestBridgeProcesses: two buses, a bridge process on each, one NATS server: what offq pub
// publishes on bus A, offq sub prints on bus B.
func TestBridgeProcesses(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats server not ready")
	}
	url := "nats://" + s.Addr().String()
	dirA, dirB := t.TempDir(), t.TempDir()
	createBus(t, dirA, "a")
	createBus(t, dirB, "b")

	brA := startOffq(t, "--dir", dirA, "--bus", "a", "bridge", "--nats-url", url, "--export", "greet.>", "--id", "host-a", "--listen", "127.0.0.1:0")
	brB := startOffq(t, "--dir", dirB, "--bus", "b", "bridge", "--nats-url", url, "--import", "greet.>", "--id", "host-b")
	brA.waitStderr("bridging", 10*time.Second)
	brB.waitStderr("bridging", 10*time.Second)
	sub := startOffq(t, "--dir", dirB, "--bus", "b", "sub", "greet.>", "--count", "3", "--timeout", "20s")
	sub.waitStderr("subscribed", 10*time.Second)
	for _, msg := range []string{"one", "two", "three"} {
		if code, _, stderr := runOffq(t, context.Background(), "--dir", dirA, "--bus", "a", "pub", "greet.world", "--data", msg); code != exitOK {
			t.Fatalf("pub: status %d, %s", code, stderr)
		}
	}
	code, out, stderr := sub.wait(20 * time.Second)
	if code != exitOK || out != "greet.world #1: one\ngreet.world #2: two\ngreet.world #3: three\n" {
		t.Fatalf("sub: status %d, stdout %q, stderr %q", code, out, stderr)
	}
	// Bridge A serves its counters beside its bus's metrics.
	brA.waitStderr("metrics at http://", 10*time.Second)
	brA.mu.Lock()
	var metricsURL string
	for _, l := range brA.stderr {
		if i := strings.Index(l, "http://"); i >= 0 && strings.Contains(l, "metrics at") {
			metricsURL = strings.TrimSpace(l[i:])
		}
	}
	brA.mu.Unlock()
	// The counters reach the bridge's participant slot within half a second: poll, bounded.
	forwarded := regexp.MustCompile(`(?m)^offq_bridge_forwarded_total\{bridge="[^"]*",bus="a",participant="\d+"\} 3$`)
	var body []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get(metricsURL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if forwarded.Match(body) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the mirror's effect, bounded
	}
	if !forwarded.Match(body) || !strings.Contains(string(body), `offq_pool_buffers{bus="a"`) {
		t.Errorf("bridge metrics lack forwarded 3 or the bus's pools:\n%s", body)
	}
	for _, p := range []*offqProc{brA, brB} {
		p.cmd.Process.Signal(syscall.SIGINT)
	}
	if code, _, stderr := brA.wait(10 * time.Second); code != exitOK || !strings.Contains(stderr, "forwarded 3,") {
		t.Fatalf("bridge A: status %d, stderr %q", code, stderr)
	}
	if code, _, stderr := brB.wait(10 * time.Second); code != exitOK || !strings.Contains(stderr, "imported 3,") {
		t.Fatalf("bridge B: status %d, stderr %q", code, stderr)
	}
}
