//go:build amd64 && !race

package shm

import (
	"sync/atomic"
	"unsafe"
)

// storeRelease stores v into w with release ordering only: on amd64 every store is a release
// store (x86-TSO), so a plain MOV does, where atomic.Uint64.Store is an XCHG, a full barrier.
func storeRelease(w *atomic.Uint64, v uint64) { *(*uint64)(unsafe.Pointer(w)) = v }

// storeHint stores v into w, a word of process memory that is only a hint to other goroutines
// (the pool's allocation cursor): with release ordering only, as storeRelease. A reader that
// sees an old value loses nothing but a warm slot.
func storeHint(w *atomic.Uint32, v uint32) { *(*uint32)(unsafe.Pointer(w)) = v }
