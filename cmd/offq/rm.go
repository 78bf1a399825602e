package main

// offq rm: remove a bus's region.

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/offq/offq/internal/shm"
)

func newRmCmd(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [NAME...]",
		Short: "remove a bus (its shared-memory region)",
		Long: `rm removes the region of each bus NAME (default: --bus) from --dir. Processes that have it
mapped keep using it until they detach; new ones no longer find it (and pub --create or an
application's bus.Open would make a new, separate region of that name).

rm refuses a bus that live processes are attached to, and a file that is not an offq region.
--force removes a bus even with live participants, and makes a missing bus no error. Exit status
1 if a bus is missing, in use (without --force) or cannot be removed.`,
		Example: "  offq rm --bus plant\n  offq rm --force old-1 old-2",
		Args:    usageArgs(cobra.ArbitraryArgs),
		RunE: runtimeErrors(func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{a.busName}
			}
			for _, n := range args {
				if err := shm.ValidateName(n); err != nil {
					return usageError(err)
				}
			}
			regions, err := shm.List(a.dir)
			if err != nil {
				return fmt.Errorf("rm: %w", err)
			}
			var errs []error
			for _, n := range args {
				if err := a.remove(n, slices.Contains(regions, n), force); err != nil {
					errs = append(errs, fmt.Errorf("rm: %w", err))
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", shm.Path(a.dir, n))
			}
			return errors.Join(errs...)
		}),
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even with live participants; a missing bus is no error")
	return cmd
}

// remove unlinks region name; isRegion says whether the file starts with a region's magic.
func (a *app) remove(name string, isRegion, force bool) error {
	r, err := a.openReadOnly(name)
	switch {
	case errors.Is(err, shm.ErrNotFound):
		if force {
			return nil
		}
		return err
	case err != nil && !isRegion:
		return fmt.Errorf("%s is not an offq region; not removing it: %w", shm.Path(a.dir, name), err)
	case err != nil && !force:
		return fmt.Errorf("bus %q: %w (pass --force to remove it anyway)", name, err)
	case err == nil:
		parts, err := r.Participants()
		if err != nil {
			r.Close()
			if !force {
				return fmt.Errorf("bus %q: %w (pass --force to remove it anyway)", name, err)
			}
		}
		var live []string
		for _, p := range parts {
			if p.Alive {
				live = append(live, fmt.Sprintf("pid %d (%s)", p.PID, p.Name))
			}
		}
		r.Close()
		if len(live) > 0 && !force {
			return fmt.Errorf("bus %q is in use by %s; stop them first, or pass --force", name, strings.Join(live, ", "))
		}
	}
	if err := shm.Unlink(a.dir, name); err != nil {
		if force && errors.Is(err, shm.ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}
