package reqcli

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunCommandBackgroundChild: a command whose shell exits while a child it started in the
// background still holds its standard output replies with what it wrote when the shell
// exited. It used to wait for the child (here a minute), holding the reply and every later
// request back.
func TestRunCommandBackgroundChild(t *testing.T) {
	type result struct {
		out  []byte
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		out, _, code, err := RunCommand(context.Background(), "sleep 60 & echo $!", nil, -1)
		done <- result{out, code, err}
	}()
	select {
	case r := <-done:
		pid, perr := strconv.Atoi(strings.TrimSpace(string(r.out)))
		if perr == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if r.err != nil || r.code != 0 || perr != nil {
			t.Fatalf("RunCommand: %q, status %d, %v; want the child's pid, status 0", r.out, r.code, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RunCommand waited for a background child that holds its standard output")
	}
}

// TestRunCommandLimit: RunCommand keeps no more than its limit of the output, reads the rest
// and counts it all, so that offq reply does not hold a command's gigabytes in memory to
// refuse them (it used to keep all of it).
func TestRunCommandLimit(t *testing.T) {
	out, size, code, err := RunCommand(context.Background(), "head -c 100000 /dev/zero; exit 3", nil, 10)
	if len(out) != 10 || size != 100000 || code != 3 || err == nil {
		t.Fatalf("RunCommand: %d bytes kept, %d counted, status %d, %v; want 10, 100000, 3 and an error", len(out), size, code, err)
	}
	if out, size, _, err := RunCommand(context.Background(), "printf abc", nil, 3); string(out) != "abc" || size != 3 || err != nil {
		t.Fatalf("RunCommand at its limit: %q, %d, %v", out, size, err)
	}
}
