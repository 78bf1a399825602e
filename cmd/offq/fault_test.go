package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/faultfs"
	"github.com/offq/offq/internal/shm"
)

// Faults at the door, from the command line: an offq command reading a region whose memory
// faults (its file cut short, or its pages impossible to back on a full tmpfs) exits with an
// error saying so, never with SIGBUS. Each runs in a process of its own (envDemoPeer).

// envFaultCut makes an offq child cut a region file right after its first write to stdout:
// "path:size". It is how a test truncates a region under offq sub between two messages.
const envFaultCut = "OFFQ_FAULT_CUT"

// faultStdout is the child's stdout: os.Stdout, cutting the region file named by envFaultCut
// after the first write, if that is set.
func faultStdout() io.Writer {
	path, size, ok := strings.Cut(os.Getenv(envFaultCut), ":")
	if !ok {
		return os.Stdout
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil {
		panic(err)
	}
	return &cutWriter{w: os.Stdout, path: path, size: n}
}

type cutWriter struct {
	w    io.Writer
	path string
	size int64
	once sync.Once
}

func (c *cutWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.once.Do(func() {
		if terr := os.Truncate(c.path, c.size); terr != nil {
			panic(terr)
		}
	})
	return n, err
}

// offqChild runs offq args in a process of its own, with env added, and returns its exit
// status and output. It fails the test if the process was killed by a signal (a fault kills
// with SIGBUS) or did not finish in time.
func offqChild(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), envDemoPeer+"=1", "GORACE=atexit_sleep_ms=0"), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("offq %s: killed by %v (a memory fault must be an error, not a crash)\nstderr:\n%s",
				strings.Join(args, " "), ws.Signal(), firstLines(errb.String(), 8))
		}
		if ctx.Err() != nil {
			t.Fatalf("offq %s: still running after a minute", strings.Join(args, " "))
		}
	default:
		t.Fatal(err)
	}
	// The Go runtime reports a fault it cannot recover from and exits with status 2.
	if strings.Contains(errb.String(), "signal SIGBUS") {
		t.Fatalf("offq %s: crashed with SIGBUS (a memory fault must be an error, not a crash)\nstderr:\n%s",
			strings.Join(args, " "), firstLines(errb.String(), 4))
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// wantFault checks that s reports a memory fault as a corrupt region.
func wantFault(t *testing.T, what, s string) {
	t.Helper()
	if !strings.Contains(s, "region corrupt") || !strings.Contains(s, "memory fault") {
		t.Errorf("%s: %q, want a corrupt region reported (memory fault)", what, firstLines(s, 8))
	}
}

// faultConfig is a small region whose last pool, at the end of the file, is one 1 MiB buffer.
func faultConfig() shm.Config {
	c := shm.DefaultConfig()
	c.Classes = []shm.Class{{Size: 256, Count: 64}, {Size: 1 << 20, Count: 1}}
	c.Inboxes, c.InboxCapacity, c.Topics, c.Participants, c.HistoryDepth, c.Held = 8, 64, 16, 8, 4, 64
	return c
}

// TestFaultSubPrintsCutMessage: offq sub prints a topic's history, a short message and then
// a 1 MiB one; right after printing the first, the region file is cut in the middle of the
// second's buffer. Reading it to print faults: sub must say so and exit 1.
func TestFaultSubPrintsCutMessage(t *testing.T) {
	dir := t.TempDir()
	b, err := bus.Open("cut", bus.WithDir(dir), bus.WithConfig(faultConfig()), bus.WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := b.Publisher("t", bus.WithHistory(2))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := pub.Publish(ctx, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, bytes.Repeat([]byte("A"), 1<<20)); err != nil {
		t.Fatal(err)
	}
	size := b.Region().Size()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// The 1 MiB buffer ends the file: cutting 512 KiB leaves its header and first half.
	cut := envFaultCut + "=" + shm.Path(dir, "cut") + ":" + strconv.Itoa(size-512<<10)
	code, stdout, stderr := offqChild(t, []string{cut}, "sub", "--dir", dir, "--bus", "cut", "t", "--count", "2", "--timeout", "30s")
	if code != exitRuntime || !strings.Contains(stdout, "hello") {
		t.Errorf("offq sub: status %d, stdout %q; want status %d after printing hello", code, firstLines(stdout, 2), exitRuntime)
	}
	wantFault(t, "offq sub stderr", stderr)
}

// sparseRegion makes a valid region called name and copies it sparse onto a full tmpfs, where
// every page of its tables is a hole that no memory can back: reading one faults. It returns
// the tmpfs directory (or skips the test where a tmpfs cannot be mounted).
func sparseRegion(t *testing.T, name string) string {
	src := t.TempDir()
	b, err := bus.Open(name, bus.WithDir(src), bus.WithConfig(faultConfig()), bus.WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	dir := faultfs.Tmpfs(t, 256<<10)
	faultfs.CopyRegion(t, shm.Path(src, name), shm.Path(dir, name), faultfs.Zero)
	faultfs.Fill(t, dir)
	return dir
}

// TestFaultInfoLsUnbacked: offq info and offq ls read a region whose header validates but
// whose tables are holes on a full tmpfs. info fails with the fault; ls lists the region as
// unreadable, saying why. stat and reap fail with the fault too; rm removes the region.
func TestFaultInfoLsUnbacked(t *testing.T) {
	dir := sparseRegion(t, "sparse")
	t.Run("info", func(t *testing.T) {
		code, _, stderr := offqChild(t, nil, "info", "--dir", dir, "--bus", "sparse")
		if code != exitRuntime {
			t.Errorf("offq info: status %d, want %d", code, exitRuntime)
		}
		wantFault(t, "offq info stderr", stderr)
	})
	t.Run("ls", func(t *testing.T) {
		code, stdout, stderr := offqChild(t, nil, "ls", "--dir", dir)
		if code != exitOK || !strings.Contains(stdout, "sparse") || !strings.Contains(stdout, "unreadable") {
			t.Errorf("offq ls: status %d, stdout %q, stderr %q; want sparse listed as unreadable", code, stdout, firstLines(stderr, 4))
		}
		wantFault(t, "offq ls stdout", stdout)
	})
	// The other commands that read a region take the same doors.
	for _, args := range [][]string{
		{"stat", "--dir", dir, "--bus", "sparse"},
		{"reap", "--dir", dir, "--bus", "sparse"},
	} {
		t.Run(args[0], func(t *testing.T) {
			code, _, stderr := offqChild(t, nil, args...)
			if code != exitRuntime {
				t.Errorf("offq %s: status %d, want %d", args[0], code, exitRuntime)
			}
			wantFault(t, "offq "+args[0]+" stderr", stderr)
		})
	}
	// rm reads only the participant table, which shares the header's page here: it finds no
	// live participant and removes the region (a fault there would be an error, as above).
	t.Run("rm", func(t *testing.T) {
		code, stdout, stderr := offqChild(t, nil, "rm", "--dir", dir, "--bus", "sparse")
		if code != exitOK || !strings.Contains(stdout, "removed") {
			t.Errorf("offq rm: status %d, stdout %q, stderr %q; want the region removed", code, stdout, firstLines(stderr, 4))
		}
	})
}

// must returns v, and panics if err is set: for tests reading a snapshot of a region that is
// known to be whole.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
