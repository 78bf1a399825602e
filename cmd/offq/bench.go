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
			// A reader of the report that goes away (offq bench --json | jq, interrupted)
			// ends the run: writes fail with EPIPE instead of SIGPIPE killing the process,
			// which would leave the run's private directory and its regions in /dev/shm.
			// The notification is not stopped: the error printed on the way out would meet
			// the same closed pipe.
			ctx, cancel := context.WithCancelCause(cmd.Context())
			defer cancel(nil)
			pipe := make(chan os.Signal, 1)
			signal.Notify(pipe, syscall.SIGPIPE)
			go func() {
				select {
				case <-pipe:
					cancel(errors.New("the report's reader went away (SIGPIPE)"))
				case <-ctx.Done():
				}
			}()
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
