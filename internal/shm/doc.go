// Package transport is offq's shared-memory primitive: a named region holding pools of
// message buffers in size classes, and inbox rings of 64-bit buffer handles. A publisher
// writes a message in place in a pooled buffer and stores the buffer's handle (its offset and
// generation, never a pointer) into a subscriber's inbox with one atomic compare-and-swap; the
// subscriber reads the message in place and releases it. No system call and no copy is on
// the data path.
//
// Most programs use package bus, which builds topics, fan-out and typed messages on this
// package. Use transport directly for tools and for building other layers.
//
// # Regions
//
// A region is one file (by default in /dev/shm) mapped MAP_SHARED by every process that
// uses it. Create builds it under a temporary name, reserves its pages with fallocate (so a
// full tmpfs is an error at creation, not SIGBUS later), writes its header and tables, marks
// it ready and only then links it under its name, so no process can attach to a half-written
// region and exactly one of several racing creators wins. Open validates everything it will
// rely on (magic, byte order, layout version, size, checksum, and that the section table is
// the one the stored configuration implies) and returns errors that wrap ErrCorrupt,
// ErrVersion, ErrIncompatibleConfig or ErrNotReady. OpenOrCreate does "detect, else create,
// then attach". Config sizes a region; ParseConfig and LoadConfig read it from TOML.
//
// # Participants, buffers and handles
//
// A process attaches as a Participant, which holds an open-file-description lock on its slot
// of the participant table for as long as it lives; the kernel drops the lock when the
// process dies, however it dies. Participant.Alloc loans a buffer: a single compare-and-swap
// on the buffer's state word both claims it and records the participant as its owner, so no
// buffer is ever taken without an owner a reaper can find. A buffer carries a reference count
// and a generation; its Handle packs its offset and generation. Inbox.Deliver pushes a handle with
// a reference of the inbox's own, added just before the ring commits it (Push instead takes
// over a reference the caller added with AddRefs); Release drops one, Unloan ends the loan, and
// the last reference returns the buffer to its pool.
//
// Handles read from shared memory are untrusted: Region.Buffer, Release and AddRefs check a
// handle's offset against the pools' bounds and slot alignment and its generation against the
// slot's, and fail with ErrBadHandle (allocation-free) rather than touch a wrong address.
//
// # Inboxes
//
// An Inbox is a bounded multi-producer ring of handles owned by one consumer. Each cell is one
// 64-bit word that is either a handle or an "empty for position p of generation g" marker;
// the compare-and-swap on the cell is the commit, and any process that finds the head or tail
// lagging behind a committed cell advances it. A process killed between the two steps
// therefore never stalls the others, and no lock exists that a dead process could hold.
// When an inbox is full its Policy decides: DropOldest (the default: the producer evicts and
// releases the oldest message), DropNewest (ErrFull) or Block (wait for room up to a
// deadline, then ErrTimeout). Every drop is counted in the inbox.
//
// # Wake-ups
//
// A consumer waits as its Waiter says: BusySpin, SpinThenSleep (the default) or Sleep. A
// sleeping consumer announces itself and sleeps on a futex word in the inbox; a producer
// calls FUTEX_WAKE only when a sleeper has announced itself, so a busy stream makes no system
// call. Announce, re-check, then sleep: no wake-up is lost (see sleepOn).
//
// # Crash safety
//
// Every reference to a buffer is recorded in exactly one place that names its owner: a loan
// in the buffer's own state word, a queued message in an inbox cell, a received message in its
// holder's held list (TryPopInto and PopInto move it there in steps a reaper can follow at any
// instruction), a retained one in a topic's history. Region.Reap finds participants whose
// kernel lock is gone and reclaims their inboxes, held messages, loans and half-made topic
// entries, each exactly once however many processes reap at once. A kill between the two atomic
// operations of moving one reference (a count and a record) leaves a reference nobody holds;
// Reap ends with a sweep that frees buffers whose one reference no record names (safe while
// others run: see Reap). When nobody is attached, Reap audits the region instead: with every
// other process locked out it recomputes each buffer's reference count from the references
// that exist. Attach reclaims a dead participant's slot before reusing it.
//
// # Concurrency
//
// Region, Participant and the Inbox methods Push, TryPop, Pop and Wait are safe for
// concurrent use by multiple goroutines and processes. All cross-process ordering comes from
// sequentially consistent atomic operations on words in the region: the compare-and-swap that
// stores a handle in a cell happens before the load that observes it, and so the writes a
// publisher made to the buffer (payload and Meta) before pushing are visible to the consumer
// that takes the handle.
//
// # Memory and lifetime
//
// Byte slices returned by Buffer.Bytes and Buffer.Data alias the shared mapping. They are
// valid while the caller holds a reference to the buffer and the Region is open; after
// Release another process may reuse the buffer at any time. Region.Close refuses to unmap
// while participants of the process are attached. docs/layout.md has the byte map.
//
// # Faults
//
// A region's file can lose pages under the mapping (another process truncates it; a hole on a
// full tmpfs has no memory behind it), and touching one raises SIGBUS. Every exported function
// that touches the mapping and returns an error catches that memory fault in the calling
// goroutine and returns an error wrapping ErrCorrupt instead; the Stats family returns an
// error for it. The parts a caller composes one operation from (Inbox.DeliverBuffer,
// Inbox.PopInto, Participant.Reserve, Unreserve and Forget, Region.Buffer, Region.Inbox,
// Region.AddRefs, SubscriptionGen, Buffer.Meta and SetMeta, Topic.NextSeq and Remember) do not:
// run the operation under Guard and Unguard. Reads and writes of the byte slices above are
// the caller's own, and are not guarded; Copy is. See docs/architecture.md, "Faults at the
// door".
package shm
