package bus

import (
	"context"
	"errors"

	"github.com/offq/offq/internal/shm"
)

// MaxBatch is the most messages one batched call (LoanBatch, SendBatch, ReceiveBatch,
// ReleaseBatch) handles; longer slices are cut to it.
const MaxBatch = shm.MaxBatch

// LoanBatch lends len(dst) buffers (at most MaxBatch) for messages of n bytes each, as that
// many Loans would, and returns the part of dst it filled: fewer than asked if the pools run
// short, and an error (wrapping ErrPoolExhausted or ErrTooLarge) only if it lent none. Each
// loan is sent (SendBatch or Send) or discarded on its own. It allocates nothing.
func (p *Publisher) LoanBatch(dst []Loan, n int) ([]Loan, error) {
	if len(dst) > MaxBatch {
		dst = dst[:MaxBatch]
	}
	if !p.b.enter() { // the use gate, as Loan
		return dst[:0], &Error{Op: "loan", Name: p.name, Err: ErrClosed}
	}
	defer p.b.exit()
	if p.ring != nil {
		return dst[:0], &Error{Op: "loan", Name: p.name, Err: errRingBatch}
	}
	if p.closed.Load() {
		return dst[:0], &Error{Op: "loan", Name: p.name, Err: ErrClosed}
	}
	// In place: a copy through a [MaxBatch]shm.Loan on the stack cost the batched stream's
	// publisher a tenth of its time (docs/performance.md, "Issue 15, sixth round").
	k, err := shm.LoanBatchInto(p.b.p, dst, n, loanOf)
	if err != nil {
		if !errors.Is(err, shm.ErrPoolExhausted) || !p.b.reapOnExhaustion() {
			return dst[:0], err
		}
		if k, err = shm.LoanBatchInto(p.b.p, dst, n, loanOf); err != nil {
			return dst[:0], err
		}
	}
	for i := range dst[:k] {
		dst[i].p, dst[i].n = p, n
	}
	return dst[:k], nil
}

// loanOf is where a Loan keeps its shm.Loan, for LoanBatchInto.
func loanOf(l *Loan) *shm.Loan { return &l.l }

// SendBatch sends loans (at most MaxBatch), in order, as that many Sends would: every
// subscriber receives them in this order, each with its own sequence number, and releases
// each on its own. It is cheaper per message than Send: the shared counters, the fault guard,
// the clock and each subscriber's queue position and wake-up are paid once per batch (per run
// of free queue cells) instead of once per message. The loans are consumed. It fails with
// ErrLoanEnded, delivering none of them, if one was already sent or discarded or belongs to
// another publisher. More than MaxBatch loans are refused whole: nothing is sent or ended, and
// the caller sends them in smaller batches. It allocates nothing.
//
// The writes to each loan's bytes happen before every subscriber's Receive of that message.
func (p *Publisher) SendBatch(ctx context.Context, loans []Loan) error {
	if len(loans) > MaxBatch {
		return &Error{Op: "send", Name: p.name, Err: errBatchTooLong}
	}
	if len(loans) == 0 {
		return nil
	}
	if p.ring != nil {
		return &Error{Op: "send", Name: p.name, Err: errRingBatch}
	}
	var tmp [MaxBatch]shm.Loan
	var lens [MaxBatch]int
	foreign := false
	for i := range loans {
		l := &loans[i] // (a copy per element cost as much as the send's shared operations)
		if l.p != p {
			foreign = true
		}
		tmp[i], lens[i] = l.l, l.n
	}
	// The send lock stands in for the gate (see Publisher.mu).
	p.mu.Lock()
	defer p.unlock()
	if p.b.closed.Load() {
		// The region is still mapped (Bus.Close takes the lock before it unmaps it), but
		// Detach ends the loans.
		return &Error{Op: "send", Name: p.name, Err: ErrClosed}
	}
	if foreign || p.closed.Load() {
		for i, l := range loans {
			if l.p == p {
				tmp[i].Discard()
			}
		}
		if foreign {
			return ErrLoanEnded
		}
		return &Error{Op: "send", Name: p.name, Err: ErrClosed}
	}
	if g := p.b.r.SubscriptionGen(); g != p.gen {
		p.refresh(g)
	}
	// The whole batch goes to one member of each queue group, so that it stays in order.
	res, err := p.topic.SendBatch(ctx, tmp[:len(loans)], lens[:len(loans)], p.sendTargets())
	if res.Closed > 0 {
		p.gen = ^uint64(0)
	}
	if err != nil {
		if errors.Is(err, ErrLoanEnded) {
			return err
		}
		return &Error{Op: "send", Name: p.name, Err: err}
	}
	return nil
}

var errBatchTooLong = errors.New("more than MaxBatch loans in one batch")

// ReceiveBatch receives up to len(dst) messages (at most MaxBatch) into dst and returns the
// part it filled: it waits as Receive does for the first, then takes those already queued
// without waiting. Each message is released on its own (Release or ReleaseBatch); its bytes
// stay valid until then. It fails, with Receive's errors, only if it received nothing. While
// messages are queued it makes no system call and allocates nothing.
//
// Each message received takes an entry of the process's held list (Config.Held entries, shared
// by all its subscriptions) until it is released, so a batch is no longer than the free entries:
// a region configured with fewer than MaxBatch entries per process caps every batch below
// MaxBatch (offq bench once measured "batch 64" rows whose subscribers took 4 at a time).
func (s *Subscription) ReceiveBatch(ctx context.Context, dst []Message) ([]Message, error) {
	if len(dst) > MaxBatch {
		dst = dst[:MaxBatch]
	}
	if len(dst) == 0 {
		return dst, nil
	}
	if s.dedupOn.Load() {
		// History is being handed over: one message at a time, deduplicated by Receive.
		m, err := s.Receive(ctx)
		if err != nil {
			return dst[:0], err
		}
		dst[0] = m
		return dst[:1], nil
	}
	if !s.b.enter() {
		return dst[:0], &Error{Op: "receive", Name: s.pattern, Err: ErrClosed}
	}
	defer s.b.exit()
	if s.closed.Load() {
		return dst[:0], &Error{Op: "receive", Name: s.pattern, Err: ErrClosed}
	}
	n, err := shm.TakeBatchInto(s.b.p, ctx, &s.in, s.w, dst, messageHeld)
	if err != nil {
		return dst[:0], s.receiveError(err)
	}
	for i := range dst[:n] {
		dst[i].s = s
	}
	return dst[:n], nil
}

// receiveError is Receive's translation of a take's error.
func (s *Subscription) receiveError(err error) error {
	switch {
	case errors.Is(err, shm.ErrClosed):
		if !s.closed.Load() && !s.b.closed.Load() {
			// Only the owner closes an inbox while it lives: the state word was scribbled.
			return &Error{Op: "receive", Name: s.pattern, Err: errQueueDamaged}
		}
		return &Error{Op: "receive", Name: s.pattern, Err: ErrClosed}
	case errors.Is(err, ErrCorrupt) || errors.Is(err, ErrHeldFull):
		return &Error{Op: "receive", Name: s.pattern, Err: err}
	}
	return err
}

// ReleaseBatch releases each of ms as Release does, counting the buffers freed once per size
// class and batch of MaxBatch instead of once per message. It releases every message it can
// and returns ErrReleased if one of them was released already; for messages of a Bus that is
// closed it touches none of them and returns Release's error (ErrReleased and ErrClosed). It
// allocates nothing.
func ReleaseBatch(ms []Message) error {
	var err error
	for len(ms) > 0 {
		// One call releases a run of messages of one Bus (zero Messages, which give
		// ErrReleased, go with any), under that Bus's use gate (see Message.Release).
		var s *Subscription
		k := 0
		for ; k < len(ms) && k < MaxBatch; k++ {
			if t := ms[k].s; t != nil {
				if s == nil {
					s = t
				} else if t.b != s.b {
					break
				}
			}
		}
		switch {
		case s == nil:
			err = ErrReleased // zero Messages only
		case !s.b.enter():
			err = &Error{Op: "release", Name: s.pattern, Err: errReleasedByClose}
		default:
			// In place: a zero Message has a zero Held, which gives ErrReleased.
			if shm.ReleaseBatchOf(ms[:k], messageHeld) != nil && err == nil {
				err = ErrReleased
			}
			s.b.exit()
		}
		ms = ms[k:]
	}
	return err
}

// messageHeld is where a Message keeps its Held, for the batched forms that fill and release
// messages in place (TakeBatchInto, ReleaseBatchOf) instead of through a copy on the stack.
func messageHeld(m *Message) *shm.Held { return &m.h }
