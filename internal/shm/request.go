package shm

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"time"
)

// Request/reply. A requester owns reply inboxes (kind 1: no pattern, so no publisher matches
// them). A request is an ordinary message whose slot header names a reply inbox (replyTo, its
// InboxID) and a correlation id (corr); Topic.Request sends it like Send. A responder that
// takes it answers with Participant.Reply: a loaned buffer pushed straight into the reply
// inbox by its InboxID, with the request's corr, through the normal push (so wakeConsumer
// wakes a sleeping requester). The requester's AwaitReply takes replies from its inbox and
// drops those whose corr is not the one it waits for (late replies to an earlier request that
// timed out, or second replies when several responders took the request).
//
// Every reference stays recorded as on the publish path: a request is a message in inboxes
// and held lists, a reply a message in the reply inbox and then in the requester's held list.
// A reply inbox is reaped with its owner like any inbox.
//
// The awaiting word of a reply inbox (inboxHeader.awaiting) is corr<<16 | responder+1: the
// requester stores corr<<16 before sending, and the first consumer to take the request fills
// in its participant index with a compare-and-swap (Take does it). A requester that waits
// longer than its spin checks, every few milliseconds, that the responder named there (or,
// before anyone took the request, the owner of some inbox it was delivered to) still lives,
// and fails with ErrResponderDied if not: a killed responder is noticed at once, not at the
// deadline.

// ErrResponderDied is returned by AwaitReply when every responder that could answer the
// request has died: the one that took it, or, before anyone took it, the owners of every
// inbox it was delivered to.
var ErrResponderDied = errors.New("responder died")

// ErrNotReplyInbox is returned by Reply when the reply address names an inbox that is open
// but is not a reply inbox: a scribbled or forged address. Nothing is delivered.
var ErrNotReplyInbox = errors.New("not a reply inbox")

// Request sends the loaned message on t to the inboxes in to, like Send, as a request whose
// replies go to the reply inbox replyTo with correlation id corr. It counts the request on
// the topic. It allocates nothing.
func (t Topic) Request(ctx context.Context, l Loan, n int, to []Inbox, replyTo InboxID, corr uint64) (res SendResult, err error) {
	res, err = t.send(ctx, l, n, to, replyTo, corr, 0)
	if err == nil {
		defer unguard(guard(), &err) // the counter is in the region: a cut file is an error, not SIGBUS
		t.e.requests.Add(1)
	}
	return res, err
}

// ReplyTo returns the reply address and correlation id of a request (0, 0 if the message is
// not a request). It reads the buffer's header, which the sender wrote before delivering it.
func (h *Held) ReplyTo() (_ InboxID, _ uint64) {
	if h.p == nil || h.idx < 0 {
		return 0, 0
	}
	defer unguard(guard(), nil) // a fault (the file cut under us) reads as no address
	return h.buf.address()
}

// Corr returns the correlation id carried by the message (a reply carries its request's).
func (h *Held) Corr() (_ uint64) {
	if h.p == nil || h.idx < 0 {
		return 0
	}
	defer unguard(guard(), nil) // a fault reads as no id
	_, corr := h.buf.address()
	return corr
}

// markAwaited records p as the responder that took the request for reply inbox to, corr
// (see the awaiting word). The first taker wins; a stale request (its reply inbox now waits
// for another corr, or is closed) changes nothing.
func (p *Participant) markAwaited(to InboxID, corr uint64) {
	idx := uint32(to) & 0xffff
	if idx >= uint32(len(p.r.inboxes)) {
		return
	}
	hd := p.r.inboxes[idx].hdr
	st := hd.state.Load()
	if wordStatus(st) != inboxOpen || wordGen(st) != uint64(to>>16)&inboxGenMask || hd.kind != kindReply {
		return
	}
	want := corr << 16
	if hd.awaiting.Load() == want {
		hd.awaiting.CompareAndSwap(want, want|uint64(p.owner&0xffff))
	}
}

// Reply sends the loaned message (n bytes) to the reply inbox to, with correlation id corr,
// counting a reply on topic topic (the request's), and ends the loan whatever the outcome. It
// looks up no topic: the reply goes straight to the inbox. It fails with an error wrapping
// ErrClosed if the requester's reply inbox is gone (the requester closed it or died),
// ErrNotReplyInbox if to names another kind of inbox, and what the push fails with (ErrFull).
// It allocates nothing.
func (p *Participant) Reply(ctx context.Context, l Loan, n int, to InboxID, corr uint64, topic uint32) (err error) {
	if l.p == nil {
		return ErrLoanEnded
	}
	defer unguard(guard(), &err)
	if !l.owned() {
		return l.notOwned()
	}
	in, err := p.r.inbox(to)
	if err == nil && in.v.hdr.kind != kindReply {
		err = ErrNotReplyInbox
	}
	if err != nil {
		l.end()
		return err
	}
	l.buf.SetMeta(Meta{Len: uint32(n), Topic: topic, Stamp: Now()})
	l.buf.setAddress(0, corr)
	perr := in.push(ctx, l.buf.h, l.buf.s, 0)
	if err := l.endOwned(); err != nil {
		return err
	}
	if perr != nil {
		return perr
	}
	if topic < p.r.cfg.Topics {
		e, _ := p.r.topicEntry(topic)
		e.replies.Add(1)
	}
	return nil
}

// OpenReplyInbox opens a reply inbox for p: capacity slots (a power of two), DropOldest, so
// that the newest reply always lands.
func (p *Participant) OpenReplyInbox(capacity int) (Inbox, error) {
	return p.OpenInbox(InboxConfig{Capacity: capacity, Overflow: DropOldest, Reply: true})
}

// Expect prepares reply inbox in for the request with correlation id corr: its awaiting word
// names corr and nobody yet. Call it before sending the request.
func (in *Inbox) Expect(corr uint64) (err error) {
	defer unguard(guard(), &err)
	in.v.hdr.awaiting.Store(corr << 16)
	return nil
}

// Awaited returns the participant index that took the request reply inbox in waits for
// (-1: nobody yet).
func (in *Inbox) Awaited() (_ int) {
	defer unguard(guard(), nil)
	return int(in.v.hdr.awaiting.Load()&0xffff) - 1
}

// ReplyCheck is called by AwaitReply every few milliseconds once it sleeps: a non-nil error
// (ErrResponderDied) ends the wait with it.
type ReplyCheck func() error

// AwaitReply takes from reply inbox in (owned by p) the reply with correlation id corr into
// p's held list, dropping replies with another corr, waiting as w says until it arrives, ctx
// is done (ctx.Err()) or check fails. Once it sleeps, it calls check at most every
// checkEvery (doubling up to 8 times that). While the reply arrives within the spin it makes
// no system call and allocates nothing.
func (p *Participant) AwaitReply(ctx context.Context, in *Inbox, w Waiter, corr uint64, check ReplyCheck, checkEvery time.Duration) (_ Held, err error) {
	defer unguard(guard(), &err)
	// A held entry is reserved only once a reply is there to take: requests waiting do not
	// occupy the held list.
	idx := -1
	var hw *atomic.Uint64
	fail := func(err error) (Held, error) {
		if idx >= 0 {
			p.unreserve(idx)
		}
		return Held{}, err
	}
	var spinUntil, yieldFrom time.Time
	spin := w.Spin
	if spin <= 0 {
		spin = DefaultSpin
	}
	if w.Strategy == Sleep {
		spin = 0
	}
	every := checkEvery
	for i := 1; ; i++ {
		// The spin reads the head and its cell; the tail (pending), which tells a hidden
		// message from none, only every tailEvery turns and before a sleep (see takeAs).
		if in.ready() || i&(tailEvery-1) == 0 && in.pending() {
			if idx < 0 {
				if idx, err = p.reserve(); err != nil {
					return Held{}, err
				}
				if hw, err = p.heldWord(idx); err != nil {
					return fail(err)
				}
			}
			h, ok, err := in.take(hw, uint64(idx))
			if err != nil {
				return fail(err)
			}
			if ok {
				buf, berr := p.r.buffer(h)
				if berr != nil {
					p.r.hdr.corrupt.Add(1)
					in.v.hdr.corrupt.Add(1)
					p.forget(idx) // the entry is reserved again
					continue
				}
				if _, c := buf.address(); c == corr {
					m := p.newHeld(idx, buf)
					in.noteAge(h, m.meta.Stamp)
					return m, nil
				}
				p.unhold(idx, h) // a late or second reply: dropped, and the entry with it
				idx = -1
				continue
			}
		}
		// Nothing yet: spin, then sleep in slices, checking the responder between them.
		if spin > 0 {
			if i&63 != 0 {
				continue
			}
			if err := ctx.Err(); err != nil {
				return fail(err)
			}
			if !in.isOpen() {
				return fail(ErrClosed)
			}
			now := time.Now()
			if spinUntil.IsZero() {
				spinUntil, yieldFrom = now.Add(spin), now.Add(min(spin/2, spinAlone))
			}
			if now.Before(spinUntil) {
				if w.Strategy == BusySpin {
					if i&(1<<14-1) == 0 {
						runtime.Gosched()
					}
				} else if now.After(yieldFrom) {
					osYield() // the responder may share this CPU (see Inbox.wait)
				}
				continue
			}
			if w.Strategy == BusySpin {
				// Never sleep: check the responder every checkEvery (doubling), then spin on.
				spinUntil = now.Add(every)
				every = min(2*every, 8*checkEvery)
				if check != nil {
					if err := check(); err != nil {
						return fail(err)
					}
				}
				continue
			}
		}
		// Sleep on p's doorbell (parked, or polling without a bell), waking at least every
		// `every` to check the responder.
		serr := p.sleep(ctx, time.Now().Add(every), waitMessage, in, waitRecord{})
		switch {
		case serr == ErrTimeout:
			if check != nil {
				if err := check(); err != nil {
					return fail(err)
				}
			}
			every = min(2*every, 8*checkEvery)
		case serr != nil:
			return fail(serr)
		case !in.isOpen():
			return fail(ErrClosed)
		}
	}
}

// InboxAlive reports whether inbox id is open and its owner's process is alive (the kernel's
// lock table says so). It makes a system call.
func (r *Region) InboxAlive(id InboxID) (_ bool) {
	defer unguard(guard(), nil)
	idx := uint32(id) & 0xffff
	if idx >= uint32(len(r.inboxes)) {
		return false
	}
	st := r.inboxes[idx].hdr.state.Load()
	if wordStatus(st) != inboxOpen || wordGen(st) != uint64(id>>16)&inboxGenMask {
		return false
	}
	owner := int(wordOwner(st)) - 1
	ok, err := r.Alive(owner)
	return ok || err != nil && owner >= 0 && owner < int(r.cfg.Participants)
}

// ParticipantAlive reports whether participant i's process is alive (an error reads as alive:
// only a proof of death ends a wait early).
func (r *Region) ParticipantAlive(i int) bool {
	ok, err := r.Alive(i)
	return ok || err != nil
}

// RequestEvent names a request counter of a topic entry.
type RequestEvent int

// Request counters.
const (
	RequestTimedOut RequestEvent = iota
	RequestNoResponders
	RequestResponderDied
)

// CountRequest counts a failed request of topic index topic.
func (r *Region) CountRequest(topic int, ev RequestEvent) {
	defer unguard(guard(), nil)
	if topic < 0 || topic >= int(r.cfg.Topics) {
		return
	}
	e, _ := r.topicEntry(uint32(topic))
	switch ev {
	case RequestTimedOut:
		e.reqTimeouts.Add(1)
	case RequestNoResponders:
		e.reqNoResp.Add(1)
	case RequestResponderDied:
		e.reqDied.Add(1)
	}
}

// RequestStats are a topic's request/reply counters.
type RequestStats struct {
	Requests, Replies, TimedOut, NoResponders, ResponderDied uint64
	// GroupDropped counts messages queued for a queue-group member that left (closed or
	// died) before taking them (queuegroup.go).
	GroupDropped uint64
}

func (e *topicEntry) requestStats() RequestStats {
	return RequestStats{
		Requests: shown(e.requests.Load()), Replies: shown(e.replies.Load()), TimedOut: shown(e.reqTimeouts.Load()),
		NoResponders: shown(e.reqNoResp.Load()), ResponderDied: shown(e.reqDied.Load()), GroupDropped: shown(e.groupDropped.Load()),
	}
}
