package main

// offq info: what a bus is: its file, size, configuration, who is attached, and how much of
// each table is in use. It maps the region read-only and changes nothing.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/offq/offq/internal/statview"
	"github.com/offq/offq/transport"
)

func newInfoCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info",
		Short: "describe a bus: file, size, configuration, participants, tables in use",
		Long: `info describes the bus --bus in --dir: its file and size, when it was created, the
configuration recorded in it, the processes attached (live, or dead and awaiting reaping), and
how much of each table is in use. It maps the region read-only: it changes nothing and does not
count as a participant. (For live counters, see offq stat.)

With --json it prints one JSON object. Exit status 1 if the bus does not exist or is not a
valid region.`,
		Example: "  offq info\n  offq info --bus plant --json",
		Args:    noArgs,
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			r, err := a.openReadOnly(a.busName)
			if err != nil {
				return fmt.Errorf("info: %w", err)
			}
			defer r.Close()
			inf, err := describe(r)
			if err != nil {
				return fmt.Errorf("info: %w", err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(inf)
			}
			inf.print(cmd.OutOrStdout())
			return nil
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// openReadOnly maps region name read-only, for tools that only look. Mapping another user's
// region read-only is harmless, so unlike attaching it is allowed (owner.go has the rule).
func (a *app) openReadOnly(name string) (*transport.Region, error) {
	r, err := transport.Open(name, transport.Options{Dir: a.dir, ReadOnly: true, AllowForeignOwner: true,
		ReadyTimeout: 200 * time.Millisecond})
	if errors.Is(err, transport.ErrNotFound) {
		return nil, &notFoundError{name: name, dir: a.dir}
	}
	return r, err
}

// notFoundError says that a bus does not exist, in words a user of the command reads.
type notFoundError struct{ name, dir string }

func (e *notFoundError) Error() string { return fmt.Sprintf("bus %q not found in %s", e.name, e.dir) }

// Unwrap returns transport.ErrNotFound.
func (e *notFoundError) Unwrap() error { return transport.ErrNotFound }

// busInfo is what info prints; its JSON form is part of the command's interface.
type busInfo struct {
	Name          string            `json:"name"`
	Path          string            `json:"path"`
	OwnerUID      uint32            `json:"owner_uid"`
	Owner         string            `json:"owner,omitempty"` // the user's name, if it has one
	Size          int               `json:"size"`
	Created       time.Time         `json:"created"`
	Config        transport.Config  `json:"config"`
	Live          int               `json:"live"`
	Dead          int               `json:"dead"` // attached slots whose process is gone: awaiting reaping
	Participants  []participantInfo `json:"participants"`
	Subscriptions int               `json:"subscriptions"`
	Topics        int               `json:"topics"`
	Pools         []poolInfo        `json:"pools"`
}

type participantInfo struct {
	Index    int       `json:"index"`
	PID      int       `json:"pid"`
	Name     string    `json:"name"`
	Alive    bool      `json:"alive"`
	Attached time.Time `json:"attached"`
}

type poolInfo struct {
	Size     int   `json:"size"`
	Capacity int   `json:"capacity"`
	InUse    int64 `json:"in_use"`
}

func describe(r *transport.Region) (busInfo, error) {
	st, err := r.Stats()
	if err != nil {
		return busInfo{}, err
	}
	inf := busInfo{Name: st.Name, Path: st.Path, Size: st.Size, Created: st.Created, Config: st.Config,
		Participants: []participantInfo{}, Subscriptions: len(st.Inboxes), Topics: len(st.Topics)}
	if uid, err := r.Owner(); err == nil {
		inf.OwnerUID, inf.Owner = uid, statview.UserName(uid)
	}
	for _, p := range st.Participants {
		inf.Participants = append(inf.Participants, participantInfo{Index: p.Index, PID: p.PID, Name: p.Name, Alive: p.Alive, Attached: p.Attached})
		if p.Alive {
			inf.Live++
		} else {
			inf.Dead++
		}
	}
	for _, p := range st.Pools {
		inf.Pools = append(inf.Pools, poolInfo{Size: p.Size, Capacity: p.Capacity, InUse: p.InUse})
	}
	return inf, nil
}

func (inf busInfo) print(out io.Writer) {
	c := inf.Config
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "bus\t%s\n", inf.Name)
	fmt.Fprintf(tw, "path\t%s\n", inf.Path)
	fmt.Fprintf(tw, "owner\t%s\n", statview.OwnerText(inf.OwnerUID))
	fmt.Fprintf(tw, "size\t%s\n", statview.Bytes(int64(inf.Size)))
	fmt.Fprintf(tw, "created\t%s (%s ago)\n", inf.Created.Format(time.RFC3339), time.Since(inf.Created).Round(time.Second))
	fmt.Fprintf(tw, "buffers\t%s\n", describeClasses(c.Classes))
	fmt.Fprintf(tw, "tables\t%s\n", describeTables(c))
	fmt.Fprintf(tw, "participants\t%s\n", liveDead(inf.Live, inf.Dead, c.Participants))
	fmt.Fprintf(tw, "subscriptions\t%d of %d inboxes open\n", inf.Subscriptions, c.Inboxes)
	fmt.Fprintf(tw, "topics\t%d of %d in use\n", inf.Topics, c.Topics)
	var pools []string
	for _, p := range inf.Pools {
		pools = append(pools, fmt.Sprintf("%s %d/%d", transport.Size(p.Size), p.InUse, p.Capacity))
	}
	fmt.Fprintf(tw, "buffers in use\t%s\n", strings.Join(pools, ", "))
	tw.Flush()
	if len(inf.Participants) == 0 {
		return
	}
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tPID\tSTATE\tATTACHED\tNAME")
	for _, p := range inf.Participants {
		state := "live"
		if !p.Alive {
			state = "dead, awaiting reaping"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", p.Index, p.PID, state, p.Attached.Format(time.RFC3339), p.Name)
	}
	tw.Flush()
}

func liveDead(live, dead int, slots uint32) string {
	s := fmt.Sprintf("%d live", live)
	if dead > 0 {
		s += fmt.Sprintf(", %d dead awaiting reaping", dead)
	}
	return s + fmt.Sprintf(" (of %d slots)", slots)
}
