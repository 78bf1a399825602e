package bus

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/offq/offq/internal/shm"
)

// Option configures Open.
type Option interface{ apply(*options) error }

type optionFunc func(*options) error

func (f optionFunc) apply(o *options) error { return f(o) }

type options struct {
	dir          string
	mode         os.FileMode
	config       shm.Config
	configFile   string
	logger       *zap.Logger
	name         string
	allowForeign bool
	readyTimeout time.Duration
	reapEvery    time.Duration
	reqWait      WaitStrategy
}

func defaultOptions() options {
	return options{dir: shm.DefaultDir, mode: 0o600, logger: zap.NewNop(), name: programName(), reapEvery: time.Second}
}

// programName is the default participant name: the base name of the program's path, without
// the directories (a binary built by `go run` lives in /tmp/go-build…/exe/).
func programName() string {
	if len(os.Args) == 0 || os.Args[0] == "" {
		return "offq"
	}
	return filepath.Base(os.Args[0])
}

func (o *options) validate() error {
	if o.config.Classes != nil && o.configFile != "" {
		return fmt.Errorf("%w: WithConfig and WithConfigFile both given", ErrInvalidOption)
	}
	if o.configFile != "" {
		c, err := shm.LoadConfig(o.configFile)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
		o.config = c
	}
	if o.config.Classes != nil {
		if err := o.config.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
	}
	if o.mode&^0o777 != 0 || o.mode&0o600 != 0o600 {
		return fmt.Errorf("%w: mode %#o: the owner needs read and write (0600, 0660, ...)", ErrInvalidOption, o.mode)
	}
	return nil
}

// WithDir puts the bus's region in dir instead of /dev/shm.
func WithDir(dir string) Option {
	return optionFunc(func(o *options) error {
		if dir == "" {
			return fmt.Errorf("%w: empty directory", ErrInvalidOption)
		}
		o.dir = dir
		return nil
	})
}

// WithMode sets the permission of a region this process creates (default 0600; 0660 shares
// the bus with the file's group).
func WithMode(mode os.FileMode) Option {
	return optionFunc(func(o *options) error { o.mode = mode; return nil })
}

// Config fixes the sizes of a bus's region: its size classes of buffers, inboxes, topics,
// participants, history depth and held-list length (the same type as transport.Config).
type Config = shm.Config

// Class is one size class of buffers: Count buffers of Size bytes.
type Class = shm.Class

// Size is a byte count that reads and prints with units ("4KiB").
type Size = shm.Size

// DefaultConfig returns the configuration a bus is created with when none is given.
func DefaultConfig() Config { return shm.DefaultConfig() }

// WithConfig sizes the region if this process creates it, and requires an existing region to
// have exactly this configuration.
func WithConfig(c Config) Option {
	return optionFunc(func(o *options) error { o.config = c; return nil })
}

// WithConfigFile reads the configuration from a TOML file (see transport.ParseConfig).
func WithConfigFile(path string) Option {
	return optionFunc(func(o *options) error { o.configFile = path; return nil })
}

// WithLogger sets the logger (default: no logging).
func WithLogger(l *zap.Logger) Option {
	return optionFunc(func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		o.logger = l
		return nil
	})
}

// WithName names this participant for tools and metric labels (default: the program's base
// name, filepath.Base(os.Args[0]), so that a program started by `go run` from a temporary
// directory is still called by its name). Tools show at most 32 bytes of it.
func WithName(name string) Option {
	return optionFunc(func(o *options) error { o.name = name; return nil })
}

// WithReapInterval sets how often a background goroutine looks for participants whose
// processes died and reclaims what they held (default 1s; 0 turns it off). The bus also reaps
// when it opens and when a loan finds the pools exhausted.
func WithReapInterval(d time.Duration) Option {
	return optionFunc(func(o *options) error {
		if d < 0 {
			return fmt.Errorf("%w: negative reap interval", ErrInvalidOption)
		}
		o.reapEvery = d
		return nil
	})
}

// WithForeignOwner allows attaching to a region file owned by another user.
func WithForeignOwner() Option {
	return optionFunc(func(o *options) error { o.allowForeign = true; return nil })
}

// Overflow is what a publisher does when a subscriber's queue is full.
type Overflow = shm.Overflow

const (
	// DropOldest evicts the oldest queued message (the default).
	DropOldest = shm.DropOldest
	// DropNewest drops the message being published, for this subscriber only.
	DropNewest = shm.DropNewest
	// Block makes the publisher wait for room, up to WithBlockLimit and its context.
	Block = shm.Block
)

// WaitStrategy is how a subscriber waits for messages.
type WaitStrategy = shm.WaitStrategy

const (
	// SpinThenSleep spins briefly, then sleeps on a futex (the default). After its first
	// 5µs the spin offers the CPU to other runnable processes now and then (sched_yield).
	SpinThenSleep = shm.SpinThenSleep
	// BusySpin never sleeps: lowest latency, one core per waiting subscriber.
	BusySpin = shm.BusySpin
	// Sleep sleeps at once: least CPU.
	Sleep = shm.Sleep
)

// SubscribeOption configures Subscribe and NewTypedSubscription.
type SubscribeOption interface{ applySub(*subOptions) error }

type subOptionFunc func(*subOptions) error

func (f subOptionFunc) applySub(o *subOptions) error { return f(o) }

type subOptions struct {
	depth      int
	overflow   Overflow
	wait       WaitStrategy
	spin       time.Duration
	blockLimit time.Duration
	history    bool
	group      string
}

// defaultSubOptions are a subscription's defaults: a queue of the region's inbox_capacity
// (depth 0), DropOldest, SpinThenSleep for DefaultSpin, no block limit, the history handed over.
func defaultSubOptions() subOptions {
	return subOptions{overflow: DropOldest, wait: SpinThenSleep, history: true}
}

func (o *subOptions) validate(maxDepth int) error {
	if o.depth != 0 && (o.depth < 2 || o.depth > maxDepth || o.depth&(o.depth-1) != 0) {
		return fmt.Errorf("%w: queue depth %d: want a power of two from 2 to %d (the region's inbox_capacity)", ErrInvalidOption, o.depth, maxDepth)
	}
	if o.overflow > Block {
		return fmt.Errorf("%w: overflow policy %d", ErrInvalidOption, o.overflow)
	}
	if o.wait > Sleep {
		return fmt.Errorf("%w: wait strategy %d", ErrInvalidOption, o.wait)
	}
	if o.blockLimit != 0 && o.overflow != Block {
		return fmt.Errorf("%w: WithBlockLimit needs WithOverflow(Block)", ErrInvalidOption)
	}
	if o.spin < 0 || o.blockLimit < 0 {
		return fmt.Errorf("%w: negative duration", ErrInvalidOption)
	}
	if o.group != "" {
		if err := validGroup(o.group); err != nil {
			return err
		}
		o.history = false // each member would get the history: a group shares messages
	}
	return nil
}

// WithQueueDepth sets the subscription's queue capacity: a power of two up to the region's
// inbox_capacity (default: inbox_capacity).
func WithQueueDepth(n int) SubscribeOption {
	return subOptionFunc(func(o *subOptions) error { o.depth = n; return nil })
}

// WithOverflow sets what publishers do when the queue is full (default DropOldest).
func WithOverflow(p Overflow) SubscribeOption {
	return subOptionFunc(func(o *subOptions) error { o.overflow = p; return nil })
}

// WithBlockLimit bounds how long a publisher waits for room under Block (default: only the
// publisher's context bounds it).
func WithBlockLimit(d time.Duration) SubscribeOption {
	return subOptionFunc(func(o *subOptions) error { o.blockLimit = d; return nil })
}

// WithWait sets how Receive waits (default SpinThenSleep).
func WithWait(w WaitStrategy) SubscribeOption {
	return subOptionFunc(func(o *subOptions) error { o.wait = w; return nil })
}

// WithSpin sets how long SpinThenSleep spins before sleeping (default 50µs).
func WithSpin(d time.Duration) SubscribeOption {
	return subOptionFunc(func(o *subOptions) error { o.spin = d; return nil })
}

// WithoutHistory skips the matching topics' history: the subscription sees only messages
// published after Subscribe returns.
func WithoutHistory() SubscribeOption {
	return subOptionFunc(func(o *subOptions) error { o.history = false; return nil })
}

// PublisherOption configures Publisher.
type PublisherOption interface{ applyPub(*pubOptions) error }

type pubOptionFunc func(*pubOptions) error

func (f pubOptionFunc) applyPub(o *pubOptions) error { return f(o) }

type pubOptions struct {
	history   int
	ringSlots int
	ringSize  int
}

// defaultPubOptions are a publisher's defaults: a topic it creates keeps no history.
func defaultPubOptions() pubOptions { return pubOptions{history: 0} }

// check refuses options that contradict each other, once all are applied.
func (o pubOptions) check() error {
	if o.ringSlots > 0 && o.history > 0 {
		return fmt.Errorf("%w: WithHistory(%d) and WithSlotRing: a topic with a slot ring keeps no history; drop one of the two", ErrInvalidOption, o.history)
	}
	return nil
}

// WithHistory makes the topic keep its last k messages for subscribers that join later
// (default 0). It takes effect when the topic is first used on the bus, and is ignored for a
// topic that exists already (Publisher.HistoryDepth tells its depth); k may not exceed the
// region's history_depth.
func WithHistory(k int) PublisherOption {
	return pubOptionFunc(func(o *pubOptions) error {
		if k < 0 {
			return fmt.Errorf("%w: history %d", ErrInvalidOption, k)
		}
		o.history = k
		return nil
	})
}

// WithSlotRing gives the publisher a ring of slots message slots of up to size bytes each, in
// shared memory, for the lowest latency offq has (docs/slot-rings.md): a subscriber reads the
// message from the line it polls, and a round trip costs 0.8 to 1.4 times a bare shared
// word's on the team's 2-vCPU VM, depending on where its vCPUs land (offq bench's offq-ring
// and shm-raw rows; docs/performance.md). It suits small messages sent one at a time:
//
//   - Subscribers that read the ring are those whose pattern is the topic's name, whose
//     overflow policy is DropOldest (the default) and whose queue depth is smaller than slots,
//     outside queue groups. They receive the publisher's messages from the ring, copied out of
//     it at Receive, instead of through their queue; a subscriber that falls slots messages
//     behind loses the oldest, counted as DropOldest drops. Other subscribers (wildcards,
//     Block or DropNewest, queue groups, deeper queues) receive each message through their
//     queue as from any publisher. Note that a subscription's default depth is the region's
//     inbox_capacity (1024 by default): give subscribers of a ring a WithQueueDepth below
//     slots, or the ring more slots, for them to read it. A subscriber that asked for a deeper
//     queue is promised that many messages of backlog, which a shorter ring would not keep.
//   - The publisher lends one message at a time: Loan while a loan is outstanding fails with
//     ErrRingLoaned (Publish waits its turn). A message may not exceed size bytes (ErrTooLarge),
//     LoanBatch and SendBatch are refused, and the topic keeps no history (WithHistory beside
//     WithSlotRing, or a ring on a topic that keeps a history, is refused with ErrInvalidOption).
//   - A topic has one slot ring at a time: a second publisher asking for one gets
//     ErrRingTaken until the first is closed.
//   - A Receive that finds no message of the ring watches it for a few microseconds before
//     it waits as the subscription's WithWait says (not with Sleep), so that a message that
//     lands meanwhile is taken at once; another goroutine's Receive on the same subscription
//     waits its turn that long at most.
//
// slots is a power of two from 2 to 65,536; the ring takes one buffer of the bus's pools, of
// 96 + 64 x readers + slots x (size + 32, rounded up to 64) bytes, for as long as the
// publisher is open and its readers have not read it.
func WithSlotRing(slots, size int) PublisherOption {
	return pubOptionFunc(func(o *pubOptions) error {
		if slots < 2 || slots > shm.MaxRingSlots || slots&(slots-1) != 0 {
			return fmt.Errorf("%w: slot ring of %d slots: want a power of two from 2 to %d", ErrInvalidOption, slots, shm.MaxRingSlots)
		}
		if size < 1 || size > shm.MaxRingPayload {
			return fmt.Errorf("%w: slot ring of %d-byte slots: want 1 to %d", ErrInvalidOption, size, shm.MaxRingPayload)
		}
		o.ringSlots, o.ringSize = slots, size
		return nil
	})
}

// WithRequestWait sets how Request waits for its reply (default SpinThenSleep: it spins about
// 50 µs, then sleeps on the reply inbox's futex word).
func WithRequestWait(w WaitStrategy) Option {
	return optionFunc(func(o *options) error {
		if w > Sleep {
			return fmt.Errorf("%w: wait strategy %d", ErrInvalidOption, w)
		}
		o.reqWait = w
		return nil
	})
}
