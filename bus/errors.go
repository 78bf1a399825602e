package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/offq/offq/internal/shm"
)

var (
	// ErrClosed is returned by operations on a closed Bus, Publisher or Subscription.
	ErrClosed = errors.New("closed")

	// ErrRingLoaned is returned by Loan of a publisher with a slot ring (WithSlotRing) while
	// another of its loans is outstanding: such a publisher lends one message at a time. Send or
	// discard the loan first; Publish waits for it instead.
	ErrRingLoaned = shm.ErrRingLoaned

	// ErrInvalidOption is wrapped by errors from Open, Subscribe and Publisher when an option's
	// value is out of range or options contradict each other.
	ErrInvalidOption = errors.New("invalid option")
)

// Errors from the shared-memory layer that callers of bus test for; bus returns them wrapped
// in an *Error, so test with errors.Is.
var (
	// ErrReleased is returned by Message.Release when the message was already released.
	ErrReleased = shm.ErrReleased
	// ErrLoanEnded is returned by Send and Discard of a loan that was already sent or
	// discarded: a bug in the caller, never a sign of a corrupt region.
	ErrLoanEnded = shm.ErrLoanEnded
	// ErrPoolExhausted: no buffer of a large enough size class is free. The error is a
	// *PoolError naming the size and the classes tried.
	ErrPoolExhausted = shm.ErrPoolExhausted
	// ErrTooLarge: the message is larger than the region's largest size class.
	ErrTooLarge = shm.ErrTooLarge
	// ErrCorrupt: the region is not a valid offq region, or another process wrote where it
	// should not (a scribbled header, a truncated file).
	ErrCorrupt = shm.ErrCorrupt
	// ErrIncompatibleConfig: the region exists with another configuration.
	ErrIncompatibleConfig = shm.ErrIncompatibleConfig
	// ErrHeldFull: the process holds Config.Held messages it has not released (or, of a topic
	// read through a slot ring, 64 of the ring's messages, or as many as the ring has slots).
	ErrHeldFull = shm.ErrHeldFull
	// ErrRingTaken: Publisher with WithSlotRing found the topic's slot ring taken by another
	// open publisher (a topic has one slot ring at a time).
	ErrRingTaken = shm.ErrRingTaken
)

// errQueueDamaged is a subscription's queue found closed while nobody closed it.
var errQueueDamaged = fmt.Errorf("%w: the subscription's queue was closed by another process (its state word was overwritten); subscribe again", ErrCorrupt)

// PoolError reports a loan that no size class could satisfy: the size asked for and the
// classes tried. It unwraps to ErrPoolExhausted or ErrTooLarge.
type PoolError = shm.PoolError

// Error is the error of a bus operation: what was done (Op: "open", "publisher", "send",
// "receive", ...) on what (Name: the bus, topic or pattern), and why (Err). Like *net.OpError,
// it is added once, at this layer; the shared-memory layer's own operation prefix is not
// repeated.
type Error struct {
	Op   string
	Name string
	Err  error
}

func (e *Error) Error() string {
	s := "bus: " + e.Op
	if e.Name != "" {
		s += " " + strconv.Quote(e.Name)
	}
	return s + ": " + shm.Cause(e.Err).Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errors of request/reply (request.go).
var (
	// ErrNoResponders is returned by Request at once when no subscription matches the
	// request's topic (as NATS's nats.ErrNoResponders).
	ErrNoResponders = errors.New("no responders")
	// ErrResponderDied is returned by Request when the process that took the request (or,
	// before anyone took it, every process it was delivered to) died before replying. It is
	// noticed within milliseconds, not at the deadline.
	ErrResponderDied = shm.ErrResponderDied
	// ErrTimeout is returned by Request when ctx's deadline passed before a reply came. It
	// matches context.DeadlineExceeded too: errors.Is(err, context.DeadlineExceeded).
	ErrTimeout error = timeoutError{}
	// ErrTooManyRequests is returned by Request when MaxInFlight requests of the Bus are
	// waiting for replies already.
	ErrTooManyRequests = errors.New("too many requests in flight")
	// ErrNotRequest is returned by Message.Respond for a message that is not a request.
	ErrNotRequest = errors.New("message is not a request")
	// ErrRequesterGone is returned by Respond when the requester's reply inbox is gone: the
	// requester closed its Bus, or died. Nothing is delivered. (A reply to a request that
	// only timed out is delivered, and dropped by the requester.)
	ErrRequesterGone = errors.New("requester gone")
)

// timeoutError is ErrTimeout: a request's deadline passed; it is context.DeadlineExceeded
// to errors.Is, and a net.Error-style Timeout.
type timeoutError struct{}

func (timeoutError) Error() string        { return "request timed out" }
func (timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }
func (timeoutError) Timeout() bool        { return true }
