// Package launch runs an example program as several processes: the program re-executes
// itself once per role, with the role and the bus's directory in its environment, and the
// parent reads each child's output line by line. It is for the programs in examples/ only.
package launch

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Environment variables a child is started with.
const (
	EnvRole = "OFFQ_EXAMPLE_ROLE" // the role to play
	EnvDir  = "OFFQ_EXAMPLE_DIR"  // the directory of the bus's region
	EnvArg  = "OFFQ_EXAMPLE_ARG"  // an argument of the role, as text
)

// Role returns the role this process was started to play, or "" in the parent.
func Role() string { return os.Getenv(EnvRole) }

// Dir returns the directory of the bus's region, as the parent chose it.
func Dir() string { return os.Getenv(EnvDir) }

// Arg returns the role's argument.
func Arg() string { return os.Getenv(EnvArg) }

// Child is a running copy of the program.
type Child struct {
	Name  string
	cmd   *exec.Cmd
	lines chan string // stdout, closed at its end
	done  chan struct{}
	err   error
}

// Pid returns the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Start runs the program again as role (with arg), its region in dir. The child is killed when
// ctx is done, and dies with the parent (SIGKILL through the parent-death signal). Its stderr
// goes to the parent's, prefixed by its name.
func Start(ctx context.Context, name, role, arg, dir string) (*Child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), EnvRole+"="+role, EnvArg+"="+arg, EnvDir+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = prefixWriter{name: name, w: os.Stderr}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &Child{Name: name, cmd: cmd, lines: make(chan string, 64), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// Line returns the child's next line of output. It fails when ctx is done or the child's
// output ends.
func (c *Child) Line(ctx context.Context) (string, error) {
	select {
	case l, ok := <-c.lines:
		if !ok {
			<-c.done
			return "", fmt.Errorf("%s ended (%v) without the line expected", c.Name, c.err)
		}
		return l, nil
	case <-ctx.Done():
		return "", fmt.Errorf("%s: %w", c.Name, ctx.Err())
	}
}

// Expect reads the child's next line, which must start with prefix, and returns the rest.
func (c *Child) Expect(ctx context.Context, prefix string) (string, error) {
	l, err := c.Line(ctx)
	if err != nil {
		return "", err
	}
	rest, ok := strings.CutPrefix(l, prefix)
	if !ok {
		return "", fmt.Errorf("%s wrote %q, want %q", c.Name, l, prefix)
	}
	return strings.TrimSpace(rest), nil
}

// Wait waits for the child to exit, discarding output not read yet, and reports how it ended.
func (c *Child) Wait(ctx context.Context) error {
	for {
		select {
		case _, ok := <-c.lines:
			if ok {
				continue
			}
			<-c.done
			if c.err != nil {
				return fmt.Errorf("%s: %w", c.Name, c.err)
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", c.Name, ctx.Err())
		}
	}
}

// Say prints one line to stdout, for the parent to read.
func Say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

// TempDir makes a directory for a region and returns a function that removes it.
func TempDir(prefix string) (string, func(), error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

type prefixWriter struct {
	name string
	w    io.Writer
}

func (p prefixWriter) Write(b []byte) (int, error) {
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l != "" {
			if _, err := fmt.Fprintf(p.w, "%s: %s", p.name, l); err != nil {
				return 0, err
			}
		}
	}
	return len(b), nil
}

// Main runs child, bounded by a minute, and exits, if this process is a child (Role is set);
// otherwise it runs the tests. An example's TestMain is launch.Main(m, child).
func Main(m interface{ Run() int }, child func(context.Context) error) {
	if Role() != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := child(ctx)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
