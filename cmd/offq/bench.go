package main

// offq bench: offq between processes beside the transports a user would otherwise pick, in one
// run. The plan, the measurements, the children and the report are in internal/bench.

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/offq/offq/internal/bench"
)

func newBenchCmd(a *app) *cobra.Command {
	var f bench.Flags
	cmd := &cobra.Command{
		Use:     "bench",
		Short:   "measure offq between processes beside raw shared memory, futex, Unix sockets and pipes",
		Long:    bench.Help,
		Example: bench.Example,
		Args:    usageArgs(cobra.NoArgs),
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			o, err := f.Options()
			if err != nil {
				return usageError(err)
			}
			dir := a.dir
			if !cmd.Flags().Changed("dir") {
				if _, err := os.Stat(dir); err != nil {
					dir = os.TempDir()
				}
			}
			g := newOutputGuard(cmd.Context())
			defer g.stop()
			err = bench.Run(g.ctx, o, bench.Env{Dir: dir, Log: a.log, LogLevel: a.logLevel,
				Stdout: g.Writer(cmd.OutOrStdout()), Stderr: g.Writer(a.stderr), Command: commandLine(cmd)})
			if errors.Is(err, bench.ErrNothing) {
				return usageError(err)
			}
			return err
		}),
	}
	f.Register(cmd.Flags())
	return cmd
}

// errBrokenPipe is the cause of a command's end when its output's reader went away.
var errBrokenPipe = errors.New("the output's reader went away (EPIPE)")

// outputGuard ends a command whose output's reader went away (offq bench --json | jq,
// offq demo | head, interrupted), for the commands that make regions of their own. It asks
// for SIGPIPE, so that a write to a standard output or error whose reader is gone fails with
// EPIPE instead of the signal killing the process before it removes what it made (left
// behind, a run's regions stay in /dev/shm until someone deletes them); and the writers it
// wraps (Writer) end the context when one of their writes fails so. SIGPIPE from other pipes
// and sockets (the bench's uds and pipe rows, a child gone) ends nothing: those writes fail
// with EPIPE as they always did. The notification is not stopped when the command ends: the
// error printed on the way out meets the same closed pipe.
type outputGuard struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func newOutputGuard(parent context.Context) *outputGuard {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	ctx, cancel := context.WithCancelCause(parent)
	return &outputGuard{ctx: ctx, cancel: cancel}
}

// stop releases the guard's context.
func (g *outputGuard) stop() { g.cancel(nil) }

// Writer wraps w, a standard output or error of the command: a write that fails with EPIPE
// ends the guard's context.
func (g *outputGuard) Writer(w io.Writer) io.Writer { return guardedWriter{w, g.cancel} }

type guardedWriter struct {
	w      io.Writer
	cancel context.CancelCauseFunc
}

func (gw guardedWriter) Write(b []byte) (int, error) {
	n, err := gw.w.Write(b)
	if errors.Is(err, syscall.EPIPE) {
		gw.cancel(errBrokenPipe)
	}
	return n, err
}

// commandLine rebuilds the command line from the flags set, for the report.
func commandLine(cmd *cobra.Command) string {
	parts := []string{cmd.CommandPath()}
	visit := func(f *pflag.Flag) {
		switch v := f.Value.String(); {
		case f.Value.Type() == "bool" && v == "true":
			parts = append(parts, "--"+f.Name)
		case strings.ContainsAny(v, " \t'\"$"):
			parts = append(parts, "--"+f.Name, strconv.Quote(v))
		default:
			parts = append(parts, "--"+f.Name, v)
		}
	}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			visit(f)
		}
	})
	return strings.Join(parts, " ")
}
