package floor

import _ "unsafe" // for go:linkname

// nanotime is the runtime's monotonic clock (CLOCK_MONOTONIC through the vDSO): one clock read,
// where time.Now makes two.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// Now returns CLOCK_MONOTONIC in nanoseconds, the clock measurements stamp with. It is
// system-wide, so stamps from different processes on one host compare exactly.
func Now() int64 { return nanotime() }
