// Command offq is the command-line tool of the offq shared-memory bus.
//
// Usage:
//
//	offq [--dir DIR] [--bus NAME] [--log-level LEVEL] <command> [flags]
//
// Commands:
//
//	demo      run a publisher and several subscribers as separate processes on a fresh bus,
//	          verify every message, and report rates, drops and latencies
//	create    create a bus from flags or a TOML file
//	info      describe a bus: size, configuration, participants, tables in use
//	ls        list the buses in a directory, with live and dead participants
//	rm        remove a bus nobody is attached to
//	pub       publish from flags, stdin lines or a file
//	sub       print the messages published to a pattern
//	stat      print a bus's counters (topics, inboxes, pools)
//	top       the same, refreshed live, with rates
//	exporter  serve Prometheus metrics for the buses in a directory
//	reap      reclaim what crashed processes left
//	bench     measure offq beside raw shared memory, futex, Unix sockets and pipes
//	bridge    carry topics to and from NATS, for other hosts
//
// Exit status: 0 on success, 1 on a runtime error (or a failed verification), 2 on a usage
// error. Each subcommand lives in a file of its own.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/offq/offq/internal/bench"
	"github.com/offq/offq/internal/demo"
	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/transport"
)

// Exit statuses.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

func main() {
	peer.Dispatch(roles()) // a child of bench or demo runs its role and exits here
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// roles are the parts the children of offq bench and offq demo play: this program re-executed
// (internal/peer), its role in the environment rather than on the command line. extra adds
// roles (the tests').
func roles(extra ...map[string]peer.Role) map[string]peer.Role {
	all := maps.Clone(bench.Roles)
	for _, m := range append(extra, demo.Roles) {
		maps.Copy(all, m)
	}
	return all
}

// run executes the offq command line args, writing to stdout and stderr, and returns the
// process's exit status. SIGINT and SIGTERM cancel the context the commands run under.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	stderr = &lockedWriter{w: stderr}
	a := &app{stderr: stderr}
	root := newRootCmd(a)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if a.log != nil {
		a.log.Sync()
	}
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "offq: %s\n", errorText(ee.err))
		}
		if ee.code == exitUsage {
			fmt.Fprintln(stderr, "Run 'offq --help' for usage.")
		}
		return ee.code
	}
	// Errors cobra returns itself (unknown command, bad arguments) are usage errors.
	fmt.Fprintf(stderr, "offq: %s\nRun 'offq --help' for usage.\n", errorText(err))
	return exitUsage
}

// errorText returns err's message without the "offq: " prefixes the layers below add (their
// sentinels carry one each), for printing after a single "offq: ".
func errorText(err error) string {
	return strings.ReplaceAll(strings.TrimPrefix(err.Error(), "offq: "), ": offq: ", ": ")
}

// app holds what the root command's persistent flags configure, for every subcommand.
type app struct {
	dir      string
	busName  string
	logLevel string

	stderr io.Writer
	log    *zap.Logger
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "offq",
		Short: "offq: a shared-memory publish/subscribe bus",
		Long: `offq is a shared-memory publish/subscribe bus for processes on one host.

Start with the demo, which runs a publisher and several subscribers as separate processes,
verifies every message and reports rates, drops and latencies:

  offq demo`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		PersistentPreRunE: a.setup,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	root.CompletionOptions.DisableDefaultCmd = true
	pf := root.PersistentFlags()
	pf.StringVar(&a.dir, "dir", transport.DefaultDir, "directory holding bus regions")
	pf.StringVar(&a.busName, "bus", "default", "bus name")
	pf.StringVar(&a.logLevel, "log-level", "warn", "log level: debug, info, warn or error (logs go to stderr)")
	root.AddCommand(newDemoCmd(a))
	root.AddCommand(newCreateCmd(a), newInfoCmd(a), newRmCmd(a), newLsCmd(a), newPubCmd(a), newSubCmd(a))
	root.AddCommand(newBenchCmd(a))
	root.AddCommand(newExporterCmd(a), newStatCmd(a), newTopCmd(a))
	root.AddCommand(newReapCmd(a))
	root.AddCommand(newBridgeCmd(a))
	root.AddCommand(newReqCmd(a), newReplyCmd(a))
	return root
}

// setup validates the persistent flags and builds the logger.
func (a *app) setup(cmd *cobra.Command, _ []string) error {
	lvl, err := parseLevel(a.logLevel)
	if err != nil {
		return usageError(err)
	}
	if a.dir == "" {
		return usageError(errors.New("--dir: empty directory"))
	}
	if err := transport.ValidateName(a.busName); err != nil {
		return usageError(fmt.Errorf("--bus: %w", err))
	}
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	a.log = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(a.stderr), lvl)).
		With(zap.Int("pid", os.Getpid()))
	return nil
}

func parseLevel(s string) (zapcore.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return zapcore.DebugLevel, nil
	case "info":
		return zapcore.InfoLevel, nil
	case "warn":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
}

// exitError carries the exit status an error should end the process with.
type exitError struct {
	code int
	err  error // nil: the command already said everything
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func usageError(err error) error { return &exitError{code: exitUsage, err: err} }

// runtimeErrors wraps a RunE so that the errors it returns end the process with status 1, unless
// they already carry a status.
func runtimeErrors(fn func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		var ee *exitError
		if err == nil || errors.As(err, &ee) {
			return err
		}
		return &exitError{code: exitRuntime, err: err}
	}
}

// usageArgs makes a cobra argument validator's errors usage errors.
func usageArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usageError(err)
		}
		return nil
	}
}

// lockedWriter serialises writes from several goroutines (the logger, children's stderr).
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// sleepCtx sleeps for d, or until ctx is done (its error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
