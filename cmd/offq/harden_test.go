package main

// Regression tests for issue 14 ("hardening"): files and input an attacker or a mistake can
// put in front of the command line.

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNonRegularBusRefused: a FIFO named like a bus is refused at once by every command, in a
// process of its own (a command that blocked opening it would never end).
func TestNonRegularBusRefused(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "real")
	if err := syscall.Mkfifo(dir+"/fifo", 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"info"},
		{"stat"},
		{"rm"},
		{"rm", "--force"},
		{"reap"},
		{"pub", "a.b", "--data", "x"},
		{"sub", "a.b", "--count", "1"},
	} {
		p := startOffq(t, append([]string{"--dir", dir, "--bus", "fifo"}, args...)...)
		p.in.Close()
		code, _, stderr := p.wait(10 * time.Second)
		if code != exitRuntime || !strings.Contains(stderr, "not a regular file") || strings.Contains(stderr, "offq: offq:") {
			t.Errorf("offq %s on a FIFO: status %d, stderr %q; want status 1 and \"not a regular file\"", strings.Join(args, " "), code, stderr)
		}
	}
	// ls lists the directory without opening the FIFO for good.
	p := startOffq(t, "--dir", dir, "ls")
	if code, out, stderr := p.wait(10 * time.Second); code != exitOK || !strings.Contains(out, "real") {
		t.Errorf("ls beside a FIFO: status %d, out %q, stderr %q", code, out, stderr)
	}
}
