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
		out, code, err := RunCommand(context.Background(), "sleep 60 & echo $!", nil)
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
