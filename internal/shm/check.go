package shm

import (
	"sync/atomic"
	"unsafe"
)

// Check reports whether the region's header still says what it said when this process
// opened the region: the magic number and the ready state. A region overwritten while in use
// (zero-filled, or replaced in place by another file's bytes) fails with an error wrapping
// ErrCorrupt: an inbox whose state word was zeroed looks closed, and a zeroed table looks
// empty, so callers that see ErrClosed, or nobody to deliver to, ask Check whether the region
// itself is gone. It reads one cache line and allocates nothing when the header is intact.
// Safe for concurrent use.
func (r *Region) Check() error {
	m := (*atomic.Uint64)(unsafe.Pointer(&r.hdr.magic)).Load()
	st := r.hdr.state.Load()
	if m == magic && st == stateReady {
		return nil
	}
	return corruptf("region %q damaged while in use: its header now has magic %#x and state %d (want %#x, %d); every table in it is suspect: re-create the region",
		r.name, m, st, uint64(magic), stateReady)
}
