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

// Guard starts a fault guard for a caller that builds one operation out of several of this
// package's parts (package bus, until its operations are this package's own): until the
// matching Unguard, a memory fault of the calling goroutine panics instead of killing the
// process, and Unguard turns it into an error wrapping ErrCorrupt. Use them as a pair, in the
// function the guard covers:
//
//	defer shm.Unguard(shm.Guard(), &err)
//
// Every exported function of this package that touches the mapping and returns an error
// guards itself; a caller needs Guard only around the parts that return none (Buffer.Meta,
// Buffer.SetMeta, Topic.NextSeq, Topic.Remember and the like) and around its own reads and
// writes of payload bytes.
func Guard() bool { return guard() }

// Unguard ends a guard started by Guard, which it must be deferred directly after (see Guard).
// A memory fault becomes an error wrapping ErrCorrupt in *err; any other panic goes on.
func Unguard(old bool, err *error) {
	debug.SetPanicOnFault(old)
	if r := recover(); r != nil { // recover works only in the deferred function itself
		settle(r, err)
	}
}

// Copy copies src into dst like the built-in copy, under the fault guard: dst or src may be
// a payload in a region whose file was truncated, which fails with an error wrapping ErrCorrupt
// instead of killing the process. It copies in 256 KiB pieces: Go's copy switches to
// non-temporal stores at 1 MiB, which makes a single large copy about twice as slow and leaves
// the data out of cache for the reader. It allocates nothing.
func Copy(dst, src []byte) (n int, err error) {
	defer unguard(guard(), &err)
	const chunk = 256 << 10
	for len(src) > chunk && len(dst) > chunk {
		copy(dst[:chunk], src[:chunk])
		dst, src = dst[chunk:], src[chunk:]
		n += chunk
	}
	n += copy(dst, src)
	return n, nil
}
