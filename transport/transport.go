package transport

import (
	"errors"
	"time"

	"github.com/offq/offq/internal/shm"
	"github.com/offq/offq/topics"
)

// Configuration: the sizes of a region's tables, fixed when it is created.
type (
	// Config fixes the sizes of a region's tables (see DefaultConfig).
	Config = shm.Config
	// Class is one size class of buffers.
	Class = shm.Class
	// Size is a byte count that reads and prints with units ("4KiB").
	Size = shm.Size
	// Options say where a region is and how to open or create it.
	Options = shm.Options
)

// DefaultDir is where regions live unless Options.Dir says otherwise.
const DefaultDir = shm.DefaultDir

// DefaultConfig returns the configuration used when none is given.
func DefaultConfig() Config { return shm.DefaultConfig() }

// LoadConfig reads a TOML configuration file (see ParseConfig).
func LoadConfig(path string) (Config, error) { return shm.LoadConfig(path) }

// ParseConfig reads a configuration in TOML; fields left out keep their DefaultConfig values.
func ParseConfig(data []byte) (Config, error) { return shm.ParseConfig(data) }

// ParseSize reads a size such as "256", "4KiB" or "1MiB".
func ParseSize(s string) (Size, error) { return shm.ParseSize(s) }

// Statistics: snapshots of what a region counts.
type (
	// Stats is a snapshot of everything a region counts.
	Stats = shm.Stats
	// PoolStats is one size class's counters.
	PoolStats = shm.PoolStats
	// InboxStats is one subscription queue's counters.
	InboxStats = shm.InboxStats
	// TopicStats is one topic's counters.
	TopicStats = shm.TopicStats
	// RingStats describe a topic's slot ring (bus.WithSlotRing).
	RingStats = shm.RingStats
	// RingReaderStats is one reader of a slot ring.
	RingReaderStats = shm.RingReaderStats
	// RequestStats are a topic's request/reply and queue-group counters (TopicStats.Requests).
	RequestStats = shm.RequestStats
	// ParticipantInfo describes one attached process.
	ParticipantInfo = shm.ParticipantInfo
	// BridgeStats are a NATS bridge's counters, kept in its participant slot.
	BridgeStats = shm.BridgeStats
	// ReapReport says what a reap reclaimed.
	ReapReport = shm.ReapReport
	// InboxID names a subscription queue across processes.
	InboxID = shm.InboxID
	// Overflow is what a publisher does when a subscription queue is full (bus.Overflow).
	Overflow = shm.Overflow
)

// Path returns the file that holds region name in dir ("" means DefaultDir).
func Path(dir, name string) string { return shm.Path(dir, name) }

// ValidateName checks a region name.
func ValidateName(name string) error { return shm.ValidateName(name) }

// List returns the names of the offq regions in dir, sorted.
func List(dir string) ([]string, error) { return shm.List(dir) }

// Unlink removes region name from dir. Processes that have it mapped keep using it.
func Unlink(dir, name string) error { return shm.Unlink(dir, name) }

// Now returns the clock messages are stamped with: CLOCK_MONOTONIC in nanoseconds.
func Now() int64 { return shm.Now() }

// Time converts a stamp from Now to wall-clock time.
func Time(stamp int64) time.Time { return shm.Time(stamp) }

// Region is a tool's handle on a region: it reads counters and reaps, and never publishes or
// subscribes (ReclaimTopics attaches only for its own call).
type Region struct {
	r *shm.Region
}

// Open maps an existing region. With Options.ReadOnly the mapping is read-only (Reap then
// fails); otherwise the region is validated as for attaching.
func Open(name string, opts Options) (*Region, error) {
	r, err := shm.Open(name, opts)
	if err != nil {
		return nil, err
	}
	return &Region{r: r}, nil
}

// Create makes a new region and maps it. It fails with ErrExists if one of that name exists.
func Create(name string, opts Options) (*Region, error) {
	r, err := shm.Create(name, opts)
	if err != nil {
		return nil, err
	}
	return &Region{r: r}, nil
}

// Name returns the region's name.
func (r *Region) Name() string { return r.r.Name() }

// Path returns the region's file.
func (r *Region) Path() string { return r.r.Path() }

// Size returns the region's size in bytes.
func (r *Region) Size() int { return r.r.Size() }

// Owner returns the user id that owns the region's file.
func (r *Region) Owner() (uint32, error) { return r.r.Owner() }

// Config returns the region's configuration, as read from its header.
func (r *Region) Config() Config { return r.r.Config() }

// Stats returns a snapshot of the region's counters.
func (r *Region) Stats() (Stats, error) { return r.r.Snapshot() }

// Reap reclaims what dead participants left, and sweeps for orphaned buffers (see the bus
// package's crash-safety section). It needs a read-write mapping.
func (r *Region) Reap() (ReapReport, error) { return r.r.Reap() }

// ReclaimTopics frees the topic-table entries nothing uses while other processes are
// attached: no process has a Publisher of the topic, its history is empty, no subscription's
// pattern matches it and no message of it is queued or held. It attaches to the region as a
// participant named name for the call (so that a reaper can undo what it leaves if it is
// killed half-way) and returns how many entries it freed. It reads every buffer's header:
// for an operator's occasional use.
func (r *Region) ReclaimTopics(name string) (n int, err error) {
	p, err := r.r.Attach(name)
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, p.Detach()) }()
	return r.r.ReclaimTopics(p, topics.MatchValid)
}

// Close unmaps the region.
func (r *Region) Close() error { return r.r.Close() }

// Allocated counts, per size class, the buffers that hold references, by reading every slot:
// exact where Stats' pool counters are a running count, and slower (for tools and tests).
func (r *Region) Allocated() ([]int, error) { return r.r.Allocated() }
