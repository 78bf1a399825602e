package main

// offq ls: the buses in a directory and their state.

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/offq/offq/internal/statview"
	"github.com/offq/offq/transport"
)

func newLsCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "list the buses in the directory, with live and dead participants",
		Long: `ls lists the offq buses in --dir (files that start with a region's header, even a damaged
one; other files are left out) with their size, creation time, live participants and dead ones: slots whose
process ended without detaching, whose buffers stay allocated until they are reaped. A region
that cannot be read (a damaged header) is listed with the reason. The OWNER column shows
whose each bus is: ls lists other users' buses too.

With --json it prints a JSON array. Exit status 1 if the directory cannot be read.`,
		Example: "  offq ls\n  offq ls --dir /dev/shm --json",
		Args:    noArgs,
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			names, err := transport.List(a.dir)
			if err != nil {
				return fmt.Errorf("ls: %w", err)
			}
			entries := make([]lsEntry, 0, len(names))
			for _, n := range names {
				entries = append(entries, a.lsEntry(n))
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(entries)
			}
			printLs(cmd.OutOrStdout(), a.dir, entries)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// lsEntry is one line of offq ls; its JSON form is part of the command's interface.
type lsEntry struct {
	Name     string    `json:"name"`
	Path     string    `json:"path"`
	OwnerUID uint32    `json:"owner_uid"`
	Owner    string    `json:"owner,omitempty"` // the user's name, if it has one
	Size     int       `json:"size,omitempty"`
	Created  time.Time `json:"created,omitzero"`
	Live     int       `json:"live"`
	Dead     int       `json:"dead"`
	State    string    `json:"state"` // "ok", "dead participants" or "unreadable"
	Error    string    `json:"error,omitempty"`
}

func (a *app) lsEntry(name string) lsEntry {
	e := lsEntry{Name: name, Path: transport.Path(a.dir, name)}
	if uid, ok := fileOwner(e.Path); ok {
		e.OwnerUID, e.Owner = uid, statview.UserName(uid)
	}
	r, err := a.openReadOnly(name)
	if err != nil {
		e.State, e.Error = "unreadable", err.Error()
		return e
	}
	defer r.Close()
	e.Size = r.Size()
	st, err := r.Stats()
	if err != nil {
		e.State, e.Error = "unreadable", err.Error()
		return e
	}
	e.Created = st.Created
	for _, p := range st.Participants {
		if p.Alive {
			e.Live++
		} else {
			e.Dead++
		}
	}
	e.State = "ok"
	if e.Dead > 0 {
		e.State = "dead participants"
	}
	return e
}

func printLs(out io.Writer, dir string, entries []lsEntry) {
	if len(entries) == 0 {
		fmt.Fprintf(out, "no buses in %s\n", dir)
		return
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tOWNER\tSIZE\tCREATED\tLIVE\tDEAD\tSTATE")
	for _, e := range entries {
		if e.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\tunreadable: %s\n", e.Name, ownerColumn(e.OwnerUID), e.Error)
			continue
		}
		state := "ok"
		if e.Dead > 0 {
			state = fmt.Sprintf("%d dead awaiting reaping", e.Dead)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", e.Name, ownerColumn(e.OwnerUID), statview.Bytes(int64(e.Size)), e.Created.Format(time.DateTime), e.Live, e.Dead, state)
	}
	tw.Flush()
}
