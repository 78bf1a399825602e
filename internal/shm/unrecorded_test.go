package shm

import "context"

// The two ways to take a message without recording it in a held list. They hand out a
// reference that no record in the region names, so the first use in a region turns its orphan
// sweep off until the next audit (see Region.Reap): no code outside tests may take messages
// this way, and only tests of that very rule (and of the ring on its own) call them.

// tryPop takes the oldest message without waiting. ok is false when the inbox is empty. The
// caller receives the inbox's reference to the handle and must Release it. The handle is
// untrusted: check it with Region.Buffer before use. A consumer that must survive its own
// crash without leaking uses TryPopInto. The reference tryPop hands out is recorded nowhere
// in the region, so the first tryPop or Pop in a region turns off its orphan sweep (see
// Region.Reap) until the next audit.
func (in *Inbox) tryPop() (h Handle, ok bool, err error) {
	in.v.r.noteUnrecorded()
	return in.take(nil, 0)
}

// pop takes the oldest message, waiting as w says until one arrives or ctx is done (then it
// returns ctx.Err()). See TryPop for what the caller receives. While messages are waiting pop
// makes no system call and allocates nothing; when it must sleep and ctx can be cancelled, it
// registers a wake-up with context.AfterFunc, which allocates.
func (in *Inbox) pop(ctx context.Context, w Waiter) (Handle, error) {
	in.v.r.noteUnrecorded()
	for {
		h, ok, err := in.take(nil, 0)
		if ok || err != nil {
			return h, err
		}
		if err := in.wait(ctx, w); err != nil {
			return 0, err
		}
	}
}
