package main

// offq demo: a publisher and several subscribers as separate processes on a bus of their own,
// every message verified. The run, its children and its report are in internal/demo.

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/offq/offq/internal/demo"
)

func newDemoCmd(a *app) *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:     "demo",
		Short:   "run a publisher and subscribers as separate processes and verify every message",
		Long:    demo.Help,
		Example: "  offq demo\n  offq demo --duration 10s --size 4096 --subscribers 4",
		Args:    usageArgs(cobra.NoArgs),
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return usageError(err)
			}
			g := newOutputGuard(cmd.Context())
			defer g.stop()
			return a.runDemo(g, cmd, o)
		}),
	}
	o.Register(cmd.Flags())
	return cmd
}

func (a *app) runDemo(g *outputGuard, cmd *cobra.Command, o demo.Options) error {
	env := demo.Env{Dir: a.dir, Bus: a.busName, Log: a.log, LogLevel: a.logLevel, Stdout: g.Writer(cmd.OutOrStdout()), Stderr: g.Writer(a.stderr)}
	if !cmd.Flags().Changed("dir") {
		if _, err := os.Stat(env.Dir); err != nil {
			env.Dir = os.TempDir()
		}
	}
	if !cmd.Flags().Changed("bus") {
		env.Bus = fmt.Sprintf("offq-demo-%d", os.Getpid())
	}
	return demo.Run(g.ctx, o, env)
}
