package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/offq/offq/transport"
)

func newReapCmd(a *app) *cobra.Command {
	var asJSON bool
	var settle time.Duration
	var allowForeign bool
	cmd := &cobra.Command{
		Use:   "reap",
		Short: "reclaim what crashed processes left in a bus",
		Long: `Reap finds the participants of a bus whose processes have died (the kernel drops the
lock each participant holds for its life, however it dies) and reclaims what they held: their
queues are closed and drained, the messages they had received and the buffers they had on loan
are released, and their slots are freed. It is safe while the bus is in use, and safe to run
from several processes at once: each dead participant is reclaimed exactly once.

It also frees topics nothing uses: no process has a publisher of the topic, it keeps no
history, no subscription's pattern matches it and no message of it is queued or held (a
mistyped "offq pub sensors.tmep", a topic whose processes have exited). While others are
attached it joins the bus for a moment to do so.

A process killed in the few instructions between the two steps of moving a reference leaves a
buffer with a reference nobody holds. Reap sweeps for those: it frees buffers whose one
reference no queue, held list or history names, when it sees them that way twice, --settle
apart. With nobody attached, reap audits every buffer instead.

Running buses reap by themselves (on open, every second, and when the pools run out); this
command is for buses nobody is attached to, and for operators who want to see it happen.`,
		Example: `  offq reap --bus plant
  offq reap --bus plant --json`,
		Args: noArgs,
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			if err := a.checkOwner(a.busName, allowForeign, overrideHint("--allow-foreign-owner")); err != nil {
				return fmt.Errorf("reap: %w", err)
			}
			r, err := transport.Open(a.busName, transport.Options{Dir: a.dir, AllowForeignOwner: allowForeign})
			if err != nil {
				return fmt.Errorf("reap: %w", err)
			}
			defer r.Close()
			rep, err := r.Reap()
			if err != nil {
				return err
			}
			if !rep.Audited && settle > 0 {
				// A sweep frees what it saw orphaned at the previous sweep too: look again.
				time.Sleep(settle)
				again, err := r.Reap()
				if err != nil {
					return err
				}
				rep.Add(again)
			}
			reclaimed := 0
			if !rep.Audited {
				// Others are attached: free the topic entries nothing uses (a mistyped name, a
				// topic whose processes are gone), which the audit does when nobody is.
				if reclaimed, err = r.ReclaimTopics("offq reap"); err != nil {
					return fmt.Errorf("reap: freeing unused topics: %w", err)
				}
				rep.TopicsFreed += reclaimed
			}
			a.log.Info("reaped", zap.String("bus", a.busName), zap.Int("participants", rep.Participants))
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]int{
					"participants": rep.Participants, "inboxes": rep.Inboxes, "queued": rep.Queued,
					"held": rep.Held, "loans": rep.Loans, "topics": rep.Topics, "repaired": rep.Repaired,
					"swept": rep.Swept, "topics_freed": rep.TopicsFreed,
				})
			}
			if rep.Swept > 0 {
				fmt.Fprintf(out, "%s: swept %d buffer(s) whose reference nobody held\n", a.busName, rep.Swept)
			}
			if rep.Audited {
				fmt.Fprintf(out, "%s: nobody attached: audited every buffer, %d repaired; freed %d unused topic(s)\n", a.busName, rep.Repaired, rep.TopicsFreed)
			} else {
				fmt.Fprintf(out, "%s: freed %d unused topic(s)\n", a.busName, reclaimed)
			}
			if rep.Participants == 0 {
				fmt.Fprintf(out, "%s: no dead participants\n", a.busName)
				return nil
			}
			fmt.Fprintf(out, "%s: reclaimed %d dead participant(s): %d inbox(es) with %d queued message(s), %d held message(s), %d loaned buffer(s), %d half-created topic(s)\n",
				a.busName, rep.Participants, rep.Inboxes, rep.Queued, rep.Held, rep.Loans, rep.Topics)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	registerForeign(cmd.Flags(), &allowForeign)
	cmd.Flags().DurationVar(&settle, "settle", 100*time.Millisecond, "time between the two sweeps for orphaned buffers (0: one pass, no sweep)")
	return cmd
}
