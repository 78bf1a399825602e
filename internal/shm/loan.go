package shm

import (
	"context"
	"errors"
	"unsafe"
)

// The publishing half of the door: lend a buffer, send it to a set of inboxes, or give it back.
// Every step that moves a reference is here, in the order the crash-safety argument needs
// (docs/architecture.md, "Every reference has an owner"): the loan's reference is recorded in
// the buffer's own state word as belonging to the participant; each subscriber's reference is
// added immediately before the compare-and-swap that commits the handle to its cell; the
// history's reference is added before the cell that records it is written; the loan ends
// last.

// Loan is a buffer lent to a participant: write the message into Bytes, then Send it or
// Discard it. A Loan is a small value; copies name the same loan, and only one of them may be
// sent or discarded (the second gets ErrLoanEnded).
//
// A slot ring's loan (SlotRing.Loan) has the ring's own pool value as its pool (class -1)
// and the number of the loan in its handle: a Loan stays six words, which the register ABI
// passes and returns in registers through every layer.
type Loan struct {
	p     *Participant
	buf   Buffer
	stamp int64 // the publish time Send writes; 0: Now at Send
}

// ring returns the slot ring whose loan l is, or nil.
func (l *Loan) ring() *SlotRing {
	if l.buf.p == nil || l.buf.p.class >= 0 || l.buf.s != nil {
		return nil
	}
	return (*SlotRing)(unsafe.Pointer(l.buf.p))
}

// FromRing reports whether l is a slot ring's loan (SlotRing.Loan).
func (l *Loan) FromRing() bool { return l.ring() != nil }

// Loan lends a buffer of at least n bytes from the smallest size class that has one free.
// It never blocks and allocates nothing; it fails with a *PoolError wrapping ErrPoolExhausted
// or ErrTooLarge.
func (p *Participant) Loan(n int) (_ Loan, err error) {
	defer unguard(guard(), &err)
	buf, err := p.alloc(n)
	if err != nil {
		return Loan{}, err
	}
	return Loan{p: p, buf: buf}, nil
}

// Bytes returns the whole buffer (Cap bytes), in shared memory.
func (l Loan) Bytes() []byte {
	if l.p == nil {
		return nil
	}
	return l.buf.Bytes()
}

// Prefix returns the buffer's first n bytes (n at most Cap), like Bytes()[:n] without copying
// the Loan: a caller that keeps loans in a slice asks for each message's bytes once a message.
func (l *Loan) Prefix(n int) []byte {
	if l.p == nil {
		return nil
	}
	return unsafe.Slice((*byte)(l.buf.data), l.buf.p.size)[:n]
}

// Cap returns the buffer's size: its size class.
func (l Loan) Cap() int {
	if l.p == nil {
		return 0
	}
	return l.buf.Cap()
}

// WithStamp returns the loan with its publish time set to st (a stamp of Now's clock, see
// Stamp), which Send writes into the header instead of Now: for programs that forward a
// message published elsewhere, such as a bridge, so that its time and age are the origin's.
// A zero st means Now at Send.
func (l Loan) WithStamp(st int64) Loan {
	l.stamp = st
	return l
}

// Discard gives back a loan that will not be sent. It fails with ErrLoanEnded if the loan was
// already sent or discarded, and with an error wrapping ErrCorrupt if the buffer's state word
// was scribbled on.
func (l Loan) Discard() (err error) {
	if w := l.ring(); w != nil {
		return w.abandon(l)
	}
	if l.p == nil {
		return ErrLoanEnded
	}
	defer unguard(guard(), &err)
	return l.end()
}

// end drops the loan's reference (clearing the owner in the same compare-and-swap).
func (l Loan) end() error {
	err := l.p.r.unloan(l.p.owner, l.buf.h)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errHandleStale), errors.Is(err, errHandleFree), errors.Is(err, errHandleOwner):
		// The state word no longer names this loan: it ended (sent or discarded) and the buffer
		// may already be another message's, a caller bug, or it was scribbled on.
		return l.notOwned()
	}
	return err
}

// endOwned ends a loan that its caller has found owned (and delivered): any failure means its
// state word was scribbled meanwhile, and is reported as corruption, once.
func (l Loan) endOwned() error {
	err := l.end()
	if err == nil || errors.Is(err, ErrCorrupt) {
		return err
	}
	return corruptf("the header of buffer %v changed while on loan: %v", l.buf.h, err)
}

// notOwned is the error for a loan whose buffer's state word does not name it (owned failed):
// ErrLoanEnded if the word is what a loan that ended leaves (sent or discarded, the buffer
// perhaps allocated again since: see endedState), and an error wrapping ErrCorrupt otherwise.
// A word scribbled on while the loan was out once came back as ErrLoanEnded ("loan already
// sent or discarded"), telling the publisher of a send it had not made.
func (l Loan) notOwned() error {
	v := l.buf.s.state.Load()
	if endedState(v, l.buf.h) {
		return ErrLoanEnded
	}
	return corruptf("the header of buffer %v changed while on loan (state word %#x)", l.buf.h, v)
}

// endedState reports whether v, the state word of h's slot, is one that a loan of h which
// ended leaves, by the protocol: h's generation with no owner (sent: the references are the
// targets'; discarded: none), or a later generation, at most loanEndedAhead allocations on
// (each allocation of the slot counts one). A random word passes with a chance of 1 in 128.
func endedState(v uint64, h Handle) bool {
	if stateGen(v) == h.gen() {
		return stateOwner(v) == 0
	}
	return (stateGen(v)-h.gen())&genMask <= loanEndedAhead
}

// loanEndedAhead bounds how many allocations of a slot may separate a stale loan from its
// slot's state word for the word to count as the protocol's: 2^32, hours of a slot reused at
// 100,000 allocations a second.
const loanEndedAhead = 1 << 32

// owned reports whether the buffer's state word still names l's loan. A loan sent or
// discarded before fails it, so Send never adds references to a buffer it no longer owns.
func (l Loan) owned() bool {
	v := l.buf.s.state.Load()
	return stateGen(v) == l.buf.h.gen() && stateRefs(v) > 0 && stateOwner(v) == l.p.owner
}

// SendResult says what a Send found besides success.
type SendResult struct {
	// Closed is how many targets were closed (and perhaps reused) since the caller listed
	// them: the caller's list is stale and should be rebuilt.
	Closed int
}

// Send publishes the loaned message on topic t to every inbox in to, then ends the loan: it
// writes the header (length n, topic, the topic's next sequence number, the time: Now, or the
// loan's stamp if WithStamp set one), delivers
// the handle to each inbox (a reference per inbox added as its cell commits; a full inbox is
// handled by its policy, and those drops are counted on the inbox, not returned), records it
// in the topic's history if the topic keeps one, and drops the loan's reference. The writes to
// the loan's bytes happen before every consumer's take of the handle.
//
// It fails with ErrLoanEnded (and delivers nothing) if the loan was already sent or discarded,
// and with an error wrapping ErrCorrupt if another process scribbled on the buffer's header.
// It fails with ErrTopicReclaimed (and delivers nothing) if an audit freed t's entry after t
// was looked up. It allocates nothing. The loan is consumed whatever the outcome.
func (t Topic) Send(ctx context.Context, l Loan, n int, to []Inbox) (res SendResult, err error) {
	return t.send(ctx, l, n, to, 0, 0, 0)
}

// SendAs is Send of a message the topic has numbered and counted already: a copy, for
// subscribers that do not read a slot ring, of the ring's message seq (see SlotRing).
func (t Topic) SendAs(ctx context.Context, l Loan, n int, to []Inbox, seq uint64) (res SendResult, err error) {
	return t.send(ctx, l, n, to, 0, 0, seq)
}

// send is Send, writing replyTo and corr into the trailer (0, 0 for a message that is not a
// request: SetMeta clears the header's addressed bit, so a buffer reused after a request never
// carries a stale reply address).
//
// With seq nonzero the message has that sequence number, and its bytes are not counted again
// (SendAs).
func (t Topic) send(ctx context.Context, l Loan, n int, to []Inbox, replyTo InboxID, corr, seq uint64) (res SendResult, err error) {
	if l.ring() != nil {
		return res, errors.New("offq: a slot ring's loan is sent with SlotRing.CommitLoan")
	}
	if l.p == nil {
		return res, ErrLoanEnded
	}
	defer unguard(guard(), &err)
	if !l.owned() {
		return res, l.notOwned()
	}
	if t.stale() {
		l.end()
		return res, ErrTopicReclaimed
	}
	prefetchCells(to)
	st := l.stamp
	if st == 0 {
		st = Now()
	}
	count := n
	if seq == 0 {
		seq = t.nextSeq()
	} else {
		count = -1
	}
	l.buf.SetMeta(Meta{Len: uint32(n), Topic: t.index, Seq: seq, Stamp: st})
	if replyTo != 0 || corr != 0 {
		l.buf.setAddress(replyTo, corr)
	}
	// One target and no history: the loan's reference goes to the cell (handoff.go), if a
	// hand-off word is free; then a delivery ends the loan.
	var owner uint32
	if len(to) == 1 && t.depth == 0 {
		if w := l.p.takeHandoff(l.buf.h); w != nil {
			defer giveHandoff(w)
			owner = l.p.owner
		}
	}
	for i := range to {
		if testHookFanOut != nil {
			testHookFanOut(i)
		}
		if err := to[i].push(ctx, l.buf.h, l.buf.s, owner); err != nil {
			if errors.Is(err, ErrBadHandle) {
				// Our own buffer's state word is not what we allocated: scribbled.
				t.countBytes(count) // its sequence number was taken
				l.end()
				return res, corruptf("the header of buffer %v changed while on loan: %v", l.buf.h, err)
			}
			if errors.Is(err, ErrClosed) {
				res.Closed++
				if to[i].group {
					t.e.groupDropped.Add(1) // the member left after it was chosen
				}
			}
		} else if owner != 0 {
			t.countBytes(count)
			return res, nil // the loan ended into the cell
		}
	}
	t.countBytes(count)
	if t.depth > 0 && l.p.r.addRefs(l.buf.s, l.buf.h, 1) == nil {
		t.remember(l.buf.h)
	}
	return res, l.endOwned()
}

// prefetchTargets bounds how many targets' cells a Send asks for before its deliveries: about
// what a core keeps in flight at once.
const prefetchTargets = 16

// prefetchCells asks for each target's next cell, exclusive, before a send writes the header:
// the cell's line was last written by the target's consumer (its take emptied it) and is read
// by it while it spins, so the push's read and compare-and-swap would fetch it twice, one
// target after another. The requests travel while the header is written, all at once. A
// prefetch is a hint: it changes no state and orders nothing.
func prefetchCells(to []Inbox) {
	for i := range min(len(to), prefetchTargets) {
		prefetchWrite(unsafe.Pointer(to[i].cell(to[i].v.hdr.tail.Load())))
	}
}

// testHookFanOut, if set, runs before each delivery of a fan-out: a test stops a publisher
// there to kill it in the middle of a fan-out.
var testHookFanOut func(target int)

// SetTestHookFanOut sets the hook Send runs before each delivery (nil removes it). It is for
// tests in other packages that kill a publisher in the middle of a fan-out; it is not safe to
// call while sends are running.
func SetTestHookFanOut(fn func(target int)) { testHookFanOut = fn }

// Write copies data to the start of the loan's buffer under the fault guard (a region file
// truncated under the buffer gives an error wrapping ErrCorrupt, not SIGBUS). It copies in
// 256 KiB pieces: Go's copy switches to non-temporal stores at 1 MiB, which makes a single
// large copy about twice as slow and leaves the data out of cache for the subscriber. It fails
// with ErrTooLarge if data does not fit.
func (l Loan) Write(data []byte) (err error) {
	if l.p == nil {
		return ErrLoanEnded
	}
	dst := l.buf.Bytes()
	if len(data) > len(dst) {
		return ErrTooLarge
	}
	defer unguard(guard(), &err)
	const chunk = 256 << 10
	for len(data) > chunk {
		copy(dst[:chunk], data[:chunk])
		dst, data = dst[chunk:], data[chunk:]
	}
	copy(dst, data)
	return nil
}

// Fill calls fn with the whole buffer under the fault guard, for an encoder that writes the
// message in place (see Write).
func (l Loan) Fill(fn func(buf []byte) error) (err error) {
	if l.p == nil {
		return ErrLoanEnded
	}
	defer unguard(guard(), &err)
	return fn(l.buf.Bytes())
}
