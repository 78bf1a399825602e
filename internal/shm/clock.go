package shm

import (
	"time"
	_ "unsafe" // for go:linkname
)

// nanotime is the runtime's monotonic clock (CLOCK_MONOTONIC through the vDSO): one clock read,
// where time.Now makes two (wall and monotonic). It is one of the runtime symbols the Go
// project keeps linkable for compatibility.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// Now returns the time used to stamp messages: CLOCK_MONOTONIC in nanoseconds. The clock is
// system-wide, so stamps from different processes on one host compare exactly, and a change
// of the wall clock does not skew latencies.
func Now() int64 { return nanotime() }

// monoToWall is the wall-clock time at monotonic zero, as this process sees it.
var monoToWall = time.Now().UnixNano() - nanotime()

// Time converts a stamp from Now to wall-clock time.
func Time(stamp int64) time.Time { return time.Unix(0, stamp+monoToWall) }

// Stamp converts a wall-clock time to a stamp of Now's clock: the inverse of Time, for a
// message forwarded with its origin's publish time (Loan.WithStamp). The zero time gives 0
// (no stamp).
func Stamp(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano() - monoToWall
}
