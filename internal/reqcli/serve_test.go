package reqcli

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/offq/offq/bus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// openBus opens a bus in a temporary directory whose largest buffer is 4 KiB (4 of them).
func openBus(t *testing.T) *bus.Bus {
	t.Helper()
	cfg := bus.DefaultConfig()
	cfg.Classes = []bus.Class{{Size: 256, Count: 64}, {Size: 4 << 10, Count: 4}}
	b, err := bus.Open("reqcli", bus.WithDir(t.TempDir()), bus.WithConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// serveOnce runs Serve for one request of command on topic in a goroutine, waits until it
// subscribed, and returns what it reports once it has answered.
func serveOnce(t *testing.T, b *bus.Bus, topic, command string) <-chan Served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan Served, 1)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, b, ServeOptions{Pattern: topic, Command: command, Count: 1,
			Ready: func() { close(ready) }, Served: func(s Served) { served <- s }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	}
	return served
}

// TestServeReplyTooLarge: a command whose output is larger than the bus's largest buffer is
// answered with an error reply, so that the requester fails at once, naming the size and the
// largest buffer. The responder used to fail to loan the reply and send nothing: the
// requester waited for its whole timeout.
func TestServeReplyTooLarge(t *testing.T) {
	b := openBus(t)
	served := serveOnce(t, b, "svc.big", "head -c 5000 /dev/zero")
	start := time.Now()
	_, _, err := Request(context.Background(), b, "svc.big", []byte("x"), 10*time.Second)
	var re *ResponderError
	if !errors.As(err, &re) || re.Reason != "reply too large: 5000 bytes, largest buffer 4KiB" {
		t.Fatalf("Request after %v: %v; want a *ResponderError naming 5000 bytes and 4KiB", time.Since(start), err)
	}
	s := <-served
	if s.Reply != "" || !strings.Contains(s.Error, "reply too large: 5000 bytes, largest buffer 4KiB (the requester was sent an error reply)") {
		t.Fatalf("Served %+v", s)
	}
}

// TestServeReplyPoolExhausted: a reply for which no buffer is free (every 4 KiB buffer on
// loan) is answered with an error reply from a smaller class, saying the pool is exhausted.
// The requester used to wait for its whole timeout.
func TestServeReplyPoolExhausted(t *testing.T) {
	b := openBus(t)
	p, err := b.Publisher("hog")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for range 4 {
		l, err := p.Loan(1000)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Discard()
	}
	served := serveOnce(t, b, "svc.busy", "head -c 1000 /dev/zero")
	_, _, err = Request(context.Background(), b, "svc.busy", []byte("x"), 10*time.Second)
	var re *ResponderError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "reply not sent") || !strings.Contains(re.Reason, "pool exhausted") {
		t.Fatalf("Request: %v; want a *ResponderError saying the pool is exhausted", err)
	}
	if s := <-served; s.Reply != "" || !strings.Contains(s.Error, "pool exhausted") {
		t.Fatalf("Served %+v", s)
	}
}
