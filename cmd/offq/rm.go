package main

// offq rm: remove a bus's region.

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/offq/offq/transport"
)

func newRmCmd(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [NAME...]",
		Short: "remove a bus (its shared-memory region)",
		Long: `rm removes the region of each bus NAME (default: --bus) from --dir. Processes that have it
mapped keep using it until they detach; new ones no longer find it (and pub --create or an
application's bus.Open would make a new, separate region of that name).

rm refuses a bus that live processes are attached to, a bus whose file another user owns, a
bus that cannot be read, and a file that is not an offq region. --force removes a bus even with
live participants, owned by another user or unreadable (a region whose header was damaged), and
makes a missing bus no error; it never removes a file that is not an offq region. Exit status
1 if a bus is missing, in use (without --force) or cannot be removed.`,
		Example: "  offq rm --bus plant\n  offq rm --force old-1 old-2",
		Args:    usageArgs(cobra.ArbitraryArgs),
		RunE: runtimeErrors(func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{a.busName}
			}
			for _, n := range args {
				if err := transport.ValidateName(n); err != nil {
					return usageError(err)
				}
			}
			regions, err := transport.List(a.dir)
			if err != nil {
				return fmt.Errorf("rm: %w", err)
			}
			var errs []error
			for _, n := range args {
				if err := a.remove(n, slices.Contains(regions, n), force); err != nil {
					errs = append(errs, fmt.Errorf("rm: %w", err))
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", transport.Path(a.dir, n))
			}
			return errors.Join(errs...)
		}),
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even with live participants, another owner or a damaged header; a missing bus is no error")
	return cmd
}

// remove unlinks region name; isRegion says whether the file starts with a region's magic.
func (a *app) remove(name string, isRegion, force bool) error {
	if err := a.checkOwner(name, force, overrideHint("--force")); err != nil {
		return err
	}
	r, err := a.openReadOnly(name)
	switch {
	case errors.Is(err, transport.ErrNotFound):
		if force {
			return nil
		}
		return err
	case err != nil && !isRegion:
		return fmt.Errorf("%s is not an offq region; not removing it: %w", transport.Path(a.dir, name), err)
	case err != nil && !force:
		return fmt.Errorf("bus %q: %w (pass --force to remove it anyway)", name, err)
	case err == nil:
		var live []string
		st, serr := r.Stats()
		if serr != nil && !force {
			r.Close()
			return fmt.Errorf("bus %q: %w (pass --force to remove it anyway)", name, serr)
		}
		for _, p := range st.Participants {
			if p.Alive {
				live = append(live, fmt.Sprintf("pid %d (%s)", p.PID, p.Name))
			}
		}
		r.Close()
		if len(live) > 0 && !force {
			return fmt.Errorf("bus %q is in use by %s; stop them first, or pass --force", name, strings.Join(live, ", "))
		}
	}
	if err := transport.Unlink(a.dir, name); err != nil {
		if force && errors.Is(err, transport.ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}
