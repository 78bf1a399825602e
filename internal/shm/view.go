package shm

import (
	"errors"
	"fmt"
	"unsafe"
)

// ErrBadView is returned by View when a byte slice cannot hold a value of the type asked
// for: it is shorter than the type or not aligned for it.
var ErrBadView = errors.New("buffer cannot hold the type")

// View returns a *T that aliases the first unsafe.Sizeof(T) bytes of b: writes through it are
// writes to b, and reads see what b holds. It is how a fixed-size message is read and written
// in place in a buffer (package codec's Struct codec). It checks that b is long enough for T
// and that b's first byte is aligned for T (payloads are 32-byte aligned, so any Go type
// is), and fails with an error wrapping ErrBadView otherwise; an empty b holds nothing, not
// even a type of size 0. It allocates nothing on success.
//
// T must hold no Go pointers (no pointers, slices, strings, maps, interfaces, channels or
// functions, at any depth): shared memory is invisible to the garbage collector, and an
// address means nothing in another process. View does not check this; codec.NewStruct proves
// it once for a type with reflect, which is too slow for each message.
//
// The *T is valid for as long as b is: for a buffer, while the caller holds its reference.
func View[T any](b []byte) (*T, error) {
	// Sizes taken through a nil *T, whose operand is not evaluated, not through a variable of
	// type T: on a 32-bit platform such a variable, if T must be 8-aligned (it holds an
	// atomic.Int64, say), goes to the heap, and View would allocate once a call.
	var t *T
	size, align := unsafe.Sizeof(*t), unsafe.Alignof(*t)
	if uintptr(len(b)) < size || len(b) == 0 {
		return nil, viewError(len(b), size, 0)
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	if uintptr(p)%align != 0 {
		return nil, viewError(len(b), size, align)
	}
	return (*T)(p), nil
}

// viewError is out of line so that View's success path stays small and allocation-free.
//
//go:noinline
func viewError(n int, size, align uintptr) error {
	if align != 0 {
		return fmt.Errorf("%w: buffer not aligned to %d bytes", ErrBadView, align)
	}
	return fmt.Errorf("%w: %d bytes, the type needs %d", ErrBadView, n, size)
}
