package floor

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestLinePingPong passes 2000 values (more than 30 laps of each ring) back and forth in both
// line patterns (two goroutines stand in for the two processes), checks that every answer is
// the value sent, that every slot is free at the end, and that Stop ends the echo.
func TestLinePingPong(t *testing.T) {
	for _, pat := range []LinePattern{LinesOffq, LinesHeadOnly} {
		t.Run(pat.String(), func(t *testing.T) {
			if got, err := ParseLinePattern(pat.String()); err != nil || got != pat {
				t.Fatalf("ParseLinePattern(%q) = %v, %v", pat.String(), got, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			path := filepath.Join(t.TempDir(), "lines")
			a, err := CreateLinePingPong(path, pat)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := OpenLinePingPong(path, pat)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			pingEcho(ctx, t, a, b, 2000)
			for s := range uint32(linesSlots) {
				if st := a.state(s).Load(); st != 0 {
					t.Errorf("slot %d: state %d after the last round trip, want free", s, st)
				}
			}
			for in := range 2 {
				if h, tl := a.head(in).Load(), a.tail(in).Load(); h != 2000 || tl != 2000 {
					t.Errorf("inbox %d: head %d, tail %d, want 2000", in, h, tl)
				}
			}
		})
	}
	if _, err := ParseLinePattern("nope"); err == nil {
		t.Error("ParseLinePattern(nope): no error")
	}
}

// TestLinePingPongCancel: with no echo, Ping returns when its context is done.
func TestLinePingPongCancel(t *testing.T) {
	a, err := CreateLinePingPong(filepath.Join(t.TempDir(), "lines"), LinesOffq)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := a.Ping(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Ping with no echo: %v, want %v", err, context.DeadlineExceeded)
	}
}
