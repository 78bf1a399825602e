package shm

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Faults at the door.
//
// A region is a file that another process can truncate, and a page of a file on a full
// tmpfs may have no memory behind it. Touching such a page raises SIGBUS, which the Go
// runtime turns into a fatal error that kills the process, whoever touched it. Every exported
// function of this package that reads or writes the mapping therefore runs with
// debug.SetPanicOnFault on, and turns such a fault into an error wrapping ErrCorrupt:
//
//	func (r *Region) Thing() (err error) {
//		defer unguard(guard(), &err)
//		...
//
// Only memory faults are caught; any other panic goes on. SetPanicOnFault is a flag of the
// goroutine, so the guard covers exactly what the calling goroutine does until the function
// returns. One guard costs an open-coded defer, a recover and two SetPanicOnFault calls, about
// 11 ns (BenchmarkGuard), and allocates nothing; an exported function takes one, and calls the
// unexported bodies of others, so that guards do not nest.

// guard turns memory faults of the calling goroutine into panics; hand its result to unguard.
func guard() bool { return debug.SetPanicOnFault(true) }

// unguard ends a guard: it restores the goroutine's previous setting and turns a memory fault
// into an error wrapping ErrCorrupt in *err. Defer it directly (recover works only there).
func unguard(old bool, err *error) {
	debug.SetPanicOnFault(old)
	if r := recover(); r != nil {
		settle(r, err)
	}
}

// settle stores the error for a recovered memory fault in *err, and panics again with r if r
// is anything else.
func settle(r any, err *error) {
	e := faultError(r)
	if e == nil {
		panic(r)
	}
	if err != nil {
		*err = e
	}
}

// faultError returns the error for a recovered memory fault, or nil if r is not one. With
// SetPanicOnFault, a fault panics with a runtime.Error that also reports the faulting address.
func faultError(r any) error {
	re, ok := r.(interface {
		runtime.Error
		Addr() uintptr
	})
	if !ok {
		return nil
	}
	return fmt.Errorf("%w: memory fault at %#x in the shared region (was the region file truncated, or is its file system full?)", ErrCorrupt, re.Addr())
}
