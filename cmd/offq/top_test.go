package main

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

func TestTopIterations(t *testing.T) {
	dir := t.TempDir()
	statBusFixture(t, dir, "one")
	code, out, stderr := runOffq(t, context.Background(), "top", "--dir", dir, "--iterations", "2", "--interval", "10ms")
	if code != exitOK {
		t.Fatalf("status %d: %s", code, stderr)
	}
	frames := strings.Split(out, "offq top  ") // into a buffer: no escapes, screen after screen
	if len(frames) != 3 || frames[0] != "" {
		t.Fatalf("%d screens, want 2:\n%q", len(frames)-1, out)
	}
	for i, f := range frames[1:] {
		for _, want := range []string{dir, "bus one ", "MSGS/S", "IN/S", "OUT/S", "DROPS/S", "POOL"} {
			if !strings.Contains(f, want) {
				t.Errorf("screen %d lacks %q:\n%s", i+1, want, f)
			}
		}
	}
	// The first screen has no rates yet; the second has them (nothing moved: 0).
	if row := topRow(frames[1], "a.b "); !strings.HasSuffix(row, " - -") {
		t.Errorf("first screen's topic row %q, want rates -", row)
	}
	if row := topRow(frames[2], "a.b "); !strings.HasSuffix(row, " 0 0") {
		t.Errorf("second screen's topic row %q, want rates 0", row)
	}
}

// topRow returns the line of screen that starts with prefix, its columns separated by one space.
func topRow(screen, prefix string) string {
	for _, l := range strings.Split(screen, "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.Join(strings.Fields(l), " ")
		}
	}
	return ""
}

// TestTopInterrupted: top runs until its context is cancelled (SIGINT in offq), then exits 0.
func TestTopInterrupted(t *testing.T) {
	dir := t.TempDir()
	statBusFixture(t, dir, "one")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		var stderr strings.Builder
		done <- run(ctx, []string{"top", "--dir", dir, "--interval", "10ms"}, pw, &stderr)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	screens := 0
	for screens < 3 && sc.Scan() {
		if strings.Contains(sc.Text(), "offq top") {
			screens++
		}
	}
	cancel()
	go io.Copy(io.Discard, pr)
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("status %d after interrupt", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("top did not stop when interrupted")
	}
	if screens != 3 {
		t.Fatalf("saw %d screens", screens)
	}
}
