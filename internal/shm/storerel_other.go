//go:build !amd64 || race

package shm

import "sync/atomic"

// storeRelease stores v into w: atomically, where no cheaper store is known to be a release
// store (and under the race detector, which must see the store as atomic).
func storeRelease(w *atomic.Uint64, v uint64) { w.Store(v) }

// storeHint stores v into w, a hint to other goroutines (see the amd64 version): atomically.
func storeHint(w *atomic.Uint32, v uint32) { w.Store(v) }
