package shm

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// The region is a file another process could truncate. Touching a page past its new end
// raises SIGBUS, which would kill this process. Every entry of this package that reads or
// writes the mapping therefore runs with debug.SetPanicOnFault on, and turns such a fault into
// an error wrapping ErrCorrupt:
//
//	defer unguard(guard(), &err)
//
// Only memory faults are caught; any other panic goes on. (Two calls and an open-coded defer:
// a few nanoseconds, no allocation.)
func guard() bool { return debug.SetPanicOnFault(true) }

func unguard(old bool, err *error) {
	debug.SetPanicOnFault(old)
	if r := recover(); r != nil {
		// With SetPanicOnFault, a fault panics with a runtime.Error that also reports the
		// faulting address.
		if re, ok := r.(interface {
			runtime.Error
			Addr() uintptr
		}); ok {
			*err = fmt.Errorf("%w: memory fault at %#x in the shared region (was its file truncated?)", ErrCorrupt, re.Addr())
			return
		}
		panic(r)
	}
}
