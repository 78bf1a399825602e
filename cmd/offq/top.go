package main

// offq top: offq stat's tables, redrawn every --interval with rates (messages and bytes a
// second per topic, deliveries, receipts and drops a second per inbox).

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/offq/offq/internal/statview"
)

// topClear moves the cursor home and clears the screen (ANSI). It is written only to a
// terminal: into a pipe or a file top writes its screens one after the other.
const topClear = "\x1b[H\x1b[2J"

// isTerminal reports whether w is a terminal (a character device: a tty, or /dev/null, where
// escapes do no harm).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func newTopCmd(a *app) *cobra.Command {
	var (
		interval   time.Duration
		iterations int
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "show offq stat's tables live, with rates",
		Long: `top clears the terminal (when its output is one) and shows offq stat's tables for every bus in --dir (or only the one
--bus names), redrawn every --interval, with rates computed between two redraws:

  topics   MSGS/S and BYTES/S published
  inboxes  IN/S delivered into the inbox, OUT/S received by the subscriber, DROPS/S lost

A rate is "-" on the first screen, and for a row that is new or whose counters restarted (a
new subscription in the inbox's slot, a re-created bus). Like stat it only reads the
regions. It runs until interrupted (Ctrl-C), or for --iterations screens.`,
		Example: "  offq top\n  offq top --bus plant --interval 500ms",
		Args:    noArgs,
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			switch {
			case interval < 10*time.Millisecond:
				return usageError(fmt.Errorf("--interval %v: want at least 10ms", interval))
			case iterations < 0:
				return usageError(fmt.Errorf("--iterations %d: want 0 (until interrupted) or more", iterations))
			}
			return a.runTop(cmd, interval, iterations)
		}),
	}
	f := cmd.Flags()
	f.DurationVar(&interval, "interval", time.Second, "time between two screens")
	f.IntVar(&iterations, "iterations", 0, "screens to show before exiting (0: until interrupted)")
	return cmd
}

func (a *app) runTop(cmd *cobra.Command, interval time.Duration, iterations int) error {
	ctx, out := cmd.Context(), cmd.OutOrStdout()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var prev *statview.Report
	clear := isTerminal(out)
	for i := 1; ; i++ {
		cur, err := a.readStats(cmd, "top")
		if err != nil {
			return err
		}
		var r *statview.Rates
		if prev != nil {
			r = statview.Between(prev, cur)
		} else {
			r = statview.Between(cur, cur) // every rate "-" until there are two screens
		}
		switch {
		case clear:
			fmt.Fprint(out, topClear)
		case i > 1:
			fmt.Fprintln(out)
		}
		fmt.Fprintf(out, "offq top  %s  every %v  %s  (Ctrl-C to quit)\n\n", a.dir, interval, cur.Time.Format(time.TimeOnly))
		cur.Print(out, r)
		prev = cur
		if iterations > 0 && i >= iterations {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
