package main

// offq stat: a table of the topics, inboxes and pools of every bus in --dir (or of --bus), as
// read from the regions' counters without joining the buses; --json for scripts. offq top
// (top.go) refreshes the same tables with rates. The report, its JSON and its tables are in
// internal/statview.

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/offq/offq/internal/statview"
	"github.com/offq/offq/transport"
)

func newStatCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stat",
		Short: "print the topics, inboxes and pools of the buses in --dir",
		Long: `stat prints, for every bus in --dir (or only the one --bus names), its participants and
three tables read from the bus's counters in shared memory:

  topics   messages and bytes published, subscriptions matching the topic
  inboxes  one per subscription: subscriber, pattern, overflow policy, queue depth and
           capacity, messages delivered into it and received from it, drops by reason
  pools    per size class: buffers, in use, low-water mark (fewest ever free),
           allocation failures

It maps each region read-only and never attaches to a bus, so it changes nothing and works
on a bus whose processes are stuck; it reads buses of other users too, and shows their owner. The numbers are those offq exporter serves to Prometheus
(docs/metrics.md). --json prints them as one JSON object instead. offq top refreshes the
tables with rates.`,
		Example: "  offq stat\n  offq stat --bus plant --json",
		Args:    noArgs,
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			st, err := a.readStats(cmd, "stat")
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			st.Print(cmd.OutOrStdout(), nil)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of tables")
	return cmd
}

// readStats reads every bus in --dir, or the one --bus names. A bus that vanishes while it
// is read is left out; one that cannot be opened is an error when named, a warning otherwise.
func (a *app) readStats(cmd *cobra.Command, what string) (*statview.Report, error) {
	named := cmd.Flags().Changed("bus")
	var names []string
	if named {
		names = []string{a.busName}
	} else {
		var err error
		if names, err = transport.List(a.dir); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	rep := &statview.Report{Dir: a.dir, Time: time.Now(), Buses: []statview.Bus{}}
	for _, name := range names {
		r, err := a.openReadOnly(name)
		switch {
		case err == nil:
		case named && errors.Is(err, transport.ErrNotFound):
			return nil, fmt.Errorf("%s: no bus %q in %s", what, name, a.dir)
		case named:
			return nil, fmt.Errorf("%s: %w", what, err)
		case errors.Is(err, transport.ErrNotFound):
			continue
		default:
			a.log.Warn(what+": skipping a region that cannot be opened", zap.String("bus", name), zap.Error(err))
			continue
		}
		st, err := r.Stats()
		if err != nil {
			r.Close()
			if named {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			a.log.Warn(what+": skipping a region that cannot be read", zap.String("bus", name), zap.Error(err))
			continue
		}
		sb := statview.FromStats(st)
		if uid, err := r.Owner(); err == nil {
			sb.OwnerUID, sb.Owner = uid, statview.UserName(uid)
		}
		rep.Buses = append(rep.Buses, sb)
		r.Close()
	}
	return rep, nil
}
