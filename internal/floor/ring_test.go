package floor

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestRawRing: words sent through the ring arrive in order, across wrap-arounds, with the
// producer waiting for room when the consumer lags.
func TestRawRing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ring")
	w, err := CreateRawRing(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := OpenRawRing(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 3*ringSlots + 17
	done := make(chan error, 1)
	go func() {
		for i := range uint64(n) {
			if err := w.Send(ctx, i); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := range uint64(n) {
		v, err := r.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v != i {
			t.Fatalf("word %d is %d", i, v)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRawRing(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("opened a ring that does not exist")
	}
}

// TestRawRingCancel: a Receive on an empty ring returns when its context ends.
func TestRawRingCancel(t *testing.T) {
	r, err := CreateRawRing(filepath.Join(t.TempDir(), "ring"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Receive(ctx); err != context.Canceled {
		t.Fatalf("Receive: %v, want context.Canceled", err)
	}
}
