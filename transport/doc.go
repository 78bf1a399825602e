// Package transport is offq's tool tier: what a program needs to create, inspect, reap and
// remove buses without attaching to them as a publisher or subscriber. The offq CLI, the
// metrics exporter and operators' own tools use it; applications use package bus.
//
// The shared-memory protocol itself (buffers, inboxes, the reference records that make it
// crash-safe) lives in an internal package and is reached only through bus. This package
// names its configuration and statistics types, and opens a region to read its counters or to
// reclaim what dead processes left:
//
//	r, err := transport.Open("plant", transport.Options{ReadOnly: true})
//	if err != nil { ... }
//	defer r.Close()
//	st, err := r.Stats()
//
// # Faults
//
// A region is a file another process could truncate. Every method that reads the mapping
// turns a memory fault into an error wrapping ErrCorrupt ("memory fault ... was its file
// truncated?"); none of them kills the process with SIGBUS.
//
// # Concurrency
//
// A *Region is safe for concurrent use by multiple goroutines; Close waits for calls in
// progress.
package transport
