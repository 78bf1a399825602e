package main

// offq create: make a bus's region from flags or a configuration file. The configuration flags
// are shared with pub and sub, whose --create makes the bus if it does not exist.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/statview"
	"github.com/offq/offq/transport"
)

// configFlags are the flags that size a new region: a TOML file, then single settings on top.
type configFlags struct {
	file          string
	classes       string
	inboxes       uint32
	inboxCapacity uint32
	topics        uint32
	participants  uint32
	historyDepth  uint32
	held          uint32
	mode          string

	fs *pflag.FlagSet
}

func (c *configFlags) register(f *pflag.FlagSet) {
	d := transport.DefaultConfig()
	c.fs = f
	f.StringVar(&c.file, "config", "", "TOML configuration file (keys as in transport.ParseConfig); the other configuration flags override it")
	f.StringVar(&c.classes, "classes", "", `buffer size classes as SIZE:COUNT,... (default "`+formatClasses(d.Classes, ",")+`")`)
	f.Uint32Var(&c.inboxes, "inboxes", d.Inboxes, "inboxes (one per subscription)")
	f.Uint32Var(&c.inboxCapacity, "inbox-capacity", d.InboxCapacity, "largest queue of a subscription, a power of two")
	f.Uint32Var(&c.topics, "topics", d.Topics, "entries in the topic table")
	f.Uint32Var(&c.participants, "participants", d.Participants, "processes attached at once")
	f.Uint32Var(&c.historyDepth, "history-depth", d.HistoryDepth, "most messages a topic may keep for late subscribers")
	f.Uint32Var(&c.held, "held", d.Held, "received messages one process may hold unreleased")
	f.StringVar(&c.mode, "mode", "0600", "permission of the region file, in octal (0660 shares the bus with the file's group)")
}

// given reports whether any configuration flag was set.
func (c *configFlags) given() bool {
	for _, n := range []string{"config", "classes", "inboxes", "inbox-capacity", "topics", "participants", "history-depth", "held"} {
		if c.fs.Changed(n) {
			return true
		}
	}
	return false
}

// config builds and validates the configuration. Its errors are usage errors, except a
// configuration file that cannot be read.
func (c *configFlags) config() (transport.Config, error) {
	cfg := transport.DefaultConfig()
	if c.file != "" {
		var err error
		if cfg, err = transport.LoadConfig(c.file); err != nil {
			if errors.Is(err, transport.ErrInvalidConfig) {
				return cfg, usageError(fmt.Errorf("--config: %w", err))
			}
			return cfg, err
		}
	}
	if c.fs.Changed("classes") {
		cls, err := parseClasses(c.classes)
		if err != nil {
			return cfg, usageError(err)
		}
		cfg.Classes = cls
	}
	for _, f := range []struct {
		name string
		dst  *uint32
		v    uint32
	}{
		{"inboxes", &cfg.Inboxes, c.inboxes},
		{"inbox-capacity", &cfg.InboxCapacity, c.inboxCapacity},
		{"topics", &cfg.Topics, c.topics},
		{"participants", &cfg.Participants, c.participants},
		{"history-depth", &cfg.HistoryDepth, c.historyDepth},
		{"held", &cfg.Held, c.held},
	} {
		if c.fs.Changed(f.name) {
			*f.dst = f.v
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError(err)
	}
	return cfg, nil
}

func (c *configFlags) fileMode() (os.FileMode, error) {
	m, err := strconv.ParseUint(c.mode, 8, 32)
	// The owner reads and writes; the group may read or read and write; others get nothing,
	// and nobody executes (nor gets set-id or sticky bits): 0600, 0640 or 0660.
	if err != nil || m&^0o660 != 0 || m&0o600 != 0o600 {
		return 0, usageError(fmt.Errorf("--mode %q: want 0600 (owner only), 0640 or 0660 (shared with the file's group): read and write for the owner, nothing for others, no execute bits", c.mode))
	}
	return os.FileMode(m), nil
}

// parseClasses parses "256:1024,4KiB:256".
func parseClasses(s string) ([]transport.Class, error) {
	var out []transport.Class
	for _, part := range strings.Split(s, ",") {
		size, count, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			return nil, fmt.Errorf("--classes %q: want SIZE:COUNT,... (for example 256:1024,4KiB:256)", s)
		}
		sz, err := transport.ParseSize(size)
		if err != nil {
			return nil, fmt.Errorf("--classes %q: %w", s, err)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(count), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--classes %q: count %q is not a number", s, count)
		}
		out = append(out, transport.Class{Size: sz, Count: uint32(n)})
	}
	return out, nil
}

func formatClasses(cls []transport.Class, sep string) string {
	parts := make([]string, len(cls))
	for i, c := range cls {
		parts[i] = fmt.Sprintf("%s:%d", c.Size, c.Count)
	}
	return strings.Join(parts, sep)
}

func newCreateCmd(a *app) *cobra.Command {
	var cf configFlags
	var existOK bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "create a bus (its shared-memory region) from flags or a configuration file",
		Long: `create makes the region of the bus --bus in --dir: a file of fixed size holding the buffer
pools, the subscriptions' queues, the topic table and the participant table. The sizes come from
DefaultConfig, then the file given by --config, then the flags that are set. Every process that
attaches later uses the sizes recorded in the region.

It fails if the bus exists, unless --exist-ok is given: then an existing bus is accepted as it
is, or, when configuration flags or --config are given, if it has exactly that configuration
(a bus another user owns is refused either way). Exit status 1 if the bus exists or cannot be created, 2 for a bad flag or
configuration.`,
		Example: `  offq create
  offq create --bus plant --classes 256:4096,64KiB:64 --inbox-capacity 4096
  offq create --bus plant --config plant.toml --mode 0660`,
		Args: noArgs,
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			cfg, err := cf.config()
			if err != nil {
				return err
			}
			mode, err := cf.fileMode()
			if err != nil {
				return err
			}
			return a.create(cmd.OutOrStdout(), cfg, cf.given(), mode, existOK)
		}),
	}
	cf.register(cmd.Flags())
	cmd.Flags().BoolVar(&existOK, "exist-ok", false, "succeed if the bus exists (with the configuration the flags give, if any)")
	return cmd
}

// create makes the bus with cfg. With existOK an existing bus is success: any bus when no
// configuration flag was given (given false), one of exactly cfg otherwise.
func (a *app) create(out io.Writer, cfg transport.Config, given bool, mode os.FileMode, existOK bool) error {
	r, err := transport.Create(a.busName, transport.Options{Dir: a.dir, Config: cfg, Mode: mode})
	if errors.Is(err, transport.ErrExists) && existOK {
		if err := a.checkOwner(a.busName, false, "if it should be yours, remove it ('"+a.commandLine("rm", "--force", "--bus", a.busName)+"') and create it again"); err != nil {
			return fmt.Errorf("create: %w", err)
		}
		want := transport.Config{}
		if given {
			want = cfg
		}
		r, err = transport.Open(a.busName, transport.Options{Dir: a.dir, Config: want, ReadOnly: true})
		if err != nil {
			return fmt.Errorf("create: bus %q exists: %w", a.busName, err)
		}
		defer r.Close()
		if given {
			fmt.Fprintf(out, "bus %q exists with the same configuration: %s\n", a.busName, r.Path())
		} else {
			fmt.Fprintf(out, "bus %q exists: %s\n  buffers: %s\n  %s\n", a.busName, r.Path(), describeClasses(r.Config().Classes), describeTables(r.Config()))
		}
		return nil
	}
	if err != nil {
		if errors.Is(err, transport.ErrExists) {
			if r, oerr := a.openReadOnly(a.busName); oerr != nil {
				return fmt.Errorf("create: %s exists but cannot be read as a bus: %w (remove it with '%s' if it is a damaged bus)", transport.Path(a.dir, a.busName), oerr, a.commandLine("rm", "--force", "--bus", a.busName))
			} else {
				r.Close()
			}
			return fmt.Errorf("create: bus %q already exists in %s (remove it with '%s', or pass --exist-ok)", a.busName, a.dir, a.commandLine("rm", "--bus", a.busName))
		}
		return fmt.Errorf("create: %w", err)
	}
	defer r.Close()
	fmt.Fprintf(out, "created bus %q: %s, %s\n", a.busName, r.Path(), statview.Bytes(int64(r.Size())))
	fmt.Fprintf(out, "  buffers: %s\n", describeClasses(cfg.Classes))
	fmt.Fprintf(out, "  %s\n", describeTables(cfg))
	return nil
}

func describeClasses(cls []transport.Class) string {
	parts := make([]string, len(cls))
	for i, c := range cls {
		parts[i] = fmt.Sprintf("%d x %s", c.Count, c.Size)
	}
	return strings.Join(parts, ", ")
}

func describeTables(c transport.Config) string {
	return fmt.Sprintf("inboxes %d (queues up to %d), topics %d, participants %d, history up to %d, held %d per process",
		c.Inboxes, c.InboxCapacity, c.Topics, c.Participants, c.HistoryDepth, c.Held)
}

// attachFlags are pub's and sub's: whether to create the bus if it is missing, and how.
type attachFlags struct {
	create       bool
	allowForeign bool
	cf           configFlags
}

func (f *attachFlags) register(fs *pflag.FlagSet) {
	fs.BoolVar(&f.create, "create", false, "create the bus if it does not exist (sized by --config and the configuration flags of 'offq create')")
	registerForeign(fs, &f.allowForeign)
	f.cf.register(fs)
	for _, n := range []string{"classes", "inboxes", "inbox-capacity", "topics", "participants", "history-depth", "held", "mode"} {
		fs.MarkHidden(n) // documented under offq create; --config stays visible
	}
}

// openBus attaches to the bus --bus. Without --create a missing bus is an error rather than
// something to create with default sizes behind the user's back.
func (a *app) openBus(f *attachFlags, name string) (*bus.Bus, error) {
	opts := []bus.Option{bus.WithDir(a.dir), bus.WithLogger(a.log), bus.WithName(name)}
	if f.create {
		if f.cf.given() {
			cfg, err := f.cf.config()
			if err != nil {
				return nil, err
			}
			opts = append(opts, bus.WithConfig(cfg))
		}
		mode, err := f.cf.fileMode()
		if err != nil {
			return nil, err
		}
		opts = append(opts, bus.WithMode(mode))
	} else {
		if f.cf.given() {
			return nil, usageError(errors.New("configuration flags need --create"))
		}
		if _, err := os.Stat(transport.Path(a.dir, a.busName)); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("bus %q not found in %s (create it with '%s', or pass --create)", a.busName, a.dir, a.commandLine("create", "--bus", a.busName))
		}
	}
	if err := a.checkOwner(a.busName, f.allowForeign, overrideHint("--allow-foreign-owner")); err != nil {
		return nil, err
	}
	if f.allowForeign {
		opts = append(opts, bus.WithForeignOwner())
	}
	b, err := bus.Open(a.busName, opts...)
	if err != nil {
		return nil, err
	}
	return b, nil
}
