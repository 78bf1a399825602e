package shm

import "context"

// Steps of the ring that only tests call: the door's operations (Topic.Send, Take) use push
// and popInto directly. Tests of the ring on its own use these to drive it one step at a time.

// deliverBuffer is Deliver for a caller that has b's Buffer (a publisher, from its loan): it
// skips decoding the handle again for each inbox of a fan-out.
func (in *Inbox) deliverBuffer(ctx context.Context, b Buffer) error {
	if b.s == nil {
		return errHandleZero
	}
	return in.push(ctx, b.h, b.s, 0)
}

// pushHandle appends h to the inbox. On a full inbox the policy decides: DropOldest evicts (and
// releases) the oldest message and pushes; DropNewest fails with ErrFull; Block waits for
// room until ctx is done or the inbox's block limit passes, then fails with ErrTimeout. Every
// drop is counted in the inbox. pushHandle wakes a sleeping consumer, and makes no system call when
// none sleeps. It allocates nothing.
//
// The caller's reference to h passes to the inbox when pushHandle returns nil; on an error it stays
// with the caller.
func (in *Inbox) pushHandle(ctx context.Context, h Handle) error {
	if h == 0 || uint64(h)&^handleMask != 0 {
		return errHandleBits
	}
	return in.push(ctx, h, nil, 0)
}

// deliver appends h to the inbox like Push, but with a reference of the inbox's own: it adds
// one to h's reference count immediately before the compare-and-swap that commits h to its
// cell (and gives it back if that fails), so the reference exists only while the message is
// in the ring or about to be. The caller keeps its own reference whatever happens, and must
// hold one for the call (a loan, typically). A publisher fanning out with deliver holds no
// reference for a subscriber it has not reached yet: killed half-way, it leaves nothing for
// anyone but its loan, which a reaper ends. Only a kill between the two atomic operations of
// one delivery (a few instructions) leaves one reference unowned, for a reaper's sweep to
// free (see Region.Reap). It allocates nothing.
func (in *Inbox) deliver(ctx context.Context, h Handle) error {
	_, s, _, err := in.v.r.decode(h)
	if err != nil {
		return err
	}
	return in.push(ctx, h, s, 0)
}

// tryPopInto is TryPop for a consumer that records what it takes: the message's reference
// moves from the inbox to entry idx of p's held list (taken with Participant.Reserve) in a way
// a reaper can follow at every instruction, so neither a crash nor a race loses or doubles it.
// Release it with Participant.Unhold. On ok == false or an error the entry stays reserved.
func (in *Inbox) tryPopInto(p *Participant, idx int) (h Handle, ok bool, err error) {
	w, err := p.heldWord(idx)
	if err != nil {
		return 0, false, err
	}
	return in.take(w, uint64(idx))
}

// awaitMessage returns when a message is waiting (without taking it), the inbox is closed, or ctx
// is done.
func (in *Inbox) awaitMessage(ctx context.Context, w Waiter) error { return in.wait(ctx, w) }
