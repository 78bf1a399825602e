package main

// The processes of offq bench: this program run again as the hidden bench-peer subcommand (as
// offq demo runs demo-peer), talking in JSON lines on its stdout. Closing a child's stdin tells
// it to finish; it is also what the child sees if this process dies, so no child outlives it.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Line types a bench child writes.
const (
	benchReady  = "ready"  // set up, pinned, waiting for messages
	benchCounts = "result" // a subscriber's counts, after the end marker
)

// benchLine is one line a bench child writes on its stdout.
type benchLine struct {
	Type     string `json:"type"`
	Count    uint64 `json:"count,omitempty"`    // messages received in the measured phase
	First    int64  `json:"first,omitempty"`    // transport.Now at the first of them
	End      int64  `json:"end,omitempty"`      // transport.Now at the end marker
	Dropped  uint64 `json:"dropped,omitempty"`  // sequence numbers never received
	Disorder uint64 `json:"disorder,omitempty"` // sequence numbers at or below one already received
}

// benchProc is a running child.
type benchProc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan benchLine
	done  chan struct{} // closed when the child has exited and its output is read
	err   error         // how it exited; read after done
	tail  *tailBuffer   // the end of its stderr, for error messages

	stopping atomic.Bool
}

// start runs a child with args after "bench-peer" and the common flags, and extra files as
// its descriptors 3, 4, ... If the child exits before stop is called, fail is called with the
// reason (it cancels the case).
func (bn *bencher) start(name string, fail context.CancelCauseFunc, extra []*os.File, args ...string) (*benchProc, error) {
	full := append([]string{"bench-peer", "--dir", bn.tmp, "--log-level", bn.a.logLevel, "--cpu", fmt.Sprint(bn.cpus[1])}, args...)
	cmd := exec.Command(bn.exe, full...)
	cmd.Env = append(os.Environ(), envDemoPeer+"=1")
	// A race-enabled child would sleep a second at exit waiting for late reports.
	if g := os.Getenv("GORACE"); !strings.Contains(g, "atexit_sleep_ms") {
		cmd.Env = append(cmd.Env, "GORACE="+strings.TrimSpace(g+" atexit_sleep_ms=0"))
	}
	cmd.ExtraFiles = extra
	p := &benchProc{name: name, cmd: cmd, lines: make(chan benchLine, 16), done: make(chan struct{}), tail: &tailBuffer{max: 4096}}
	cmd.Stderr = p.tail
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	bn.a.log.Debug("bench: started", zap.String("child", name), zap.Int("child_pid", cmd.Process.Pid), zap.Strings("args", full))
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l benchLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				bn.a.log.Warn("bench: child wrote a line that is not JSON", zap.String("child", name), zap.ByteString("line", sc.Bytes()))
				continue
			}
			select {
			case p.lines <- l:
			default:
				bn.a.log.Warn("bench: child wrote more lines than expected", zap.String("child", name))
			}
		}
		io.Copy(io.Discard, stdout)
		p.err = cmd.Wait()
		close(p.done)
		if !p.stopping.Load() {
			fail(p.failure())
		}
	}()
	return p, nil
}

// failure describes how the child ended early.
func (p *benchProc) failure() error {
	why := "exit status 0"
	if p.err != nil {
		why = p.err.Error()
	}
	if t := strings.TrimSpace(p.tail.String()); t != "" {
		why += ": " + t
	}
	return fmt.Errorf("%s ended early: %s", p.name, why)
}

// expect waits for the child's next line, which must be of type typ.
func (p *benchProc) expect(ctx context.Context, typ string) (benchLine, error) {
	select {
	case l := <-p.lines:
		if l.Type != typ {
			return l, fmt.Errorf("%s said %q, want %q", p.name, l.Type, typ)
		}
		return l, nil
	case <-p.done:
		select {
		case l := <-p.lines: // said it, then exited
			if l.Type == typ {
				return l, nil
			}
		default:
		}
		return benchLine{}, p.failure()
	case <-ctx.Done():
		return benchLine{}, fmt.Errorf("waiting for %s to say %s: %w", p.name, typ, context.Cause(ctx))
	}
}

// stop tells the child to finish (its stdin ends) and waits for it to exit, killing it after
// a grace period. It returns the child's error, if it failed.
func (p *benchProc) stop() error {
	p.stopping.Store(true)
	p.stdin.Close()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not finish; killed", p.name)
	}
	if p.err != nil {
		return p.failure()
	}
	return nil
}

// stopAll stops every child and joins their errors.
func stopAll(ps []*benchProc) error {
	for _, p := range ps {
		p.stopping.Store(true)
		p.stdin.Close()
	}
	var errs []error
	for _, p := range ps {
		if err := p.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
