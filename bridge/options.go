package bridge

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/offq/offq/topics"
)

// ErrInvalidOption is wrapped by the error of New when an option is out of range.
var ErrInvalidOption = errors.New("bridge: invalid option")

// Option configures New.
type Option interface{ apply(*options) error }

type optionFunc func(*options) error

func (f optionFunc) apply(o *options) error { return f(o) }

type options struct {
	exports    []string
	imports    []string
	nats       []nats.Option
	queueDepth int
	id         string
	logger     *zap.Logger
	timeout    time.Duration
	reqTimeout time.Duration
	recent     int
}

func defaultOptions() options {
	return options{logger: zap.NewNop(), timeout: time.Second, reqTimeout: 10 * time.Second, recent: 4096}
}

func (o *options) validate() error {
	if len(o.exports) == 0 && len(o.imports) == 0 {
		return fmt.Errorf("%w: nothing to bridge: give WithExport or WithImport", ErrInvalidOption)
	}
	for _, p := range append(append([]string(nil), o.exports...), o.imports...) {
		if err := topics.ValidatePattern(p); err != nil {
			return fmt.Errorf("%w: pattern %q: %w", ErrInvalidOption, p, err)
		}
	}
	if o.reqTimeout <= 0 {
		return fmt.Errorf("%w: request timeout %v", ErrInvalidOption, o.reqTimeout)
	}
	if o.queueDepth < 0 || o.timeout <= 0 || o.recent < 1 {
		return fmt.Errorf("%w: queue depth %d, publish timeout %v, recent %d", ErrInvalidOption, o.queueDepth, o.timeout, o.recent)
	}
	return nil
}

// WithExport forwards the local topics matching pattern to NATS. It may be given several times.
func WithExport(pattern string) Option {
	return optionFunc(func(o *options) error { o.exports = append(o.exports, pattern); return nil })
}

// WithImport republishes the NATS subjects matching pattern on the local bus. It may be given
// several times.
func WithImport(pattern string) Option {
	return optionFunc(func(o *options) error { o.imports = append(o.imports, pattern); return nil })
}

// WithNATSOptions passes options to nats.Connect (credentials, TLS, reconnect policy). They
// are applied after the bridge's own defaults (MaxReconnects(-1), NoEcho and its handlers),
// so they may override them; a handler given here replaces the bridge's and its counts.
func WithNATSOptions(opts ...nats.Option) Option {
	return optionFunc(func(o *options) error { o.nats = append(o.nats, opts...); return nil })
}

// WithQueueDepth sets the queue depth of the bridge's local subscriptions (a power of two up
// to the region's inbox_capacity; default inbox_capacity). They are DropOldest: when NATS is
// slower than the local publishers, the oldest queued messages are dropped and counted.
func WithQueueDepth(n int) Option {
	return optionFunc(func(o *options) error { o.queueDepth = n; return nil })
}

// WithID sets the bridge's instance id, carried in the Offq-Origin header (default: a random
// NUID).
func WithID(id string) Option {
	return optionFunc(func(o *options) error { o.id = id; return nil })
}

// WithLogger sets the logger (default: no-op).
func WithLogger(l *zap.Logger) Option {
	return optionFunc(func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		o.logger = l
		return nil
	})
}

// WithPublishTimeout bounds how long an imported message waits for room in local subscribers'
// queues that use the Block policy (default 1s).
func WithPublishTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) error { o.timeout = d; return nil })
}

// WithRequestTimeout bounds how long the bridge waits for the reply to a request it carries
// (default 10s): a local request exported to NATS, or a NATS request imported into the local
// bus. The requester's own deadline does not travel with the request; a reply that comes
// after it gave up is dropped by the requester.
func WithRequestTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) error { o.reqTimeout = d; return nil })
}
