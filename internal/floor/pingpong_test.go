package floor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRawPingPong passes the counter back and forth between two mappings of one file (two
// goroutines stand in for the two processes), in both wait modes, then stops the echo.
func TestRawPingPong(t *testing.T) {
	for _, w := range []RawWait{RawSpin, RawFutex} {
		t.Run(w.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			path := filepath.Join(t.TempDir(), "pp")
			a, err := CreateRawPingPong(path, w)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := OpenRawPingPong(path, w)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			// A ping made before the echo starts is answered too.
			pinged := make(chan error, 1)
			go func() { pinged <- a.Ping(ctx) }()
			echoed := make(chan error, 1)
			go func() { echoed <- b.Echo(ctx) }()
			if err := <-pinged; err != nil {
				t.Fatal(err)
			}
			for i := range 2000 {
				if err := a.Ping(ctx); err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				if got, want := b.word(rawPongOff).Load(), a.seq; got != want {
					t.Fatalf("round %d: pong %d, want %d", i, got, want)
				}
			}
			a.Stop()
			if err := <-echoed; err != nil {
				t.Fatalf("Echo after Stop: %v", err)
			}
		})
	}
}

// TestRawPingPongCancel: with no echo, Ping returns when its context is done, and an Echo
// with nothing to answer returns when its context is done.
func TestRawPingPongCancel(t *testing.T) {
	for _, w := range []RawWait{RawSpin, RawFutex} {
		t.Run(w.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pp")
			a, err := CreateRawPingPong(path, w)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if err := a.Ping(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Ping without an echo: %v", err)
			}
			b, err := OpenRawPingPong(path, w)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			b.word(rawPongOff).Store(a.seq) // nothing left to answer
			ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel2()
			if err := b.Echo(ctx2); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Echo without pings: %v", err)
			}
		})
	}
}

func TestRawPingPongFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pp")
	a, err := CreateRawPingPong(path, RawSpin)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := CreateRawPingPong(path, RawSpin); err == nil {
		t.Error("CreateRawPingPong over an existing file succeeded")
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("not a ping-pong file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRawPingPong(other, RawSpin); err == nil {
		t.Error("OpenRawPingPong of a foreign file succeeded")
	}
	if _, err := OpenRawPingPong(filepath.Join(dir, "missing"), RawSpin); err == nil {
		t.Error("OpenRawPingPong of a missing file succeeded")
	}
	if _, err := OpenRawPingPong(path, RawWait(9)); err == nil {
		t.Error("OpenRawPingPong with a bad RawWait succeeded")
	}
}
