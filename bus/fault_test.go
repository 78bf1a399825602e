package bus

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/offq/offq/internal/shm"
)

// TestTruncatedRegion: another process truncates the region's file under a running bus.
// Publishing and receiving then fail with ErrCorrupt instead of killing the process with
// SIGBUS.
func TestTruncatedRegion(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("trunc", WithDir(dir), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sub, _ := b.Subscribe("t")
	pub, _ := b.Publisher("t")
	if err := pub.Publish(ctx, []byte("before")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(shm.Path(dir, "trunc"), 1024); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Release after truncation: %v, want ErrCorrupt", err)
	}
	if err := pub.Publish(ctx, []byte("after")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Publish after truncation: %v, want ErrCorrupt", err)
	}
	if _, err := sub.Receive(ctx); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Receive after truncation: %v, want ErrCorrupt", err)
	}
	if err := b.Close(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Close after truncation: %v, want ErrCorrupt", err)
	}
}

// TestTruncatedRegionRequest: the region's file is truncated under a responder holding a
// request. Asking whether the message is a request, and for its reply address, reads the
// buffer's header: that reports "not a request" instead of killing the process with SIGBUS.
func TestTruncatedRegionRequest(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("trunc", WithDir(dir), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, _ := b.Subscribe("t.req")
	pub, _ := b.Publisher("t.req")
	l, err := pub.Loan(8)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.SendRequest(ctx, l); err != nil {
		t.Fatal(err)
	}
	m, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !m.IsRequest() {
		t.Fatal("the request does not say it is one")
	}
	if err := os.Truncate(shm.Path(dir, "trunc"), 1024); err != nil {
		t.Fatal(err)
	}
	if m.IsRequest() {
		t.Fatal("IsRequest after truncation: true, want false (the header is gone)")
	}
	if _, err := m.ReplyAddress(); err == nil {
		t.Fatal("ReplyAddress after truncation: no error")
	}
	m.Release()
	b.Close()
}
