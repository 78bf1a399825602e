package shm

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinel errors. Callers test for them with errors.Is; the errors returned by this package wrap
// them with the name of the region and what was being done.
var (
	// ErrCorrupt marks a region whose bytes are not a valid offq region: a foreign file, a
	// truncated file, a header or table that fails validation, or a handle or cell that does not
	// decode. It never means the caller did something wrong.
	ErrCorrupt = errors.New("region corrupt")

	// ErrVersion is returned when a region was written by an incompatible layout version.
	ErrVersion = errors.New("unsupported layout version")

	// ErrIncompatibleConfig is returned by Open when the region exists with a configuration other
	// than the one the caller asked for, or one this process cannot map (a region of more than
	// 2 GiB in a 32-bit process).
	ErrIncompatibleConfig = errors.New("incompatible configuration")

	// ErrNotReady is returned when a region did not become ready within the attach timeout.
	ErrNotReady = errors.New("region not ready")

	// ErrExists is returned by Create when a region of that name already exists.
	ErrExists = errors.New("region exists")

	// ErrTopicReclaimed is returned by Topic.Send when the topic's entry was reclaimed (see
	// Region.Reap) after the Topic value was looked up.
	ErrTopicReclaimed = errors.New("topic reclaimed")
	// ErrNotFound is returned by Open when no region of that name exists.
	ErrNotFound = errors.New("region not found")

	// ErrPermission is returned when a region file is a symbolic link, not a regular file, or
	// owned by another user (unless allowed by Options.AllowForeignOwner).
	ErrPermission = errors.New("permission denied")

	// ErrInvalidConfig is returned for a configuration that cannot describe a region.
	ErrInvalidConfig = errors.New("invalid configuration")

	// ErrPoolExhausted is returned when no buffer of a large enough size class is free.
	// The returned error is a *PoolError naming the size asked for and the classes tried.
	ErrPoolExhausted = errors.New("pool exhausted")

	// ErrTooLarge is returned when a message is larger than the largest size class.
	ErrTooLarge = errors.New("message larger than the largest size class")

	// ErrBadHandle is returned for a handle that does not name a live buffer: out of bounds,
	// misaligned, of a stale generation, or already released.
	ErrBadHandle = errors.New("bad handle")

	// ErrFull is returned by Push on an inbox whose policy is DropNewest when it is full; the
	// message was not delivered to that inbox and the drop was counted.
	ErrFull = errors.New("inbox full")

	// ErrTimeout is returned when a blocking push or a wait reached its deadline.
	ErrTimeout = errors.New("timeout")

	// ErrClosed is returned when using a closed region, participant or inbox, or an inbox that
	// was closed and reused by another subscriber.
	ErrClosed = errors.New("closed")

	// ErrLoanEnded is returned by Send and Discard of a loan that was already sent or
	// discarded: the caller's bug, never a sign of a corrupt region.
	ErrLoanEnded = errors.New("loan already sent or discarded")

	// ErrReleased is returned by Release of a message that was already released.
	ErrReleased = errors.New("message already released")

	// ErrTableFull is returned when the participant or inbox table has no free slot.
	ErrTableFull = errors.New("table full")
)

// PoolError reports an allocation that no size class could satisfy.
type PoolError struct {
	Size    int      // bytes asked for
	Largest uint32   // largest class size in the region
	Classes []uint32 // the classes large enough, ascending; shared, do not modify
	Err     error    // ErrPoolExhausted or ErrTooLarge
}

func (e *PoolError) Error() string {
	if e.Err == ErrTooLarge {
		return fmt.Sprintf("%d-byte message exceeds the largest size class (%d bytes)", e.Size, e.Largest)
	}
	return fmt.Sprintf("pool exhausted: no free buffer for %d bytes in classes %v", e.Size, e.Classes)
}

// Unwrap returns ErrPoolExhausted or ErrTooLarge.
func (e *PoolError) Unwrap() error { return e.Err }

// corruptf returns an error wrapping ErrCorrupt.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// Error is the error of an operation of this package on a region: Op ("open", "create",
// "attach", ...), the region's Name, and the cause, printed like an *os.PathError:
// `open "plant": region not found`. A caller one layer up that adds its own operation and name
// unwraps it with Cause, so that the text says each thing once.
type Error struct {
	Op   string
	Name string
	Err  error
}

func (e *Error) Error() string {
	return e.Op + " " + strconv.Quote(e.Name) + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Cause returns err without this package's *Error around it (err itself otherwise), for a
// layer that reports the operation and name in its own words.
func Cause(err error) error {
	if e, ok := err.(*Error); ok {
		return e.Err
	}
	return err
}
