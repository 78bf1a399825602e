package floor

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// TestRawPool: messages sent through the pool arrive in order, across wrap-arounds of the ring
// and of the pool, whatever the batch (a partial batch shows at Flush), with the producer
// waiting for room and for free buffers when the consumer lags.
func TestRawPool(t *testing.T) {
	for _, batch := range []int{1, 7, 64} {
		t.Run(fmt.Sprint("batch=", batch), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pool")
			w, err := CreateRawPool(path, batch)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			r, err := OpenRawPool(path, batch)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			const n = 3*poolBuffers + 17
			done := make(chan error, 1)
			go func() {
				for i := range uint64(n) {
					if err := w.Send(ctx, i+1); err != nil {
						done <- err
						return
					}
				}
				w.Flush()
				done <- nil
			}()
			for i := range uint64(n) {
				v, err := r.Receive(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if v != i+1 {
					t.Fatalf("message %d is %d", i+1, v)
				}
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := OpenRawPool(filepath.Join(t.TempDir(), "none"), 1); err == nil {
		t.Fatal("opened a pool that does not exist")
	}
}

// TestRawPoolCancel: a Receive on an empty pool, and a Send into a full one, return when their
// context ends.
func TestRawPoolCancel(t *testing.T) {
	w, err := CreateRawPool(filepath.Join(t.TempDir(), "pool"), 64)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := w.Receive(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Receive on an empty pool: %v", err)
	}
	var err2 error
	for i := range poolRingSlots + 1 {
		if err2 = w.Send(ctx, uint64(i)); err2 != nil {
			break
		}
	}
	if err2 != context.DeadlineExceeded {
		t.Fatalf("Send into a full pool: %v", err2)
	}
}
