package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/internal/shm"
)

// TestDemo runs offq demo as a user would, its children re-executing this test binary (see
// TestMain), and checks the verdict and that nothing is left behind.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code, out, stderr := runOffq(t, ctx, "demo", "--duration", "1s", "--rate", "20000", "--dir", dir)
	t.Logf("stdout:\n%s", out)
	if stderr != "" {
		t.Logf("stderr:\n%s", stderr)
	}
	if code != exitOK {
		t.Fatalf("offq demo: exit status %d", code)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^publisher: 20000 messages \(10000 demo.temp, 10000 demo.pressure\)`),
		regexp.MustCompile(`(?m)^subscriber +pattern +queue +received +dropped +inbox drops +corrupt +order +p50 µs +p99 µs +max µs +check$`),
		regexp.MustCompile(`(?m)^sub-1 +demo\.temp +8192 +10000 +0 +0 +0 +0 .* ok$`),
		regexp.MustCompile(`(?m)^sub-2 +demo\.> +8192 +20000 +0 +0 +0 +0 .* ok$`),
		regexp.MustCompile(`(?m)^sub-3 +demo\.pressure +8192 +10000 +0 +0 +0 +0 .* ok$`),
		regexp.MustCompile(`(?m)^slow \(1ms/msg\) +demo\.> +8 +\d+ +(\d+) +(\d+) +0 +0 .* ok$`),
		regexp.MustCompile(`(?m)^after the children exited: 0 buffers in use, 0 other participants attached$`),
		regexp.MustCompile(`(?m)^verified: `),
		regexp.MustCompile(`(?m)^bus closed, .* removed$`),
		regexp.MustCompile(`\n\nPASS\n$`),
	} {
		if !want.MatchString(out) {
			t.Errorf("output does not match %s", want)
		}
	}
	// The slow subscriber's drops, from its sequence gaps and from its inbox, agree.
	if m := regexp.MustCompile(`(?m)^slow .* (\d+) +(\d+) +0 +0 `).FindStringSubmatch(out); m == nil || m[1] != m[2] || m[1] == "0" {
		t.Errorf("slow subscriber's drops: %v", m)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left in %s: %v", dir, ents)
	}
}

// TestDemoInterrupted cancels the demo while the publisher runs, as SIGINT does: the children
// stop, and the region is removed.
func TestDemoInterrupted(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() {
		// Interrupt once the publisher has published for a while: wait for the region,
		// then for messages in its inboxes.
		for ctx.Err() == nil {
			if r, err := shm.Open("interrupted", shm.Options{Dir: dir}); err == nil {
				published := func() uint64 {
					var n uint64
					for _, st := range must(r.InboxStats()) {
						n = max(n, st.Pushed)
					}
					return n
				}
				for ctx.Err() == nil && published() < 1000 {
					time.Sleep(10 * time.Millisecond)
				}
				r.Close()
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	start := time.Now()
	code, out, stderr := runOffq(t, ctx, "demo", "--duration", "1m", "--rate", "20000", "--dir", dir, "--bus", "interrupted")
	t.Logf("stdout:\n%s\nstderr:\n%s", out, stderr)
	if code != exitRuntime || !strings.Contains(stderr, "interrupted") {
		t.Fatalf("exit status %d, want %d and an error saying interrupted", code, exitRuntime)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %v to stop", d)
	}
	if strings.Contains(out, "PASS") {
		t.Errorf("interrupted demo says PASS")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left in %s: %v", dir, ents)
	}
}

// TestDemoBusExists: the demo refuses a bus that exists, and leaves it alone.
func TestDemoBusExists(t *testing.T) {
	dir := t.TempDir()
	r, err := shm.Create("taken", shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	code, _, stderr := runOffq(t, context.Background(), "demo", "--dir", dir, "--bus", "taken")
	if code != exitRuntime || !strings.Contains(stderr, "create bus") {
		t.Fatalf("exit status %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "taken")); err != nil {
		t.Fatalf("existing bus removed: %v", err)
	}
}
