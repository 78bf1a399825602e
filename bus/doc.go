// Package bus is offq's public API: publish/subscribe between processes on one host through
// shared memory, with no copy and no system call on the data path.
//
// Every process that opens the same bus name (in the same directory, /dev/shm by default)
// maps the same region. A Publisher sends to a topic; every Subscription whose pattern matches
// the topic receives the message in place, in the publisher's buffer:
//
//	b, err := bus.Open("plant")
//	...
//	defer b.Close()
//	pub, err := b.Publisher("sensors.line1.temp")
//	l, err := pub.Loan(64)          // a buffer in shared memory
//	n := encode(l.Bytes())          // write the message in place
//	err = pub.Send(ctx, l.WithLen(n))
//
//	sub, err := b.Subscribe("sensors.*.temp")
//	m, err := sub.Receive(ctx)
//	use(m.Data())                   // the publisher's bytes, not a copy
//	m.Release()
//
// A subscription, typed or not, is consumed in one of three forms: Receive (pull one message),
// Messages (a range-over-func iterator) or Handle (a callback on a goroutine of its own).
// Receive returns ctx.Err() when ctx is done; Messages, like a range over a channel that is
// closed, ends quietly instead, when ctx is done or the subscription is closed, so a loop
// needs no error case for its own cancellation (test ctx.Err() after the loop when it
// matters); other errors are yielded once.
//
// Topics are NATS-style names ("a.b.c"); patterns may use '*' for one token and '>' for the
// remaining tokens (package topics).
//
// # Typed messages
//
// NewTypedPublisher and NewTypedSubscription carry Go values through a codec
// from package codec: Raw (bytes), Msgpack (encoded straight into the loaned buffer, decoded in
// place) or Struct (a pointer-free struct used in place: the publisher fills the *T returned
// by TypedPublisher.Loan, subscribers read a *T view of the same memory; nothing is encoded).
// A topic exists from its first Publisher until nothing uses it: once no process has a
// Publisher of it open, its history is empty, no subscription matches it and no message of it
// is queued or held, its table entry may be freed (Bus.ReclaimTopics; a full table does it by
// itself, and so does offq reap) and taken by another name.
//
// The first typed publisher or subscription of a topic records the codec and a fingerprint of
// the type in the bus; a different type on that topic, in any process, gets ErrTypeMismatch.
//
//	pub, err := bus.NewTypedPublisher(b, "sensors.line1", codec.NewStruct[Reading]())
//	l, err := pub.Loan()
//	l.Value().Temp = 21.5
//	err = pub.Send(ctx, l)
//
//	sub, err := bus.NewTypedSubscription(b, "sensors.*", codec.NewStruct[Reading]())
//	m, err := sub.Receive(ctx)
//	r, err := m.View() // *Reading in shared memory, valid until m.Release()
//
// # Request and reply
//
// Publisher.Request sends a request and returns the first reply, zero copy both ways when the
// loan forms are used: the requester loans a buffer, writes the request in place and sends it
// (RequestLoan); a responder receives it like any message (Message.IsRequest tells) and
// answers with ReplyLoan, writing the reply in place, and ReplyLoan.Send, which pushes it
// straight into the requester's own reply inbox: no topic lookup, no copy. Respond and
// Request are the copying forms; TypedPublisher.Request, Respond and DecodeReply the typed
// ones; SendRequest and PendingRequest.Wait split a request in two, for a program that sends
// it from one place and waits elsewhere.
//
// Each Bus opens reply inboxes as requests need them, up to MaxInFlight (64) waiting at once,
// one per request in flight; a reply carries its request's correlation id, and one that does
// not match (the late reply to a request that timed out, the second of two responders) is
// dropped. Matching takes no lock. A request fails with ErrNoResponders at once when no
// subscription matches its topic; with ErrTimeout (which is also context.DeadlineExceeded)
// at ctx's deadline; and with ErrResponderDied within milliseconds when the process that took
// it (or, before anyone did, every process it was delivered to) dies: the first responder to
// take a request names itself in the requester's reply inbox, and a waiting requester checks
// that process's kernel lock. Every subscription whose pattern matches receives the request
// and may answer; the first reply wins. Queue groups spread requests over responders. A
// responder that cannot send the reply it means to answers with RespondError instead, and the
// request fails at once with a *ResponderError carrying its reason (the form is in-band: a
// reply beginning with ErrorReplyPrefix); a NATS bridge carries error replies both ways.
//
// # Queue groups
//
// Subscriptions made WithQueueGroup(name) share the messages of the topics their patterns
// match: each message goes to one member of the group, in any process, while subscriptions
// outside the group receive it as usual. A publisher picks the member round robin, passing
// over one whose queue is more than half full for the least loaded, and the member's overflow
// policy applies as for any subscription. A member that leaves (Close, or its process dies
// and is reaped) does not hand what is queued for it to another member: those messages are
// released and counted per topic (offq_topic_queue_group_dropped_total); messages a dead
// member had received and not released are released by the reaper. Publishers stop choosing
// a member once it is closed or reaped (the reaper runs every second by default).
//
// # Message lifetime
//
// Loan lends the publisher a buffer from the smallest size class that fits; Send hands it to
// every matching subscription with a reference each, and the publisher's loan ends. A
// received Message aliases that buffer. Its Data is valid until Release: after that the
// buffer may be reused by another process at any moment, like a bbolt byte slice after its
// transaction. Copy what you keep with Clone. In the Messages iterator and in Handle callbacks
// the message is released for you when the loop body or callback returns. The buffer returns
// to its pool when the last subscriber releases it and the topic's history (WithHistory) no
// longer keeps it. Every received message is recorded in the process's held list in shared
// memory, which is what lets the bus give it back if the process dies; a process may hold at
// most Config.Held messages at once (ErrHeldFull).
//
// Bus.Close releases everything the process holds and removes its subscriptions. If messages
// were still held it keeps the region mapped, so a late read of Data sees stale bytes instead
// of faulting. Close waits for the calls under way on the Bus's objects (a Send, a Receive, a
// Release, a Read, a reply, a Subscription or Publisher closing at the same time) before it
// detaches, and every such call made after it fails with ErrClosed (a Release: ErrReleased
// and ErrClosed) without touching the region, which may be unmapped by then. Closing a Bus
// from inside a Read callback would wait for itself.
//
// # Batches
//
// For throughput, the batched forms move up to MaxBatch messages per call:
// Publisher.LoanBatch and SendBatch on the publishing side, Subscription.ReceiveBatch and
// ReleaseBatch on the receiving side. Each message in a batch is still a message of its own:
// its own buffer, sequence number, reference per subscriber and held entry, released on its
// own (Message.Release works on a message received in a batch, and ReleaseBatch on messages
// received one at a time), in the same order guarantees as Send and Receive. What a batch
// shares is the work that names no reference: the call's checks and fault guard, the topic's
// counters, the clock, the wake-up check of each subscriber's queue and the pools' counters.
// A process killed in the middle of a batch leaves each message loaned, queued or held, where
// the reaper finds it, as a process killed between single calls would. All four allocate
// nothing.
//
// # Slot rings
//
// For the lowest latency, a publisher of small messages may own a ring of message slots
// (WithSlotRing): the subscribers of its topic that drop their oldest message on overflow, in
// no queue group and with a queue shorter than the ring, poll the slot of their next message
// and copy it out of the very cache line they polled, instead of reading a queue cell and then
// a buffer. In offq bench's 64-byte busy-spin round trip on the team's 2-vCPU VM this takes
// 1.1 to 1.4 times a bare shared word's round trip where the two vCPUs sit close (a bare
// word's round trip 200-260 ns), and about 0.85 times where they sit far apart (about 900 ns),
// with a p99.9 within 2x of the bare word's in most runs; the pool takes about 2.4 and 1.4
// times (docs/performance.md). The message is staged in the process and copied into its slot
// at Send, and copied out at Receive (Data is then process memory, valid until Release as
// ever); so rings suit messages of a few cache lines at most. A
// subscriber that falls a ring behind loses the oldest, counted as DropOldest drops; other
// subscribers of the topic receive the same messages through their queues. The publisher
// lends one message at a time, sends no batches or requests, and its topic keeps no history.
// Publisher.Close retires the ring once no loan of it is out: a loan never sent nor discarded
// keeps the topic's ring taken (ErrRingTaken for a new ring publisher) until it is, or until
// the Bus closes. Bus.Close waits up to half a second for the live subscribers in other
// processes that read its rings to read them to their last message before it frees them;
// what a reader has not read by then is lost to it.
// Rings are as crash-safe as the pool: the ring is a buffer on loan to its publisher,
// reclaimed if it dies, and a subscriber holds nothing in shared memory but a cursor
// (docs/slot-rings.md).
//
// # Faults
//
// The region is a file that a faulty or hostile process could truncate. Every operation of
// this package that reads or writes it (Loan, Send, Publish, Receive, Release, Decode, Read,
// the statistics) turns the resulting memory fault into an error wrapping ErrCorrupt instead
// of letting SIGBUS kill the process. Data and View return slices and pointers into the
// region; reading them is the caller's code and is not guarded, like any mmap'd byte slice:
// a program that must survive a truncated region reads through Message.Read.
//
// # Concurrency
//
// Bus, Publisher and Subscription are safe for concurrent use by multiple goroutines. A
// Publisher serialises its sends; messages from one publisher reach each subscription in the
// order they were sent, and messages from different publishers interleave. In memory-model
// terms: the publisher's writes to a loaned buffer happen before Send's atomic store of the
// buffer's handle into a subscriber's queue, which happens before the Receive that loads it;
// so a receiver sees every byte the publisher wrote.
//
// A Loan and a Message belong to one goroutine at a time, as a slice's bytes do: hand them to
// another goroutine with the usual synchronisation, and do not send one Loan, or release one
// Message, from two goroutines at once. That is a data race in the caller, which the race
// detector reports. Done one after the other, the second send or release fails
// (ErrLoanEnded, ErrReleased); done at once, on a publisher with a slot ring, both may pass
// their checks and the message is published twice. The checks are not locked instructions,
// because the round trip's path pays for each one.
//
// # Backpressure
//
// Each subscription has a queue of its own in shared memory (WithQueueDepth, a power of two
// up to the region's inbox_capacity). When it is full, the subscription's overflow policy
// decides, per subscriber: DropOldest (default: the publisher evicts the oldest queued
// message; a slow subscriber never slows the publisher), DropNewest (the new message skips
// this subscriber), or Block (the publisher waits for room, bounded by its context and
// WithBlockLimit). Every drop is counted in shared memory (Subscription.Stats, and the
// metrics exporter). Buffers are the other limit: Loan and Publish fail fast with
// ErrPoolExhausted when no buffer of a fitting size class is free; size the pools (Config)
// for the messages in flight, queued and held. A failing Loan reads at most 64 buffers' state
// and the pool's counters (once the process has found the pool exhausted, the counters only:
// the buffers near its cursor are those the subscribers are about to release), not every
// buffer, so its cost does not grow with the pool (about half a microsecond in one process,
// BenchmarkLoanExhausted in internal/shm) and a publisher may retry; once a second a failing
// Loan reads the whole pool, in case the counters missed a free (a process killed while
// releasing).
//
// # Waiting
//
// Receive waits as WithWait says: SpinThenSleep (default: spin ~50µs, then sleep; after the
// first 5µs the spin offers the CPU to other processes now and then, so that subscribers
// sharing a core leave it to those with messages), BusySpin (lowest latency, a core per
// waiting subscriber, never gives the core away) or Sleep (sleep at once). A sleeping
// Receive costs no OS thread: its goroutine parks, and one goroutine per Bus sleeps on the
// process's doorbell, a futex word in shared memory that publishers ring when they deliver to
// a subscription that waits; it wakes exactly the goroutines whose subscriptions have
// messages. So a service may keep any number of subscriptions, a goroutine each blocked in
// Receive, on a handful of threads (1,000 of them run on 9 here). The first subscription to
// wait sleeps in the kernel itself instead, as the lone subscriber of a latency-sensitive
// program does, which saves the wake-up of a second thread. Select waits on several
// subscriptions from one goroutine. A Block publisher waiting for room waits the same way.
// Publishers make a system call only for a subscriber that is asleep, at most one per sleep:
// while messages flow there is none. A process killed while it waits costs the others at most
// one system call per waiting subscription until it is reaped.
//
// # Crash safety
//
// Every reference to a buffer is recorded in shared memory with its owner: a loan in the
// buffer's own state word, a queued message in a subscriber's queue, a received message in the
// holder's held list, a retained one in the topic's history. Each participant holds a kernel
// lock for its life, so its death is visible to the others however it dies. A Bus reclaims
// what dead participants left when it opens, every second (WithReapInterval) and when the pools
// run out; `offq reap` does it from a shell. A dead process never blocks the others: a full
// queue of a dead subscriber drops its oldest messages like any other (or fails a Block
// publisher at its deadline) until it is reclaimed. When the bus opens with nobody attached
// and a participant died, the reap is also an audit that repairs every reference count. A
// publisher killed half-way through a fan-out leaves only its loan (each subscriber's
// reference is added as its queue takes the message). A kill in the few instructions between
// the two atomic operations of moving one reference leaves a reference nobody holds: a reap
// that reclaims a dead participant, and a loan that finds the pools exhausted, request a sweep
// that frees such buffers (see docs/operations.md), made by one process at a time, a step at
// a time, so the pools come back to exactly what live processes hold without anyone having to
// leave. What a bus costs when nothing happens does not grow with the number of buffers (see
// docs/performance.md).
package bus
