package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/offq/offq/transport"
)

func newReapCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "reap",
		Short: "reclaim what crashed processes left in a bus",
		Long: `Reap finds the participants of a bus whose processes have died (the kernel drops the
lock each participant holds for its life, however it dies) and reclaims what they held: their
queues are closed and drained, the messages they had received and the buffers they had on loan
are released, and their slots are freed. It is safe while the bus is in use, and safe to run
from several processes at once: each dead participant is reclaimed exactly once.

Running buses reap by themselves (on open, every second, and when the pools run out); this
command is for buses nobody is attached to, and for operators who want to see it happen.`,
		Example: `  offq reap --bus plant
  offq reap --bus plant --json`,
		Args: usageArgs(cobra.NoArgs),
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			r, err := transport.Open(a.busName, transport.Options{Dir: a.dir})
			if err != nil {
				return err
			}
			defer r.Close()
			rep, err := r.Reap()
			if err != nil {
				return err
			}
			a.log.Info("reaped", zap.String("bus", a.busName), zap.Int("participants", rep.Participants))
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]int{
					"participants": rep.Participants, "inboxes": rep.Inboxes, "queued": rep.Queued,
					"held": rep.Held, "loans": rep.Loans, "topics": rep.Topics, "repaired": rep.Repaired,
				})
			}
			if rep.Audited {
				fmt.Fprintf(out, "%s: nobody attached: audited every buffer, %d repaired\n", a.busName, rep.Repaired)
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
	return cmd
}
