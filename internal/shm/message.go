package shm

import (
	"context"
	"errors"
)

// The receiving half of the door: take the next message of an inbox into the participant's
// held list, read it in place, release it. The held entry is reserved before the take and the
// take moves the reference from the ring cell into the entry in one crash-safe step (see
// Inbox.take), so at every instant the reference is recorded in the cell or in the entry.

// Held is a message a participant took and has not released: a small value naming the held
// entry that records it and the buffer. Copies name the same message; release it once (the
// second Release gets ErrReleased). Its methods take a pointer and change nothing: a Held is
// 72 bytes, and a method on the value copied it at every call, a copy the compiler keeps even
// when the call is inlined (Data took a tenth of a batched subscriber's time; docs/performance.md,
// "Issue 15, seventh round").
type Held struct {
	p    *Participant
	idx  int32
	buf  Buffer
	meta Meta // the header as it was taken (under the guard): reading it needs no guard
}

// newHeld builds the Held for the message in entry idx, reading its header once.
func (p *Participant) newHeld(idx int, buf Buffer) Held {
	return Held{p: p, idx: int32(idx), buf: buf, meta: buf.Meta()}
}

// Data returns the payload, in shared memory, clamped to the buffer. It is valid until
// Release; reading it after the region's file was truncated faults (see Read).
func (h *Held) Data() []byte {
	if h.p == nil {
		return nil
	}
	return h.buf.Bytes()[:h.meta.Len]
}

// FromRing reports whether the message is a copy taken from a slot ring, in the process's
// memory: releasing it touches no shared memory.
func (h *Held) FromRing() bool { return h.idx < 0 }

// Entry returns the index of the message's entry in its process's held list.
func (h *Held) Entry() int { return int(h.idx) }

// Meta returns the message's header (length clamped to the buffer), as read when the message
// was taken.
func (h *Held) Meta() Meta { return h.meta }

// Class returns the index of the buffer's size class.
func (h *Held) Class() int { return h.buf.Class() }

// Read calls fn with the payload under the fault guard: if the region's file was truncated
// under the message, Read returns an error wrapping ErrCorrupt instead of the process dying of
// SIGBUS. fn runs on the calling goroutine; anything it calls is covered too.
func (h *Held) Read(fn func(data []byte) error) (err error) {
	if h.p == nil {
		return ErrReleased
	}
	defer unguard(guard(), &err)
	return fn(h.Data())
}

// HasPrefix reports whether the payload begins with prefix, reading it under the fault guard
// (false if the region faults). It allocates nothing.
func (h *Held) HasPrefix(prefix string) (ok bool) {
	if h.p == nil {
		return false
	}
	defer unguard(guard(), nil)
	d := h.Data()
	return len(d) >= len(prefix) && string(d[:len(prefix)]) == prefix
}

// Release gives the message back: the held entry is cleared and the reference dropped; the
// last reference returns the buffer to its pool. It fails with ErrReleased, changing nothing,
// if the message was already released.
func (h *Held) Release() (err error) {
	if h.p == nil {
		return ErrReleased
	}
	if h.idx < 0 {
		return h.ReleaseCopy()
	}
	defer unguard(guard(), &err)
	if h.p.unhold(int(h.idx), h.buf.h) != nil {
		return ErrReleased
	}
	return nil
}

// Take takes the oldest message of in, an inbox p owns, into p's held list, waiting as w says
// until one arrives, ctx is done (ctx.Err()) or the inbox is closed (ErrClosed). Handles that
// do not name a live buffer (written by a faulty process) are counted as corrupt and skipped.
// It fails with ErrHeldFull when p holds Config.Held messages already. While messages are
// waiting it makes no system call and allocates nothing.
func (p *Participant) Take(ctx context.Context, in *Inbox, w Waiter) (Held, error) {
	var m Held
	err := p.TakeInto(ctx, in, w, &m)
	return m, err
}

// TakeInto is Take into *dst, which it fills only if it returns nil: for a caller whose
// message holds a Held among other fields (a Held returned by value is copied once more on
// the way).
func (p *Participant) TakeInto(ctx context.Context, in *Inbox, w Waiter, dst *Held) (err error) {
	defer unguard(guard(), &err)
	if in.ring != nil && in.ring.active() {
		// A ring to read: wait before reserving a held entry, which a message of the ring
		// does not need; take from the ring, or go on below once the inbox itself has a
		// message. (Without one, the take below waits, and a ring that appears meanwhile makes
		// it return errRingReady.)
		for waited := false; ; waited = true {
			spin := 0
			if w.Strategy != Sleep {
				spin = ringSpin
			}
			if ok, err := in.ring.takeSpin(p, in, dst, spin); ok || err != nil {
				return err
			}
			if in.inboxPending() {
				break
			}
			// A wait that returns at once, for ever (a word another process wrote over), must
			// not make the take deaf to its context: the wait looks at it only between its
			// turns. Looked at after the take, so that a message that is there wins.
			if waited {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if err := in.wait(ctx, w); err != nil {
				if errors.Is(err, ErrClosed) {
					if derr := p.r.Check(); derr != nil {
						return derr
					}
				}
				return err
			}
		}
	}
	idx, err := p.reserve()
	if err != nil {
		return err
	}
	for {
		h, err := in.popInto(ctx, w, p, idx)
		if err == errRingReady {
			ok, err := in.ring.take(p, in, dst)
			if ok || err != nil {
				p.unreserve(idx)
				return err
			}
			continue
		}
		if err != nil {
			p.unreserve(idx)
			if errors.Is(err, ErrClosed) {
				if derr := p.r.Check(); derr != nil { // a zeroed inbox looks closed
					return derr
				}
			}
			return err
		}
		if p.acceptInto(in, idx, h, dst) {
			return nil
		}
	}
}

// ringSpin is how many turns a take that finds no message of its inbox's slot ring watches
// the slot before it waits as the Waiter says (InboxRing.takeSpin): a few microseconds.
const ringSpin = 1 << 11

// TakeAny takes the oldest message of one of ins, inboxes p owns, into p's held list and
// returns it with the index in ins of the inbox it came from, waiting as w says until one of
// them has a message, ctx is done (ctx.Err(), index -1) or one of them is closed (ErrClosed,
// with that inbox's index). It starts looking at a different inbox at each call, so that a
// busy inbox does not starve the others. A goroutine waiting in TakeAny costs no OS thread:
// it parks until p's leader, asleep on p's bell, wakes it (see dispatcher). While messages
// are waiting it makes no system call; it allocates nothing.
func (p *Participant) TakeAny(ctx context.Context, ins []*Inbox, w Waiter) (_ Held, which int, err error) {
	which = -1 // what a fault returns: no inbox is to blame
	defer unguard(guard(), &err)
	if len(ins) == 0 {
		return Held{}, -1, ErrClosed
	}
	idx, err := p.reserve()
	if err != nil {
		return Held{}, -1, err
	}
	hw, err := p.heldWord(idx)
	if err != nil {
		p.unreserve(idx)
		return Held{}, -1, err
	}
	start := int(p.turn.Add(1) % uint32(len(ins)))
	for quick := true; ; quick = false {
		for k := range ins {
			i := (start + k) % len(ins)
			if r := ins[i].ring; r != nil {
				var m Held
				if ok, err := r.take(p, ins[i], &m); ok || err != nil {
					p.unreserve(idx)
					return m, i, err
				}
			}
			h, ok, err := ins[i].takeAs(hw, uint64(idx), quick)
			if err != nil {
				p.unreserve(idx)
				if errors.Is(err, ErrClosed) {
					if derr := p.r.Check(); derr != nil {
						return Held{}, i, derr
					}
				}
				return Held{}, i, err
			}
			if ok {
				if m, ok := p.accept(ins[i], idx, h); ok {
					return m, i, nil
				}
			}
		}
		var err error
		if !quick {
			err = ctx.Err() // a wait that returns at once, for ever, must not make the take deaf to it
		}
		if err == nil {
			err = waitAny(ctx, ins, w)
		}
		if err != nil {
			p.unreserve(idx)
			return Held{}, -1, err
		}
	}
}

// accept checks the handle a take moved into held entry idx. A handle that names no live
// buffer (the cell held a word a faulty process wrote) is counted and dropped: there is
// nothing to release, and the entry goes back to reserved for the next take.
func (p *Participant) accept(in *Inbox, idx int, h Handle) (Held, bool) {
	var m Held
	ok := p.acceptInto(in, idx, h, &m)
	return m, ok
}

// acceptInto is accept into *dst, which it fills only if it returns true.
func (p *Participant) acceptInto(in *Inbox, idx int, h Handle, dst *Held) bool {
	buf, err := p.r.buffer(h)
	if err != nil {
		p.r.hdr.corrupt.Add(1)
		in.v.hdr.corrupt.Add(1)
		p.forget(idx)
		return false
	}
	dst.p, dst.idx, dst.buf, dst.meta = p, int32(idx), buf, buf.Meta()
	in.noteAge(h, dst.meta.Stamp)
	if rt, corr := buf.address(); rt != 0 {
		p.markAwaited(rt, corr) // a request: name its taker to the requester
	}
	return true
}

// TakeHistory takes a reference to each message in t's history, oldest first, into p's held
// list and calls fn with it. Each entry is reserved and marked before the reference is taken,
// so there is no instant at which p holds a reference that no record names. Messages released
// while being read are skipped. It stops with ErrHeldFull when p's held list is full.
func (p *Participant) TakeHistory(t Topic, fn func(Held)) (err error) {
	defer unguard(guard(), &err)
	return t.holdHistory(p, func(idx int, h Handle) {
		buf, err := p.r.buffer(h)
		if err != nil {
			p.unhold(idx, h)
			return
		}
		fn(p.newHeld(idx, buf))
	})
}

// Cap returns the buffer's size: its size class.
func (h *Held) Cap() int {
	if h.p == nil {
		return 0
	}
	return h.buf.Cap()
}

// CloseInbox closes in, an inbox p owns: producers stop delivering to it and what is queued
// is released. Closing an inbox that is not open (closed before, or reused) does nothing.
func (p *Participant) CloseInbox(in *Inbox) (err error) {
	defer unguard(guard(), &err)
	if in.ring != nil {
		in.ring.close()
	}
	return in.close()
}
