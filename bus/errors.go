package bus

import (
	"errors"

	"github.com/offq/offq/internal/shm"
)

var (
	// ErrClosed is returned by operations on a closed Bus, Publisher or Subscription.
	ErrClosed = errors.New("bus: closed")

	// ErrInvalidOption is wrapped by errors from Open, Subscribe and Publisher when an option's
	// value is out of range or options contradict each other.
	ErrInvalidOption = errors.New("bus: invalid option")

	// ErrReleased is returned by Message.Release when the message was already released.
	ErrReleased = errors.New("bus: message already released")
)

// Errors from the transport that callers of bus test for; they are the same values, so
// errors.Is works with either name.
var (
	// ErrPoolExhausted: no buffer of a large enough size class is free. The error is a
	// *shm.PoolError naming the size and the classes tried.
	ErrPoolExhausted = shm.ErrPoolExhausted
	// ErrTooLarge: the message is larger than the region's largest size class.
	ErrTooLarge = shm.ErrTooLarge
	// ErrCorrupt: the region is not a valid offq region.
	ErrCorrupt = shm.ErrCorrupt
	// ErrIncompatibleConfig: the region exists with another configuration.
	ErrIncompatibleConfig = shm.ErrIncompatibleConfig
	// ErrHeldFull: the process holds Config.Held messages it has not released.
	ErrHeldFull = shm.ErrHeldFull
)
