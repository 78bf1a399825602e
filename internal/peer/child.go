package peer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
)

// Dispatch runs the role named by EnvRole and exits with its status, if EnvRole is set;
// otherwise it returns at once. Call it before anything else: first thing in TestMain, or in
// main before the command line is parsed.
func Dispatch(roles map[string]Role) {
	name, ok := os.LookupEnv(EnvRole)
	if !ok {
		return
	}
	os.Exit(run(name, roles))
}

func run(name string, roles map[string]Role) int {
	fn := roles[name]
	if fn == nil {
		fmt.Fprintf(os.Stderr, "peer: unknown role %q\n", name)
		return exitUsage
	}
	ns, err := strconv.ParseInt(os.Getenv(EnvDeadline), 10, 64)
	if err != nil {
		fmt.Fprintf(os.Stderr, "peer %s: bad %s: %v\n", name, EnvDeadline, err)
		return exitUsage
	}
	deadline := time.Unix(0, ns)
	time.AfterFunc(time.Until(deadline)+grace, func() {
		fmt.Fprintf(os.Stderr, "peer %s: deadline %s passed; exiting\n", name, deadline.Format(time.RFC3339Nano))
		os.Exit(exitDeadline)
	})
	if fd, err := strconv.Atoi(os.Getenv(EnvLifeline)); err == nil {
		go func() {
			io.Copy(io.Discard, os.NewFile(uintptr(fd), "lifeline"))
			fmt.Fprintf(os.Stderr, "peer %s: parent gone; exiting\n", name)
			os.Exit(exitOrphaned)
		}()
	}
	c := newChild(deadline)
	c.Send("%s", hello)
	if err := fn(c); err != nil {
		fmt.Fprintf(os.Stderr, "peer %s: %v\n", name, err)
		return exitFailed
	}
	return 0
}

// Child is a role's side of the conversation with the parent. It is safe for concurrent use.
type Child struct {
	ctx      context.Context
	deadline time.Time
	lines    chan string        // from stdin; closed at end of file
	expire   context.CancelFunc // never called: the deadline lasts as long as the process

	mu  sync.Mutex // serialises writes to stdout
	enc *json.Encoder
}

func newChild(deadline time.Time) *Child {
	// Both contexts live as long as the process; the second is cancelled at end of stdin.
	ctx, expire := context.WithDeadline(context.Background(), deadline)
	ctx, stop := context.WithCancel(ctx)
	c := &Child{ctx: ctx, deadline: deadline, lines: make(chan string, 1024), expire: expire,
		enc: json.NewEncoder(os.Stdout)}
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		stop()
	}()
	return c
}

// Context is done at the child's deadline (context.DeadlineExceeded) or when the parent
// closes the child's stdin (context.Canceled).
func (c *Child) Context() context.Context { return c.ctx }

// Deadline returns when the child must be gone.
func (c *Child) Deadline() time.Time { return c.deadline }

// Stopped reports whether the parent has asked the child to finish by closing its stdin.
func (c *Child) Stopped() bool { return c.ctx.Err() == context.Canceled }

// Arg decodes the argument the parent gave in Spec.Arg into v.
func (c *Child) Arg(v any) error {
	if err := json.Unmarshal([]byte(os.Getenv(EnvArg)), v); err != nil {
		return fmt.Errorf("peer: argument: %w", err)
	}
	return nil
}

// File returns the file the parent gave in Spec.Files[i] (descriptor 4+i).
func (c *Child) File(i int) *os.File {
	return os.NewFile(uintptr(4+i), "peer-file-"+strconv.Itoa(i))
}

// Send writes one line to the parent (fmt.Sprintf(format, args...) and a newline).
func (c *Child) Send(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

// Encode writes v to the parent as one line of JSON, for Proc.Decode.
func (c *Child) Encode(v any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enc.Encode(v)
}

// Recv returns the next line the parent sent. It returns io.EOF once the parent has closed
// the child's stdin and every line sent before has been read, and the context's error at the
// deadline.
func (c *Child) Recv() (string, error) {
	select {
	case l, ok := <-c.lines:
		if !ok {
			return "", io.EOF
		}
		return l, nil
	case <-time.After(time.Until(c.deadline)):
		return "", context.DeadlineExceeded
	}
}

// Decode reads the next line the parent sent (with Proc.Encode) into v. Its errors are
// Recv's, or the JSON decoder's.
func (c *Child) Decode(v any) error {
	l, err := c.Recv()
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(l), v); err != nil {
		return fmt.Errorf("peer: line from the parent: %w", err)
	}
	return nil
}
