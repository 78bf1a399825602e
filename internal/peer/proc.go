package peer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Proc is a running child, seen from the test that started it. Its methods are safe for
// concurrent use.
type Proc struct {
	role string
	cmd  *exec.Cmd
	in   io.WriteCloser
	life *os.File // write end of the lifeline

	mu     sync.Mutex
	lines  []string      // stdout lines not read yet
	notify chan struct{} // signalled when a line arrives

	done chan struct{} // closed when the child has exited and its output is drained
	err  error         // how it exited; read after done
}

// Start runs role in a new copy of the test binary, with env ("KEY=value") added to the
// environment, and stops the test with Fatal if that fails. The child is killed with SIGKILL
// when the test ends (tb.Cleanup), so it never outlives it.
func Start(tb testing.TB, role string, env ...string) *Proc {
	tb.Helper()
	deadline := time.Now().Add(Lifetime)
	if d, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if td, ok := d.Deadline(); ok && td.Before(deadline) {
			deadline = td
		}
	}
	p := &Proc{role: role, notify: make(chan struct{}, 1), done: make(chan struct{})}
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), EnvRole+"="+role, EnvDeadline+"="+strconv.FormatInt(deadline.UnixNano(), 10))
	// A race-enabled child would sleep a second at exit waiting for late reports; it still
	// reports races (exit status 66) without that.
	if gorace := os.Getenv("GORACE"); !strings.Contains(gorace, "atexit_sleep_ms") {
		cmd.Env = append(cmd.Env, "GORACE="+strings.TrimSpace(gorace+" atexit_sleep_ms=0"))
	}
	cmd.Env = append(cmd.Env, env...)
	// The lifeline: the child holds the read end and exits when it reads end of file, which
	// happens when this process is gone however it ends (a kill -9 runs no cleanups).
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		tb.Fatalf("peer %s: %v", role, err)
	}
	cmd.ExtraFiles = []*os.File{lifeR}
	cmd.Env = append(cmd.Env, EnvLifeline+"=3")
	_, bench := tb.(*testing.B)
	stdout := &lineWriter{emit: func(l string) {
		if !bench {
			tb.Logf("%s[%d] stdout: %s", role, cmd.Process.Pid, l)
		}
		p.mu.Lock()
		p.lines = append(p.lines, l)
		p.mu.Unlock()
		select {
		case p.notify <- struct{}{}:
		default:
		}
	}}
	stderr := &lineWriter{emit: func(l string) { tb.Logf("%s[%d] stderr: %s", role, cmd.Process.Pid, l) }}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatalf("peer %s: %v", role, err)
	}
	err = cmd.Start()
	lifeR.Close()
	if err != nil {
		lifeW.Close()
		tb.Fatalf("peer %s: start: %v", role, err)
	}
	p.cmd, p.in, p.life = cmd, in, lifeW
	go func() {
		err := cmd.Wait() // also waits until stdout and stderr are copied
		stdout.flush()
		stderr.flush()
		p.err = err
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.Kill()
		<-p.done // no output may reach tb after the test ends
		p.life.Close()
	})
	return p
}

// Pid returns the child's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

func (p *Proc) String() string { return fmt.Sprintf("peer %s[%d]", p.role, p.Pid()) }

// Send writes one line to the child's stdin (fmt.Sprintf(format, args...) and a newline).
func (p *Proc) Send(format string, args ...any) error {
	if _, err := fmt.Fprintf(p.in, format+"\n", args...); err != nil {
		return fmt.Errorf("%v: send: %w", p, err)
	}
	return nil
}

// CloseStdin closes the child's stdin: its Recv returns io.EOF and its Context is cancelled.
func (p *Proc) CloseStdin() error { return p.in.Close() }

// ReadLine returns the next line the child wrote to stdout, waiting up to timeout (0: do not
// wait). It fails if none comes in time or the child exits without writing one.
func (p *Proc) ReadLine(timeout time.Duration) (string, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		p.mu.Lock()
		if len(p.lines) > 0 {
			l := p.lines[0]
			p.lines = p.lines[1:]
			p.mu.Unlock()
			return l, nil
		}
		p.mu.Unlock()
		select {
		case <-p.notify:
		case <-p.done:
			p.mu.Lock()
			n := len(p.lines)
			p.mu.Unlock()
			if n == 0 {
				return "", fmt.Errorf("%v exited (%v) instead of writing a line", p, p.exitStatus())
			}
		case <-timer.C:
			return "", fmt.Errorf("%v: no line within %v", p, timeout)
		}
	}
}

// Expect reads the next line, which must start with prefix, and returns the rest of it
// without leading and trailing space.
func (p *Proc) Expect(prefix string, timeout time.Duration) (string, error) {
	l, err := p.ReadLine(timeout)
	if err != nil {
		return "", err
	}
	rest, ok := strings.CutPrefix(l, prefix)
	if !ok {
		return "", fmt.Errorf("%v wrote %q, want a line starting with %q", p, l, prefix)
	}
	return strings.TrimSpace(rest), nil
}

// Exited is closed when the child has exited.
func (p *Proc) Exited() <-chan struct{} { return p.done }

// Wait waits up to timeout for the child to exit and returns nil if it exited with status 0.
// A child still running after timeout is killed, and Wait reports it.
func (p *Proc) Wait(timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		p.Kill()
		<-p.done
		return fmt.Errorf("%v: still running after %v; killed", p, timeout)
	}
	if p.err != nil {
		return fmt.Errorf("%v: %v", p, p.exitStatus())
	}
	return nil
}

func (p *Proc) exitStatus() string {
	if p.err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) && ee.ExitCode() == 3 {
		return "exit status 3: its deadline passed"
	}
	return p.err.Error()
}

// Kill sends SIGKILL to the child if it is still running.
func (p *Proc) Kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
	}
}

// lineWriter cuts what is written to it into lines.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(string)
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		w.emit(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(string(w.buf))
		w.buf = nil
	}
}
