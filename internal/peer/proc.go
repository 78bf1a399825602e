package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Spec says what child to start.
type Spec struct {
	Role string
	// Name names the child in errors (default: the role).
	Name string
	// Arg, if not nil, is handed to the child as JSON (Child.Arg).
	Arg any
	// Env is added to the child's environment ("KEY=value").
	Env []string
	// Files are the child's Child.File(0), Child.File(1), ... Launch does not close them.
	Files []*os.File
	// Args are the command-line arguments of the re-executed program (a test binary's
	// -test.run=^$); a program that dispatches before parsing them needs none.
	Args []string
	// Stderr receives the child's stderr (default: this process's).
	Stderr io.Writer
	// OnLine, if set, sees every line the child writes, as it arrives.
	OnLine func(string)
	// Deadline is when the child must be gone (default: Lifetime from now).
	Deadline time.Time
}

// Proc is a running child, seen from the parent. Its methods are safe for concurrent use.
type Proc struct {
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	life *os.File // write end of the lifeline

	inMu sync.Mutex // serialises writes to stdin
	enc  *json.Encoder

	mu     sync.Mutex
	lines  []string      // stdout lines not read yet
	notify chan struct{} // signalled when a line arrives

	done chan struct{} // closed when the child has exited and its output is drained
	err  error         // how it exited; read after done
}

// Launch starts spec's role in a new copy of this program and returns once the child runs
// it (at most StartTimeout). The child ends when Stop or Kill is called, when its deadline
// passes, or when this process ends, whichever comes first.
func Launch(spec Spec) (*Proc, error) {
	if spec.Name == "" {
		spec.Name = spec.Role
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("peer %s: find this program: %w", spec.Name, err)
	}
	deadline := spec.Deadline
	if deadline.IsZero() {
		deadline = time.Now().Add(Lifetime)
	}
	p := &Proc{name: spec.Name, notify: make(chan struct{}, 1), done: make(chan struct{})}
	cmd := exec.Command(exe, spec.Args...)
	cmd.Env = append(os.Environ(), EnvRole+"="+spec.Role, EnvDeadline+"="+strconv.FormatInt(deadline.UnixNano(), 10),
		EnvLifeline+"=3")
	if spec.Arg != nil {
		b, err := json.Marshal(spec.Arg)
		if err != nil {
			return nil, fmt.Errorf("peer %s: argument: %w", spec.Name, err)
		}
		cmd.Env = append(cmd.Env, EnvArg+"="+string(b))
	}
	// A race-enabled child would sleep a second at exit waiting for late reports; it still
	// reports races (exit status 66) without that.
	if gorace := os.Getenv("GORACE"); !strings.Contains(gorace, "atexit_sleep_ms") {
		cmd.Env = append(cmd.Env, "GORACE="+strings.TrimSpace(gorace+" atexit_sleep_ms=0"))
	}
	cmd.Env = append(cmd.Env, spec.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// The lifeline: the child holds the read end and exits when it reads end of file, which
	// happens when this process is gone however it ends (a kill -9 runs no cleanups).
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", spec.Name, err)
	}
	cmd.ExtraFiles = append([]*os.File{lifeR}, spec.Files...)
	started := make(chan struct{})
	greeted := false // only the first line may be the hello; emit runs under the writer's lock
	stdout := &lineWriter{emit: func(l string) {
		if !greeted {
			greeted = true
			if l == hello {
				close(started)
				return
			}
		}
		if spec.OnLine != nil {
			spec.OnLine(l)
		}
		p.mu.Lock()
		p.lines = append(p.lines, l)
		p.mu.Unlock()
		select {
		case p.notify <- struct{}{}:
		default:
		}
	}}
	cmd.Stdout, cmd.Stderr = stdout, spec.Stderr
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		lifeR.Close()
		lifeW.Close()
		return nil, fmt.Errorf("peer %s: %w", spec.Name, err)
	}
	err = spawn(cmd.Start)
	lifeR.Close()
	if err != nil {
		lifeW.Close()
		in.Close()
		return nil, fmt.Errorf("peer %s: start: %w", spec.Name, err)
	}
	p.cmd, p.in, p.life, p.enc = cmd, in, lifeW, json.NewEncoder(in)
	go func() {
		err := cmd.Wait() // also waits until stdout and stderr are copied
		stdout.flush()
		p.err = err
		p.life.Close()
		spawned()
		close(p.done)
	}()
	t := time.NewTimer(StartTimeout)
	defer t.Stop()
	select {
	case <-started:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%v exited (%v) before running its role", p, p.exitStatus())
	case <-t.C:
		p.Kill()
		<-p.done
		return nil, fmt.Errorf("%v did not start within %v; killed", p, StartTimeout)
	}
}

// Start runs role in a new copy of the test binary, with env ("KEY=value") added to the
// environment, and stops the test with Fatal if that fails. The child's output goes to the
// test log (its stdout too, except in benchmarks), prefixed with the role and pid. The child
// is killed with SIGKILL when the test ends (tb.Cleanup), so it never outlives it.
func Start(tb testing.TB, role string, env ...string) *Proc {
	tb.Helper()
	spec := Spec{Role: role, Env: env, Args: []string{"-test.run=^$", "-test.bench=^$"}}
	if d, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if td, ok := d.Deadline(); ok && td.Before(time.Now().Add(Lifetime)) {
			spec.Deadline = td
		}
	}
	// The pid is known only once the child runs; its first output comes after that.
	var pid int
	var mu sync.Mutex
	prefix := func() string {
		mu.Lock()
		defer mu.Unlock()
		return role + "[" + strconv.Itoa(pid) + "]"
	}
	stderr := &lineWriter{emit: func(l string) { tb.Logf("%s stderr: %s", prefix(), l) }}
	spec.Stderr = stderr
	if _, bench := tb.(*testing.B); !bench {
		spec.OnLine = func(l string) { tb.Logf("%s stdout: %s", prefix(), l) }
	}
	p, err := Launch(spec)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	mu.Lock()
	pid = p.Pid()
	mu.Unlock()
	tb.Cleanup(func() {
		p.Kill()
		<-p.done // no output may reach tb after the test ends
		stderr.flush()
	})
	return p
}

// Pid returns the child's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

func (p *Proc) String() string {
	if p.cmd == nil || p.cmd.Process == nil {
		return "peer " + p.name
	}
	return fmt.Sprintf("peer %s[%d]", p.name, p.Pid())
}

// Send writes one line to the child's stdin (fmt.Sprintf(format, args...) and a newline).
func (p *Proc) Send(format string, args ...any) error {
	p.inMu.Lock()
	defer p.inMu.Unlock()
	if _, err := fmt.Fprintf(p.in, format+"\n", args...); err != nil {
		return fmt.Errorf("%v: send: %w", p, err)
	}
	return nil
}

// Encode writes v to the child's stdin as one line of JSON, for Child.Decode.
func (p *Proc) Encode(v any) error {
	p.inMu.Lock()
	defer p.inMu.Unlock()
	if err := p.enc.Encode(v); err != nil {
		return fmt.Errorf("%v: send: %w", p, err)
	}
	return nil
}

// CloseStdin closes the child's stdin: its Recv returns io.EOF and its Context is cancelled.
func (p *Proc) CloseStdin() error { return p.in.Close() }

// Next returns the next line the child wrote to stdout, waiting until ctx is done. It fails
// if the child exits without writing one.
func (p *Proc) Next(ctx context.Context) (string, error) {
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
		case <-ctx.Done():
			return "", fmt.Errorf("%v: no line: %w", p, context.Cause(ctx))
		}
	}
}

// ReadLine returns the next line the child wrote to stdout, waiting up to timeout (0: do not
// wait). It fails if none comes in time or the child exits without writing one.
func (p *Proc) ReadLine(timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeoutCause(context.Background(), timeout, fmt.Errorf("none within %v", timeout))
	defer cancel()
	return p.Next(ctx)
}

// Decode reads the next line the child wrote (with Child.Encode) into v, waiting until ctx
// is done.
func (p *Proc) Decode(ctx context.Context, v any) error {
	l, err := p.Next(ctx)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(l), v); err != nil {
		return fmt.Errorf("%v wrote %q: %w", p, l, err)
	}
	return nil
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

// Err returns how the child exited: nil for status 0. Call it after Exited is closed.
func (p *Proc) Err() error {
	<-p.done
	if p.err != nil {
		return fmt.Errorf("%v: %v", p, p.exitStatus())
	}
	return nil
}

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
	return p.Err()
}

// Stop tells the child to finish (its stdin ends) and waits up to timeout for it to exit,
// then kills it. It returns Wait's error; calling it again is harmless.
func (p *Proc) Stop(timeout time.Duration) error {
	p.CloseStdin()
	return p.Wait(timeout)
}

func (p *Proc) exitStatus() string {
	if p.err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		switch ee.ExitCode() {
		case exitDeadline:
			return "exit status 3: its deadline passed"
		case exitOrphaned:
			return "exit status 4: its parent was gone"
		}
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
