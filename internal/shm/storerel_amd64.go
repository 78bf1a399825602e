//go:build amd64 && !race

package shm

import (
	"sync/atomic"
	"unsafe"
)

// storeRelease stores v into w with release ordering only: on amd64 every store is a release
// store (x86-TSO), so a plain MOV does, where atomic.Uint64.Store is an XCHG, a full barrier.
func storeRelease(w *atomic.Uint64, v uint64) { *(*uint64)(unsafe.Pointer(w)) = v }
