// Package launch runs an example program as several processes, in the words the examples
// need: the program re-executes itself once per role, with the role and the bus's directory
// as the child's argument, and the parent reads each child's output line by line. The
// processes themselves are internal/peer's (lifeline, parent-death signal, bounded start),
// as in offq's tests, offq bench and offq demo. It is for the programs in examples/ only.
package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/offq/offq/internal/peer"
)

// role is the one peer role of an example's children; the example's own role is in the
// argument.
const role = "example"

// argument is what a child is started with.
type argument struct {
	Role string `json:"role"` // the role to play
	Arg  string `json:"arg"`  // an argument of the role, as text
	Dir  string `json:"dir"`  // the directory of the bus's region
}

// self is this process's argument, once Dispatch has read it; zero in the parent.
var self argument

// Role returns the role this process was started to play, or "" in the parent.
func Role() string { return self.Role }

// Dir returns the directory of the bus's region, as the parent chose it.
func Dir() string { return self.Dir }

// Arg returns the role's argument.
func Arg() string { return self.Arg }

// Dispatch runs child, bounded by a minute and by the parent's wish to stop, and exits, if
// this process is a child; otherwise it returns at once. Call it first thing in main (and
// in TestMain, through Main).
func Dispatch(child func(context.Context) error) {
	peer.Dispatch(map[string]peer.Role{role: func(c *peer.Child) error {
		if err := c.Arg(&self); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(c.Context(), time.Minute)
		defer cancel()
		return child(ctx)
	}})
}

// Main runs child and exits if this process is a child; otherwise it runs the tests. An
// example's TestMain is launch.Main(m, child).
func Main(m interface{ Run() int }, child func(context.Context) error) {
	Dispatch(child)
	os.Exit(m.Run())
}

// Child is a running copy of the program.
type Child struct {
	Name string
	p    *peer.Proc
}

// Pid returns the child's process id.
func (c *Child) Pid() int { return c.p.Pid() }

// Start runs the program again as role (with arg), its region in dir. The child is killed when
// ctx is done, and dies with the parent. Its stderr goes to the parent's, prefixed by its name.
func Start(ctx context.Context, name, childRole, arg, dir string) (*Child, error) {
	p, err := peer.Launch(peer.Spec{Role: role, Name: name, Arg: argument{Role: childRole, Arg: arg, Dir: dir},
		Stderr: prefixWriter{name: name, w: os.Stderr}})
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, p.Kill)
	return &Child{Name: name, p: p}, nil
}

// Line returns the child's next line of output. It fails when ctx is done or the child's
// output ends.
func (c *Child) Line(ctx context.Context) (string, error) {
	l, err := c.p.Next(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: %w", c.Name, err)
	}
	return l, nil
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
		if _, err := c.p.Next(ctx); err != nil {
			select {
			case <-c.p.Exited():
				return c.p.Err()
			default:
				return fmt.Errorf("%s: %w", c.Name, errors.Join(err, ctx.Err()))
			}
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
