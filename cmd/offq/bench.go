package main

// offq bench: offq between processes beside the transports a user would otherwise pick, in one
// run. The plan, the measurements, the children and the report are in internal/bench.

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

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
			ctx, stop := endOnBrokenPipe(cmd.Context())
			defer stop()
			err = bench.Run(ctx, o, bench.Env{Dir: dir, Log: a.log, LogLevel: a.logLevel,
				Stdout: cmd.OutOrStdout(), Stderr: a.stderr, Command: commandLine(cmd)})
			if errors.Is(err, bench.ErrNothing) {
				return usageError(err)
			}
			return err
		}),
	}
	f.Register(cmd.Flags())
	return cmd
}

// endOnBrokenPipe returns a context that ends when a write to the process's standard output
// or error finds its reader gone (offq bench --json | jq, offq demo | head, interrupted), for
// the commands that make regions of their own: the write fails with EPIPE instead of SIGPIPE
// killing the process, and the command ends as if interrupted and removes what it made
// (left behind, a run's regions stay in /dev/shm until someone deletes them). Once notified,
// SIGPIPE also comes from writes to other pipes and sockets (the bench's uds and pipe rows,
// a child gone), which only fail with EPIPE as ever: the run ends only if standard output or
// error is the broken one. The notification is not stopped with the context: the error
// printed on the way out meets the same closed pipe.
func endOnBrokenPipe(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	go func() {
		for {
			select {
			case <-pipe:
				if readerGone(1) || readerGone(2) {
					cancel(errors.New("the output's reader went away (SIGPIPE)"))
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return ctx, func() { cancel(nil) }
}

// readerGone reports whether fd is a pipe or socket whose reading end is closed: poll says
// POLLERR (a pipe) or POLLHUP (a socket) for it. A terminal or a file never does.
func readerGone(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd)}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0
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
