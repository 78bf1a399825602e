package shm

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"golang.org/x/sys/unix"
)

// Limits on a configuration. They keep every slot addressable by a handle (MaxClasses classes
// of MaxClassCount slots), every participant within a slot state word's owner field, and every
// table index within its field.
const (
	MaxClasses    = 8
	MaxClassSize  = 1 << 30 // 1 GiB
	MaxClassCount = 1 << 20
	// MaxInboxes keeps a fan-out within a buffer's reference count (13 bits, 8191): the loan,
	// the history's reference and, for every subscription, a queued reference and a late
	// joiner's held history reference (2*4094 + 2 = 8190). More subscriptions than that would
	// fail a fan-out half-way with a reference count that cannot grow.
	MaxInboxes       = (maxRefs - 2) / 2
	MaxInboxCapacity = 1 << 20
	MaxTopics        = 1 << 16
	MaxParticipants  = 1<<12 - 1 // a slot state word records a loan's owner (index + 1) in 12 bits
	MaxHistoryDepth  = 1 << 10
	MaxHeld          = 1 << 16
	MaxRegionSize    = 1 << 39 // 512 GiB
	slotAlign        = 64
)

// maxMapped is the largest region this process can map: the mapping is a Go slice, whose length
// is an int, so a 32-bit process maps 2 GiB at most (and, in practice, less: its whole address
// space is 3 or 4 GiB). A 64-bit process maps MaxRegionSize.
const maxMapped = min(MaxRegionSize, math.MaxInt)

// Size is a byte count that reads from configuration files as a number or as a string with a
// binary unit: 256, "4KiB", "64 KiB", "1MiB", "1GiB".
type Size uint32

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String formats s with the largest binary unit that divides it.
func (s Size) String() string {
	switch {
	case s != 0 && s%(1<<30) == 0:
		return strconv.FormatUint(uint64(s>>30), 10) + "GiB"
	case s != 0 && s%(1<<20) == 0:
		return strconv.FormatUint(uint64(s>>20), 10) + "MiB"
	case s != 0 && s%(1<<10) == 0:
		return strconv.FormatUint(uint64(s>>10), 10) + "KiB"
	}
	return strconv.FormatUint(uint64(s), 10) + "B"
}

// ParseSize parses "256", "256B", "4KiB", "4K", "1MiB", "1GiB" (units are binary).
func ParseSize(str string) (Size, error) {
	t := strings.TrimSpace(str)
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(t, 10, 32)
	if err != nil || n*mult > 1<<32-1 {
		return 0, fmt.Errorf("%w: size %q: want a number of bytes, optionally with KiB, MiB or GiB", ErrInvalidConfig, str)
	}
	return Size(n * mult), nil
}

// Class is one size class: Count buffers of Size bytes of payload each.
type Class struct {
	Size  Size   `toml:"size" json:"size"`
	Count uint32 `toml:"count" json:"count"`
}

// Config fixes the sizes of a region's tables. It is recorded in the region's header when the
// region is created; every process that attaches reads it from there.
type Config struct {
	// Classes are the buffer size classes, ascending by Size. Sizes are multiples of 64 bytes.
	Classes []Class `toml:"classes" json:"classes"`
	// Inboxes is the number of inbox rings (one per subscription).
	Inboxes uint32 `toml:"inboxes" json:"inboxes"`
	// InboxCapacity is the largest capacity of an inbox ring, a power of two; a subscription may
	// ask for less.
	InboxCapacity uint32 `toml:"inbox_capacity" json:"inbox_capacity"`
	// Topics is the number of entries in the topic table.
	Topics uint32 `toml:"topics" json:"topics"`
	// Participants is the number of processes (or attachments) that can be attached at once.
	Participants uint32 `toml:"participants" json:"participants"`
	// HistoryDepth is the largest number of past messages a topic may keep for late joiners.
	HistoryDepth uint32 `toml:"history_depth" json:"history_depth"`
	// Held is how many received messages one participant may hold unreleased at once; each
	// is recorded in the participant's held list so that it can be reclaimed if it dies.
	Held uint32 `toml:"held" json:"held"`
}

// DefaultConfig returns the configuration used when none is given: about 8 MiB of buffers in
// four classes (256 B, 4 KiB, 64 KiB, 1 MiB), 64 inboxes of up to 1024 messages, 256 topics,
// 64 participants each holding up to 1024 received messages, and histories of up to 16.
func DefaultConfig() Config {
	return Config{
		Classes: []Class{
			{Size: 256, Count: 1024},
			{Size: 4 << 10, Count: 256},
			{Size: 64 << 10, Count: 32},
			{Size: 1 << 20, Count: 4},
		},
		Inboxes:       64,
		InboxCapacity: 1024,
		Topics:        256,
		Participants:  64,
		HistoryDepth:  16,
		Held:          1024,
	}
}

// Validate reports the first thing wrong with c, wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if len(c.Classes) == 0 || len(c.Classes) > MaxClasses {
		return bad("%d size classes; want 1 to %d", len(c.Classes), MaxClasses)
	}
	for i, cl := range c.Classes {
		switch {
		case cl.Size < slotAlign || cl.Size > MaxClassSize || cl.Size%slotAlign != 0:
			return bad("class %d: size %d; want a multiple of %d from %d to %s", i, cl.Size, slotAlign, slotAlign, Size(MaxClassSize))
		case cl.Count == 0 || cl.Count > MaxClassCount:
			return bad("class %d (%s): count %d; want 1 to %d", i, cl.Size, cl.Count, MaxClassCount)
		case i > 0 && cl.Size <= c.Classes[i-1].Size:
			return bad("class %d (%s) is not larger than class %d (%s); list classes in ascending size", i, cl.Size, i-1, c.Classes[i-1].Size)
		}
	}
	switch {
	case c.Inboxes == 0 || c.Inboxes > MaxInboxes:
		return bad("inboxes %d; want 1 to %d", c.Inboxes, MaxInboxes)
	case c.InboxCapacity < 2 || c.InboxCapacity > MaxInboxCapacity || bits.OnesCount32(c.InboxCapacity) != 1:
		return bad("inbox_capacity %d; want a power of two from 2 to %d", c.InboxCapacity, MaxInboxCapacity)
	case c.Topics == 0 || c.Topics > MaxTopics:
		return bad("topics %d; want 1 to %d", c.Topics, MaxTopics)
	case c.Participants == 0 || c.Participants > MaxParticipants:
		return bad("participants %d; want 1 to %d", c.Participants, MaxParticipants)
	case c.HistoryDepth > MaxHistoryDepth:
		return bad("history_depth %d; want 0 to %d", c.HistoryDepth, MaxHistoryDepth)
	case c.Held == 0 || c.Held > MaxHeld:
		return bad("held %d; want 1 to %d", c.Held, MaxHeld)
	}
	sz := computeLayout(c).total
	if sz > MaxRegionSize {
		return bad("region would be %d bytes; the limit is %d", sz, uint64(MaxRegionSize))
	}
	if sz > maxMapped {
		return bad("region would be %d bytes; a %d-bit process maps %d at most (ask for fewer or smaller buffers, or create and use the bus from 64-bit processes)", sz, strconv.IntSize, uint64(maxMapped))
	}
	return nil
}

// Equal reports whether c and d describe the same region layout.
func (c Config) Equal(d Config) bool { return c.diff(d) == "" }

// diff names the first field in which c and d differ, or returns "".
func (c Config) diff(d Config) string {
	if len(c.Classes) != len(d.Classes) {
		return fmt.Sprintf("size classes: region has %d, asked for %d", len(d.Classes), len(c.Classes))
	}
	for i := range c.Classes {
		if c.Classes[i] != d.Classes[i] {
			return fmt.Sprintf("class %d: region has %d x %s, asked for %d x %s", i, d.Classes[i].Count, d.Classes[i].Size, c.Classes[i].Count, c.Classes[i].Size)
		}
	}
	for _, f := range []struct {
		name string
		a, b uint32
	}{
		{"inboxes", c.Inboxes, d.Inboxes},
		{"inbox_capacity", c.InboxCapacity, d.InboxCapacity},
		{"topics", c.Topics, d.Topics},
		{"participants", c.Participants, d.Participants},
		{"history_depth", c.HistoryDepth, d.HistoryDepth},
		{"held", c.Held, d.Held},
	} {
		if f.a != f.b {
			return fmt.Sprintf("%s: region has %d, asked for %d", f.name, f.b, f.a)
		}
	}
	return ""
}

// ParseConfig reads a configuration in TOML. Fields left out keep their DefaultConfig values;
// unknown keys are an error, so a misspelt key is not silently ignored. Example:
//
//	inboxes = 128
//	inbox_capacity = 4096
//	[[classes]]
//	size = "256B"
//	count = 4096
//	[[classes]]
//	size = "64KiB"
//	count = 64
func ParseConfig(data []byte) (Config, error) {
	c := DefaultConfig()
	var file Config
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&file)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return Config{}, fmt.Errorf("%w: unknown keys %s", ErrInvalidConfig, strings.Join(keys, ", "))
	}
	if md.IsDefined("classes") {
		c.Classes = file.Classes
	}
	for _, f := range []struct {
		key string
		dst *uint32
		src uint32
	}{
		{"inboxes", &c.Inboxes, file.Inboxes},
		{"inbox_capacity", &c.InboxCapacity, file.InboxCapacity},
		{"topics", &c.Topics, file.Topics},
		{"participants", &c.Participants, file.Participants},
		{"history_depth", &c.HistoryDepth, file.HistoryDepth},
		{"held", &c.Held, file.Held},
	} {
		if md.IsDefined(f.key) {
			*f.dst = f.src
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// MaxConfigFile bounds the configuration file LoadConfig reads: a configuration is a few lines.
const MaxConfigFile = 1 << 20

// LoadConfig reads a TOML configuration file (see ParseConfig): a regular file of at most
// MaxConfigFile bytes. It opens path without blocking, so that a FIFO is refused rather than
// waited on, and a device (/dev/zero) rather than read without end.
func LoadConfig(path string) (Config, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("load config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("load config %s: %w", path, err)
	}
	return c, nil
}

func readConfigFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxConfigFile {
		return nil, fmt.Errorf("%s is larger than 1 MiB, the most a configuration file may be", path)
	}
	return data, nil
}
