package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	Dispatch(map[string]Role{
		"echo": func(c *Child) error {
			c.Send("hello %s", os.Getenv("GREETING"))
			for {
				l, err := c.Recv()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				c.Send("%s", strings.ToUpper(l))
			}
		},
		"fail": func(c *Child) error { return errors.New("as asked") },
		"wait": func(c *Child) error { // until stopped or past its deadline
			<-c.Context().Done()
			if c.Stopped() {
				return nil
			}
			return c.Context().Err()
		},
		"hang": func(c *Child) error { // ignores its deadline
			c.Send("hanging")
			time.Sleep(time.Hour)
			return nil
		},
		"parent":  roleParent,
		"typed":   roleTyped,
		"files":   roleFiles,
		"threads": roleThreads,
	})
	goleak.VerifyTestMain(m) // the spawner too ends once no child runs
}

func TestEcho(t *testing.T) {
	p := Start(t, "echo", "GREETING=world")
	if rest, err := p.Expect("hello", 10*time.Second); err != nil || rest != "world" {
		t.Fatalf("Expect: %q, %v", rest, err)
	}
	for _, s := range []string{"a", "bc"} {
		if err := p.Send("%s", s); err != nil {
			t.Fatal(err)
		}
		if l, err := p.ReadLine(10 * time.Second); err != nil || l != strings.ToUpper(s) {
			t.Fatalf("ReadLine: %q, %v", l, err)
		}
	}
	if _, err := p.ReadLine(0); err == nil {
		t.Error("ReadLine(0) returned a line that was never sent")
	}
	p.CloseStdin()
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReadLine(time.Second); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("ReadLine after exit: %v", err)
	}
}

func TestFailingRole(t *testing.T) {
	p := Start(t, "fail")
	if err := p.Wait(10 * time.Second); err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("Wait: %v, want exit status 1", err)
	}
}

func TestUnknownRole(t *testing.T) {
	p, err := Launch(Spec{Role: "no-such-role", Stderr: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "exit status 2") {
		t.Fatalf("Launch: %v, %v; want exit status 2", p, err)
	}
}

func TestStopAndDeadline(t *testing.T) {
	p := Start(t, "wait")
	p.CloseStdin()
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatalf("stopped child: %v", err)
	}
	soon := EnvDeadline + "=" + strconv.FormatInt(time.Now().Add(100*time.Millisecond).UnixNano(), 10)
	p = Start(t, "wait", soon)
	if err := p.Wait(10 * time.Second); err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("child past its deadline: %v, want exit status 1", err)
	}
}

func TestHardDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the grace period")
	}
	soon := EnvDeadline + "=" + strconv.FormatInt(time.Now().Add(100*time.Millisecond).UnixNano(), 10)
	p := Start(t, "hang", soon)
	if err := p.Wait(grace + 10*time.Second); err == nil || !strings.Contains(err.Error(), "deadline passed") {
		t.Fatalf("Wait: %v, want exit after the deadline", err)
	}
}

func TestKilledAtCleanup(t *testing.T) {
	var p *Proc
	t.Run("inner", func(t *testing.T) {
		p = Start(t, "hang")
		if _, err := p.Expect("hanging", 10*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	select {
	case <-p.Exited():
	default:
		t.Fatal("child still running after its test ended")
	}
}

func TestParentGone(t *testing.T) {
	p := Start(t, "hang")
	if _, err := p.Expect("hanging", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	p.life.Close() // as if this process had died
	if err := p.Wait(10 * time.Second); err == nil || !strings.Contains(err.Error(), "exit status 4") {
		t.Fatalf("Wait: %v, want exit status 4", err)
	}
}

// roleParent starts two children that hang, one of them with its lifeline unwatched (so
// that only the parent-death signal can end it), says their pids, and waits to be killed.
func roleParent(c *Child) error {
	var pids []string
	for _, env := range [][]string{nil, {EnvLifeline + "=none"}} {
		p, err := Launch(Spec{Role: "hang", Env: env, Args: []string{"-test.run=^$"}})
		if err != nil {
			return err
		}
		if _, err := p.ReadLine(10 * time.Second); err != nil {
			return err
		}
		pids = append(pids, strconv.Itoa(p.Pid()))
	}
	c.Send("children %s", strings.Join(pids, " "))
	<-c.Context().Done()
	return nil
}

// TestParentKilled kills a parent with SIGKILL and checks that its children are gone soon
// after: the one watching its lifeline, and the one only the parent-death signal can end.
// Tests, examples, offq bench and offq demo all start their children this way.
func TestParentKilled(t *testing.T) {
	p := Start(t, "parent")
	rest, err := p.Expect("children", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, s := range strings.Fields(rest) {
		pid, _ := strconv.Atoi(s)
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatalf("pidfd_open %d: %v", pid, err)
		}
		defer unix.Close(fd)
		fds = append(fds, fd)
	}
	if len(fds) != 2 {
		t.Fatalf("children %q", rest)
	}
	p.Kill()
	const bound = 10 * time.Second
	start := time.Now()
	for i, fd := range fds {
		// A pidfd polls readable once its process has exited.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(pfd, int((bound - time.Since(start)).Milliseconds()))
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				t.Fatalf("child %d still running %v after its parent was killed (%v)", i, bound, err)
			}
			break
		}
	}
	t.Logf("children gone %v after the parent was killed", time.Since(start).Round(time.Millisecond))
}

// roleThreads starts a child from a goroutine that ends locked to its thread (the runtime
// ends that thread), then checks the child is still there: the parent-death signal follows
// the spawner's thread, not the caller's.
func roleThreads(c *Child) error {
	pc := make(chan *Proc, 1)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		p, err := Launch(Spec{Role: "typed", Args: []string{"-test.run=^$"}})
		errc <- err
		pc <- p
	}()
	if err := <-errc; err != nil {
		return err
	}
	p := <-pc
	for i := range 3 {
		runtime.GC() // give the runtime a chance to end the thread
		if err := p.Encode(typedMsg{N: i}); err != nil {
			return err
		}
		var m typedMsg
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := p.Decode(ctx, &m)
		cancel()
		if err != nil {
			return err
		}
	}
	if err := p.Stop(10 * time.Second); err != nil {
		return err
	}
	c.Send("ok")
	return nil
}

func TestThreadEnds(t *testing.T) {
	p := Start(t, "threads")
	if _, err := p.Expect("ok", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
}

type typedMsg struct {
	N    int    `json:"n"`
	Text string `json:"text,omitempty"`
}

// roleTyped answers every typed message with N+1 and the argument's text.
func roleTyped(c *Child) error {
	var arg typedMsg
	if os.Getenv(EnvArg) != "" {
		if err := c.Arg(&arg); err != nil {
			return err
		}
	}
	for {
		var m typedMsg
		err := c.Decode(&m)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := c.Encode(typedMsg{N: m.N + 1, Text: arg.Text}); err != nil {
			return err
		}
	}
}

func TestTyped(t *testing.T) {
	p, err := Launch(Spec{Role: "typed", Arg: typedMsg{Text: "arg"}, Args: []string{"-test.run=^$"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		if err := p.Encode(typedMsg{N: i}); err != nil {
			t.Fatal(err)
		}
		var m typedMsg
		if err := p.Decode(ctx, &m); err != nil || m.N != i+1 || m.Text != "arg" {
			t.Fatalf("Decode: %+v, %v", m, err)
		}
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// roleFiles echoes what it reads from its first file to its second.
func roleFiles(c *Child) error {
	in, out := c.File(0), c.File(1)
	b := make([]byte, 5)
	if _, err := io.ReadFull(in, b); err != nil {
		return err
	}
	_, err := fmt.Fprintf(out, "%s!", b)
	return err
}

func TestFiles(t *testing.T) {
	toR, toW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromR, fromW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Launch(Spec{Role: "files", Files: []*os.File{toR, fromW}, Args: []string{"-test.run=^$"}})
	toR.Close()
	fromW.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	toW.Write([]byte("hello"))
	toW.Close()
	b, err := io.ReadAll(fromR)
	if err != nil || string(b) != "hello!" {
		t.Fatalf("read %q, %v", b, err)
	}
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestNoHello: a child that exits before running its role makes Launch fail at once.
func TestNoHello(t *testing.T) {
	_, err := Launch(Spec{Role: "echo", Env: []string{EnvRole + "="}, Args: []string{"-test.run=^$"}, Stderr: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "before running its role") {
		t.Fatalf("Launch: %v", err)
	}
}
