package main

// Positional arguments, and the command lines offq suggests in its messages.

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/offq/offq/transport"
)

// noArgs refuses positional arguments, naming them (cobra's own check calls them an unknown
// command, which they are not).
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Errorf("%s takes no arguments (got %s)", cmd.Name(), quoteArgs(args)))
	}
	return nil
}

// oneArg wants exactly one positional argument, called name in the usage line. Extra
// arguments are quoted back; a command that takes its message in --data says so, since
// "offq pub a.b hello" is the line an operator types first.
func oneArg(name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return usageError(fmt.Errorf("%s takes one argument, %s (got 0)", cmd.Name(), name))
		case len(args) > 1:
			msg := fmt.Sprintf("%s takes one argument, %s (got %d: %s)", cmd.Name(), name, len(args), quoteArgs(args))
			if cmd.Flags().Lookup("data") != nil {
				msg += fmt.Sprintf("; the message goes in --data: offq %s %s --data %s",
					cmd.Name(), shellQuote(args[0]), shellQuote(strings.Join(args[1:], " ")))
			}
			return usageError(errors.New(msg))
		}
		return nil
	}
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, " ")
}

// commandLine returns the offq command line that runs args on the same directory as this
// one: "offq create --bus plant", or "offq --dir /run/offq create --bus plant".
func (a *app) commandLine(args ...string) string {
	parts := []string{"offq"}
	if a.dir != transport.DefaultDir {
		parts = append(parts, "--dir", shellQuote(a.dir))
	}
	for _, s := range args {
		parts = append(parts, shellQuote(s))
	}
	return strings.Join(parts, " ")
}

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
