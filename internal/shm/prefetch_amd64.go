package shm

import "unsafe"

// prefetchWrite asks for the cache line at p in exclusive state (PREFETCHW), without waiting.
//
//go:noescape
func prefetchWrite(p unsafe.Pointer)
