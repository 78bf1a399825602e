package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/offq/offq/bus"
)

// offqProc is the offq command in a process of its own, as a user runs it in a shell: this
// test binary, which TestMain turns into offq when envDemoPeer is set.
type offqProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser
	done chan struct{} // closed when it has exited and its output is read

	mu     sync.Mutex
	stdout bytes.Buffer
	stderr []string
	notify chan struct{} // a stderr line arrived
}

// startOffq runs offq args in a new process, with stdin from the returned process's in.
func startOffq(t *testing.T, args ...string) *offqProc {
	t.Helper()
	return startOffqBin(t, os.Args[0], args...)
}

// startOffqBin is startOffq with another offq binary, bin (built for another architecture).
func startOffqBin(t *testing.T, bin string, args ...string) *offqProc {
	t.Helper()
	p := &offqProc{t: t, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), envDemoPeer+"=1", "GORACE=atexit_sleep_ms=0")
	p.cmd.Stdout = &lockedBuffer{mu: &p.mu, b: &p.stdout}
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr = append(p.stderr, sc.Text())
			p.mu.Unlock()
			select {
			case p.notify <- struct{}{}:
			default:
			}
		}
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

type lockedBuffer struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// waitStderr waits for a line of stderr containing s.
func (p *offqProc) waitStderr(s string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for _, l := range p.stderr {
			if strings.Contains(l, s) {
				p.mu.Unlock()
				return
			}
		}
		p.mu.Unlock()
		select {
		case <-p.notify:
		case <-p.done:
			p.mu.Lock()
			defer p.mu.Unlock()
			p.t.Fatalf("%v exited without saying %q; stderr:\n%s", p.cmd.Args[1:], s, strings.Join(p.stderr, "\n"))
		case <-deadline.C:
			p.t.Fatalf("%v did not say %q within %v", p.cmd.Args[1:], s, timeout)
		}
	}
}

// wait waits for the process to exit and returns its status and output.
func (p *offqProc) wait(timeout time.Duration) (code int, stdout, stderr string) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%v still running after %v", p.cmd.Args[1:], timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.ProcessState.ExitCode(), p.stdout.String(), strings.Join(p.stderr, "\n")
}

func createBus(t *testing.T, dir, name string) {
	t.Helper()
	if code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", name, "create", "--classes", "256:256,4KiB:16"); code != exitOK {
		t.Fatalf("create: status %d, %s", code, stderr)
	}
}

// TestPubSubProcesses: sub in two processes, pub in a third reading its stdin, as in three
// shells; both subscribers see every line, in order.
func TestPubSubProcesses(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "shell")
	raw := startOffq(t, "--dir", dir, "--bus", "shell", "sub", "demo.>", "--count", "4", "--raw")
	pretty := startOffq(t, "--dir", dir, "--bus", "shell", "sub", "demo.temp", "--count", "4")
	pub := startOffq(t, "--dir", dir, "--bus", "shell", "pub", "demo.temp", "--wait-subs", "2")
	lines := []string{"21.5", "hello world", "", "x\x01y"}
	if _, err := io.WriteString(pub.in, strings.Join(lines, "\n")+"\n"); err != nil {
		t.Fatal(err)
	}
	pub.in.Close()
	if code, _, stderr := pub.wait(30 * time.Second); code != exitOK || !strings.Contains(stderr, "published 4 messages (18 B) on demo.temp to 2 subscribers") {
		t.Fatalf("pub: status %d, stderr %q", code, stderr)
	}
	code, out, stderr := raw.wait(30 * time.Second)
	if code != exitOK || out != strings.Join(lines, "\n")+"\n" || !strings.Contains(stderr, "received 4 messages") {
		t.Errorf("sub --raw: status %d, stdout %q, stderr %q", code, out, stderr)
	}
	code, out, _ = pretty.wait(30 * time.Second)
	want := "demo.temp #1: 21.5\ndemo.temp #2: hello world\ndemo.temp #3: \ndemo.temp #4: 0x780179 (3 B)\n"
	if code != exitOK || out != want {
		t.Errorf("sub: status %d, stdout %q, want %q", code, out, want)
	}
}

// TestPubSubJSON: pub --json encodes MessagePack, sub --json decodes it.
func TestPubSubJSON(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "js")
	sub := startOffq(t, "--dir", dir, "--bus", "js", "sub", "cfg.*", "--json", "--count", "3")
	bare := startOffq(t, "--dir", dir, "--bus", "js", "sub", "cfg.*", "--json", "--raw", "--count", "2", "-q")
	code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "js", "pub", "cfg.a", "--wait-subs", "2",
		"--json", "--count", "2", "--data", `{"n": 1, "big": 18446744073709551615, "f": 2.5, "l": [true, null, "s"]}`)
	if code != exitOK {
		t.Fatalf("pub --json: status %d, %s", code, stderr)
	}
	// Not JSON: an error, nothing published. Plain bytes published: sub --json says they are
	// not msgpack.
	if code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "js", "pub", "cfg.a", "--json", "--data", "{nope"); code != exitRuntime || !strings.Contains(stderr, "--json") {
		t.Errorf("pub --json of bad JSON: status %d, %q", code, stderr)
	}
	if code, _, _ := runOffq(t, context.Background(), "--dir", dir, "--bus", "js", "pub", "cfg.b", "--data", "\xc1"); code != exitOK {
		t.Fatalf("pub: status %d", code)
	}
	code, out, _ := sub.wait(30 * time.Second)
	ls := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(ls) != 3 {
		t.Fatalf("sub --json: status %d, %q", code, out)
	}
	for i, l := range ls[:2] {
		var m struct {
			Topic string         `json:"topic"`
			Seq   uint64         `json:"seq"`
			Data  map[string]any `json:"data"`
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if m.Topic != "cfg.a" || m.Seq != uint64(i+1) || m.Data["n"] != 1.0 || m.Data["f"] != 2.5 || fmt.Sprint(m.Data["l"]) != "[true <nil> s]" {
			t.Errorf("line %d: %+v", i, m)
		}
		if !strings.Contains(l, `"big":18446744073709551615`) {
			t.Errorf("line %d: the large integer did not survive: %s", i, l)
		}
	}
	if !strings.Contains(ls[2], `"topic":"cfg.b"`) || !strings.Contains(ls[2], `"error":`) || !strings.Contains(ls[2], `"bytes":"wQ=="`) {
		t.Errorf("sub --json of a payload that is not msgpack: %s", ls[2])
	}
	code, out, _ = bare.wait(30 * time.Second)
	if code != exitOK || !regexp.MustCompile(`^(\{"big":18446744073709551615,"f":2.5,"l":\[true,null,"s"\],"n":1\}\n|\{[^\n]*\}\n){2}$`).MatchString(out) {
		t.Errorf("sub --json --raw: status %d, %q", code, out)
	}
}

// TestSubInterrupt: SIGINT ends sub cleanly (status 0) and it detaches from the bus.
func TestSubInterrupt(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "intr")
	sub := startOffq(t, "--dir", dir, "--bus", "intr", "sub", ">")
	sub.waitStderr("subscribed to > on bus intr", 30*time.Second)
	if code, _, _ := runOffq(t, context.Background(), "--dir", dir, "--bus", "intr", "pub", "a.b", "--size", "100", "--count", "3"); code != exitOK {
		t.Fatalf("pub: status %d", code)
	}
	sub.cmd.Process.Signal(syscall.SIGINT)
	code, out, stderr := sub.wait(30 * time.Second)
	if code != exitOK || strings.Count(out, "a.b #") != 3 || !strings.Contains(out, "a.b #3: message 3 message 3 ") || !strings.Contains(stderr, "received 3 messages") {
		t.Fatalf("sub after SIGINT: status %d, stdout %q, stderr %q", code, out, stderr)
	}
	code, out, _ = runOffq(t, context.Background(), "--dir", dir, "--bus", "intr", "info", "--json")
	var inf busInfo
	if code != exitOK || json.Unmarshal([]byte(out), &inf) != nil || inf.Live != 0 || inf.Dead != 0 || inf.Subscriptions != 0 {
		t.Errorf("after sub exited: %d %+v", code, inf)
	}
}

// TestLsDeadParticipant: a subscriber killed with SIGKILL is listed as dead, awaiting reaping;
// rm removes such a bus without --force.
func TestLsDeadParticipant(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "crash")
	sub := startOffq(t, "--dir", dir, "--bus", "crash", "sub", "x")
	sub.waitStderr("subscribed", 30*time.Second)
	code, out, _ := runOffq(t, context.Background(), "--dir", dir, "ls")
	if code != exitOK || !regexp.MustCompile(`(?m)^crash .* 1 +0 +ok$`).MatchString(out) {
		t.Errorf("ls with a live subscriber: %d\n%s", code, out)
	}
	sub.cmd.Process.Kill()
	sub.wait(30 * time.Second)
	code, out, _ = runOffq(t, context.Background(), "--dir", dir, "ls")
	if code != exitOK || !regexp.MustCompile(`(?m)^crash .* 0 +1 +1 dead awaiting reaping$`).MatchString(out) {
		t.Errorf("ls after kill -9: %d\n%s", code, out)
	}
	code, out, _ = runOffq(t, context.Background(), "--dir", dir, "--bus", "crash", "info")
	if code != exitOK || !strings.Contains(out, "0 live, 1 dead awaiting reaping") || !strings.Contains(out, "dead, awaiting reaping") {
		t.Errorf("info after kill -9: %d\n%s", code, out)
	}
	if code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "rm", "crash"); code != exitOK {
		t.Errorf("rm of a bus with only dead participants: %d %s", code, stderr)
	}
}

func TestPubSubErrors(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "default")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"pub", "--help"}, exitOK, ""},
		{[]string{"sub", "--help"}, exitOK, ""},
		{[]string{"--bus", "nobus", "pub", "a", "--data", "x"}, exitRuntime, `bus "nobus" not found in ` + dir + ` (create it with 'offq --dir ` + dir + ` create --bus nobus', or pass --create)`},
		{[]string{"--bus", "nobus", "sub", "a", "--timeout", "1ms"}, exitRuntime, `bus "nobus" not found`},
		{[]string{"pub"}, exitUsage, "pub takes one argument, TOPIC (got 0)"},
		{[]string{"pub", "a.*", "--data", "x"}, exitUsage, "a.*"},
		{[]string{"sub", "a..b"}, exitUsage, "a..b"},
		{[]string{"pub", "a", "--data", "x", "--size", "3"}, exitUsage, "alternatives"},
		{[]string{"pub", "a", "--size", "0"}, exitUsage, "--size 0"},
		{[]string{"pub", "a", "--size", "8", "--json"}, exitUsage, "drop --json"},
		{[]string{"pub", "a", "--rate", "-1", "--data", "x"}, exitUsage, "--rate"},
		{[]string{"pub", "a", "--data", "x", "--inboxes", "4"}, exitUsage, "need --create"},
		{[]string{"pub", "a", "--size", "8192"}, exitUsage, "--size 8192: larger than the largest buffer"},
		{[]string{"pub", "a", "--data", "x", "--wait-subs", "1", "--timeout", "20ms"}, exitRuntime, "0 of 1 subscribers to a after 20ms"},
		{[]string{"pub", "a", "--file", dir + "/missing"}, exitRuntime, "no such file"},
		{[]string{"sub", "a", "--overflow", "drop"}, exitUsage, `--overflow "drop"`},
		{[]string{"sub", "a", "--wait", "nap"}, exitUsage, `--wait "nap"`},
		{[]string{"sub", "a", "--queue-depth", "3", "--timeout", "1ms"}, exitUsage, "--queue-depth 3"},
		{[]string{"sub", "a", "--count", "3", "--timeout", "20ms"}, exitRuntime, "0 of 3 messages within --timeout 20ms"},
		{[]string{"sub", "a", "--timeout", "20ms"}, exitOK, "received 0 messages"},
	} {
		args := append([]string{"--dir", dir}, tc.args...)
		code, _, stderr := runOffq(t, context.Background(), args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("offq %s: status %d, stderr %q; want status %d and %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.want)
		}
	}
}

// TestPubCreateFile: pub --create makes a missing bus; --file publishes its lines; history
// reaches a subscriber that comes later.
func TestPubCreateFile(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/lines.txt"
	if err := os.WriteFile(file, []byte("a\nb\nc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "new", "pub", "log.x", "--create", "--inboxes", "4",
		"--file", file, "--history", "2", "--count", "2")
	if code != exitOK || !strings.Contains(stderr, "published 2 messages (2 B) on log.x to 0 subscribers") {
		t.Fatalf("pub --create --file: status %d, %q", code, stderr)
	}
	code, out, _ := runOffq(t, context.Background(), "--dir", dir, "--bus", "new", "sub", "log.*", "--count", "2", "--raw", "--timeout", "10s")
	if code != exitOK || out != "a\nb\n" {
		t.Errorf("late sub with history: status %d, %q", code, out)
	}
	// --rate paces: 11 messages at 1000/s take at least 10 ms.
	start := time.Now()
	if code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "new", "pub", "log.x", "--size", "16", "--count", "11", "--rate", "1000"); code != exitOK || !strings.Contains(stderr, "published 11 messages (176 B)") {
		t.Errorf("pub --rate: status %d, %q", code, stderr)
	}
	if d := time.Since(start); d < 10*time.Millisecond {
		t.Errorf("11 messages at --rate 1000 took %v", d)
	}
	code, out, _ = runOffq(t, context.Background(), "--dir", dir, "--bus", "new", "info", "--json")
	var inf busInfo
	if code != exitOK || json.Unmarshal([]byte(out), &inf) != nil || inf.Config.Inboxes != 4 {
		t.Errorf("bus made by pub --create: %+v", inf)
	}
}

// TestSubReportsDrops: sub's summary says what its queue dropped while it ran, by policy, and
// nothing of drops when it dropped nothing.
func TestSubReportsDrops(t *testing.T) {
	dir := t.TempDir()
	b, err := bus.Open("drops", bus.WithDir(dir), bus.WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	oldest, err := b.Subscribe("d.>", bus.WithQueueDepth(4), bus.WithOverflow(bus.DropOldest))
	if err != nil {
		t.Fatal(err)
	}
	newest, err := b.Subscribe("d.>", bus.WithQueueDepth(4), bus.WithOverflow(bus.DropNewest))
	if err != nil {
		t.Fatal(err)
	}
	quiet, err := b.Subscribe("q.>", bus.WithQueueDepth(4))
	if err != nil {
		t.Fatal(err)
	}
	blocking, err := b.Subscribe("b.>", bus.WithQueueDepth(2), bus.WithOverflow(bus.Block))
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.Publisher("d.x")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := p.Publish(context.Background(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Two fill the blocking queue; the third waits for room until its context ends, and is
	// counted as dropped on the queue's side (Publish does not fail for it).
	pb, err := b.Publisher("b.x")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := pb.Publish(context.Background(), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := pb.Publish(ctx, []byte("x")); err != nil && ctx.Err() == nil {
		t.Fatal(err)
	}
	const hint = ": --queue-depth for a deeper queue, --overflow block to hold publishers back instead"
	for _, tc := range []struct {
		s    *bus.Subscription
		want string
	}{
		{oldest, "; its queue dropped 6 messages (drop-oldest)" + hint},
		{newest, "; its queue dropped 6 messages (drop-newest)" + hint},
		{blocking, "; its queue dropped 1 message (block timeout): --queue-depth for a deeper queue (publishers gave up waiting for room)"},
		{quiet, ""},
	} {
		if got := subDrops(tc.s); got != tc.want {
			t.Errorf("%v: subDrops = %q, want %q", tc.s.Pattern(), got, tc.want)
		}
	}
}
