// Package shm is offq's shared-memory protocol: a named region holding pools of
// message buffers in size classes, and inbox rings of 64-bit buffer handles. A publisher
// writes a message in place in a pooled buffer and stores the buffer's handle (its size class, slot
// index and generation, never a pointer) into a subscriber's inbox with one atomic compare-and-swap; the
// subscriber reads the message in place and releases it. No system call and no copy is on
// the data path.
//
// It is the one door to the region: the only package that knows byte offsets, the held
// lists and the order in which a reference moves between its records, and the only importer
// of unsafe and golang.org/x/sys/unix (with the bench floor). It exposes whole operations:
//
//	l, err := p.Loan(n)                      // a buffer, on loan to participant p
//	err = l.Write(data)                      // or Fill, or Bytes for in-place writers
//	res, err := t.Send(ctx, l, n, targets)   // header, a reference per inbox as its cell
//	                                         // commits, history, end of the loan
//	m, err := p.Take(ctx, &in, w)            // reserve a held entry, claim a cell into it,
//	                                         // validate the handle, skip bad ones
//	err = m.Release()                        // ErrReleased the second time
//	rep, err := r.Reap()                     // reap the dead, sweep orphans, audit
//	rep, err = r.Maintain()                  // the periodic reap: its cost does not grow with
//	                                         // the region; sweeps only on request
//
// The steps they are made of (push, take into a held entry, add references, remember,
// unhold, release) are unexported, so no caller can hand out a reference that no record
// names. Package bus is the facade applications use; package transport the tier tools use.
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
// process dies, however it dies. Participant.Loan lends a buffer: a single compare-and-swap
// on the buffer's state word both claims it and records the participant as its owner, so no
// buffer is ever taken without an owner a reaper can find. A buffer carries a reference count
// and a generation; its Handle packs its class, slot index and generation (39 bits).
// Topic.Send delivers a handle to each inbox with a reference of the inbox's own, added just
// before the ring commits it, and ends the loan; Held.Release drops the subscriber's reference,
// and the last reference returns the buffer to its pool.
//
// Handles read from shared memory are untrusted: every use checks a handle's class and slot
// index against the pools and its generation against the slot's, and fails with ErrBadHandle
// (allocation-free) rather than touch a wrong address.
//
// # Inboxes
//
// An Inbox is a bounded multi-producer ring of handles owned by one consumer. Each cell is one
// 64-bit word that is either a handle or an "empty for position p of generation g" marker;
// the compare-and-swap on the cell is the commit, and any process that finds the head or tail
// lagging behind a committed cell advances it. A process killed between the two steps
// therefore never stalls the others, and no lock exists that a dead process could hold.
// When an inbox is full its Overflow decides: DropOldest (the default: the producer evicts and
// releases the oldest message), DropNewest (ErrFull) or Block (wait for room up to a
// deadline, then ErrTimeout). Every drop is counted in the inbox.
//
// The batched forms (Participant.LoanBatch, Topic.SendBatch, Participant.TakeBatch,
// ReleaseBatch, in batch.go) do per message exactly what the single forms record (one loan,
// one cell per target, one held entry), and share the rest: one guard, one add to the topic's
// counters, one clock read, one wake-up check per target, the pools' counters once. A batch
// fills consecutive cells and moves the tail after each, as a push does: a tail moved once
// per run would leave committed cells ahead of a lagging tail, a state single pushes never
// make, and the interleaving checker shows a take or a scribble repair losing messages there.
//
// # Requests and queue groups
//
// A request is a message whose slot header names a reply inbox (kind 1, no pattern) and a
// correlation id (Topic.Request); Participant.Reply pushes the answer straight into that
// inbox after checking it is an open reply inbox of the generation named, and AwaitReply takes
// the reply with the right id, checking between sleeps that the responder named in the
// inbox's awaiting word still lives (request.go). A queue-group member is an inbox of kind 2
// with its group's name after its pattern; what it had queued when it leaves is counted per
// topic (queuegroup.go).
//
// # Wake-ups
//
// A consumer waits as its Waiter says: BusySpin, SpinThenSleep (the default) or Sleep. A
// consumer that must sleep announces itself in the inbox and parks its goroutine; one leader
// goroutine per participant sleeps on the participant's bell, a futex word in its slot, and
// wakes the goroutines whose inboxes are ready when a producer rings it (see doorbell.go and
// dispatcher). One consumer per participant sleeps on its inbox's own futex word instead (see
// dispatcher.sleepDirect). Block producers wait for room the same way. A producer rings only
// when a waiter has announced itself, so a busy stream makes no system call. Announce,
// re-check, then sleep: no wake-up is lost.
//
// # Crash safety
//
// Every reference to a buffer is recorded in exactly one place that names its owner: a loan
// in the buffer's own state word, a queued message in an inbox cell, a received message in its
// holder's held list (Take moves it there in steps a reaper can follow at any instruction), a retained one in a topic's history. Region.Reap finds participants whose
// kernel lock is gone and reclaims their inboxes, held messages, loans and half-made topic
// entries, each exactly once however many processes reap at once. A kill between the two atomic
// operations of moving one reference (a count and a record) leaves a reference nobody holds;
// Reap ends with a sweep that frees buffers whose one reference no record names (safe while
// others run: see Reap). When nobody is attached, Reap audits the region instead: with every
// other process locked out it recomputes each buffer's reference count from the references
// that exist. Attach reclaims a dead participant's slot before reusing it.
//
// Topic entries nothing uses are freed by the audit, and while others are attached by
// ReclaimTopics: a participant that uses a topic pins it (PinTopic sets its bit in the pins
// section, which a reaper clears when it dies), and an entry is freed only if no pin, history
// cell, matching subscription or message names it, checked after the entry was condemned, so
// that a pinner and a reclaimer always see one another (see docs/architecture.md).
//
// # Cost
//
// A sweep reads every slot ever lent (below the pools' lent marks), which on a large region is
// a million words. Maintain, the reap a bus runs every second, reads no slot unless something
// happened: it reclaims the dead, and a reclaim requests a sweep (as do a loan that finds the
// pools exhausted and RequestSweep), which one process at a time makes, holding a lease in the
// region's header, in steps of 32,768 slots from a cursor there that outlives a sweeper killed
// mid-way (see sweeplease.go). Opening a region maps it without touching its pools.
//
// # Concurrency
//
// Region, Participant, Topic.Send and Take are safe for concurrent use by multiple goroutines
// and processes. All cross-process ordering comes from
// sequentially consistent atomic operations on words in the region: the compare-and-swap that
// stores a handle in a cell happens before the load that observes it, and so the writes a
// publisher made to the buffer (payload and Meta) before pushing are visible to the consumer
// that takes the handle.
//
// # Memory and lifetime
//
// Byte slices returned by Loan.Bytes and Held.Data alias the shared mapping. They are valid
// while the caller holds the loan or the message and the Region is open; after Release
// another process may reuse the buffer at any time. Every exported function that reads or
// writes the mapping turns a memory fault (a truncated file) into an error wrapping
// ErrCorrupt; reading those slices in the caller's own code is not guarded (Held.Read is). Region.Close refuses to unmap
// while participants of the process are attached. docs/layout.md has the byte map.
package shm
