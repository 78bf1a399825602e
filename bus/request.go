package bus

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/offq/offq/codec"
	"github.com/offq/offq/internal/shm"
)

// Request/reply: see the package documentation, "Request and reply".

// MaxInFlight is how many requests one Bus may have waiting for replies at once: each has a
// reply inbox of its own, opened on first need and kept for the Bus's life.
const MaxInFlight = 64

// replyInboxDepth is the capacity of a reply inbox (DropOldest: the newest reply lands).
const replyInboxDepth = 4

// checkEvery is how often a sleeping requester checks that its responder lives (doubling up
// to 8 times that while it waits).
const checkEvery = 2 * time.Millisecond

// maxTracked is how many of a request's targets a requester remembers to check for liveness;
// a request delivered to more is not failed early before one of them takes it.
const maxTracked = 8

// replySlot is one reply inbox of the Bus and what its current request needs.
type replySlot struct {
	busy    atomic.Bool
	waiting atomic.Uint64 // the corr of the request sent and not yet waited for: Wait claims it once
	b       *Bus
	in      shm.Inbox
	sub     *Subscription // the Subscription a reply Message names (for Data, Topic, ...)
	corr    uint64
	targets [maxTracked]shm.InboxID
	n       int
	more    bool
	check   shm.ReplyCheck
}

// alive fails with ErrResponderDied when the responder that took the request died, or, if
// nobody took it yet, when every tracked target's owner died.
func (s *replySlot) alive() error {
	if a := s.in.Awaited(); a >= 0 {
		if s.b.r.ParticipantAlive(a) {
			return nil
		}
		return ErrResponderDied
	}
	if s.more {
		return nil
	}
	for _, id := range s.targets[:s.n] {
		if s.b.r.InboxAlive(id) {
			return nil
		}
	}
	return ErrResponderDied
}

// replyPool is the Bus's reply inboxes. Acquiring a free one is a scan with one
// compare-and-swap on its busy flag; the mutex is taken only to open another inbox (when
// more requests are in flight than ever before, up to MaxInFlight) and at Close.
type replyPool struct {
	mu     sync.Mutex // opening and closing
	slots  [MaxInFlight]atomic.Pointer[replySlot]
	n      atomic.Int32
	closed bool
}

func (b *Bus) acquireReply() (*replySlot, error) {
	pool := &b.replies
	n := int(pool.n.Load())
	for i := range n {
		if s := pool.slots[i].Load(); !s.busy.Load() && s.busy.CompareAndSwap(false, true) {
			return s, nil
		}
	}
	pool.mu.Lock()
	defer pool.mu.Unlock()
	if pool.closed {
		return nil, ErrClosed
	}
	n = int(pool.n.Load())
	if n == MaxInFlight {
		for i := range n { // one may have come free meanwhile
			if s := pool.slots[i].Load(); !s.busy.Load() && s.busy.CompareAndSwap(false, true) {
				return s, nil
			}
		}
		return nil, ErrTooManyRequests
	}
	depth := min(replyInboxDepth, int(b.r.Config().InboxCapacity))
	in, err := b.p.OpenReplyInbox(depth)
	if err != nil {
		return nil, err
	}
	s := &replySlot{b: b, in: in}
	s.sub = &Subscription{b: b, in: in}
	s.check = s.alive
	s.busy.Store(true)
	pool.slots[n].Store(s)
	pool.n.Store(int32(n + 1))
	return s, nil
}

// closeReplies closes every reply inbox, waking requests that wait (Bus.Close).
func (b *Bus) closeReplies() {
	pool := &b.replies
	pool.mu.Lock()
	defer pool.mu.Unlock()
	pool.closed = true
	for i := range int(pool.n.Load()) {
		s := pool.slots[i].Load()
		b.p.CloseInbox(&s.in)
	}
}

// Request sends data on the publisher's topic as a request and returns the first reply: the
// copying form of RequestLoan.
func (p *Publisher) Request(ctx context.Context, data []byte) (Message, error) {
	l, err := p.Loan(len(data))
	if err != nil {
		return Message{}, err // Loan's error names the topic already
	}
	if err := l.l.Write(data); err != nil {
		l.Discard()
		return Message{}, &Error{Op: "request", Name: p.name, Err: err}
	}
	return p.RequestLoan(ctx, l)
}

// RequestLoan sends the loaned message as a request, without copying it, to every
// subscription whose pattern matches the topic (one member of each queue group), and waits
// for the first reply, which it returns: a Message in shared memory, valid until Release, like
// a received one (its Topic is the request's). The loan is consumed.
//
// It fails with ErrNoResponders at once if no subscription matches the topic; with ErrTimeout
// (which matches context.DeadlineExceeded) when ctx's deadline passes first, and ctx.Err()
// when ctx is cancelled; with ErrResponderDied, within milliseconds, when the responder's
// process dies before replying; with ErrTooManyRequests when MaxInFlight requests of the Bus
// wait already; with ErrClosed when the Bus closes meanwhile (also when the responder was one
// of its own subscriptions, which the close ended). Replies that come after their request gave
// up are dropped. Many goroutines
// may request at once, each with a reply inbox of its own: replies are matched to requests
// by inbox and correlation id, without locks. A request whose reply comes within the
// requester's spin (about 50 µs) makes no system call and allocates nothing.
func (p *Publisher) RequestLoan(ctx context.Context, l Loan) (Message, error) {
	pr, err := p.SendRequest(ctx, l)
	if err != nil {
		return Message{}, err
	}
	return pr.Wait(ctx)
}

// PendingRequest is a request sent by SendRequest whose reply has not been taken yet. Call
// Wait exactly once: it returns the reply and gives the request's reply inbox back to the
// Bus (a PendingRequest never waited for keeps its reply inbox, one of MaxInFlight).
type PendingRequest struct {
	p    *Publisher
	s    *replySlot
	corr uint64
}

// SendRequest sends the loaned message as a request, like RequestLoan, and returns at once,
// without waiting for the reply: call Wait on the result. It fails as RequestLoan does before
// the wait (ErrNoResponders, ErrTooManyRequests, ErrClosed). The loan is consumed. It
// allocates nothing.
func (p *Publisher) SendRequest(ctx context.Context, l Loan) (PendingRequest, error) {
	if l.p != p {
		if l.p == nil {
			return PendingRequest{}, ErrLoanEnded
		}
		return PendingRequest{}, &Error{Op: "request", Name: p.name, Err: errors.New("loan belongs to another publisher")}
	}
	if !p.gate.enter() {
		return PendingRequest{}, &Error{Op: "request", Name: p.name, Err: ErrClosed}
	}
	defer p.gate.exit()
	if l.l.FromRing() {
		l.l.Discard()
		return PendingRequest{}, &Error{Op: "request", Name: p.name, Err: errRingRequest}
	}
	if p.closed.Load() {
		l.l.Discard()
		return PendingRequest{}, &Error{Op: "request", Name: p.name, Err: ErrClosed}
	}
	s, err := p.b.acquireReply()
	if err != nil {
		l.l.Discard()
		return PendingRequest{}, &Error{Op: "request", Name: p.name, Err: err}
	}
	s.corr++
	corr := s.corr
	s.in.Expect(corr)
	p.mu.Lock()
	if g := p.b.r.SubscriptionGen(); g != p.gen {
		p.refresh(g)
	}
	to := p.sendTargets()
	if len(to) == 0 {
		p.unlock()
		l.l.Discard()
		s.busy.Store(false)
		p.b.r.CountRequest(p.topic.Index(), shm.RequestNoResponders)
		return PendingRequest{}, &Error{Op: "request", Name: p.name, Err: ErrNoResponders}
	}
	s.more = len(to) > maxTracked
	for i := range min(len(to), maxTracked) {
		s.targets[i] = to[i].ID()
	}
	s.n = min(len(to), maxTracked)
	res, err := p.topic.Request(ctx, l.l, l.n, to, s.in.ID(), corr)
	if res.Closed > 0 {
		p.gen = ^uint64(0)
	}
	all := res.Closed == len(to)
	p.unlock()
	if err != nil {
		s.busy.Store(false)
		if errors.Is(err, ErrLoanEnded) {
			return PendingRequest{}, err
		}
		return PendingRequest{}, &Error{Op: "request", Name: p.name, Err: err}
	}
	if all {
		s.busy.Store(false)
		p.b.r.CountRequest(p.topic.Index(), shm.RequestNoResponders)
		return PendingRequest{}, &Error{Op: "request", Name: p.name, Err: ErrNoResponders}
	}
	s.waiting.Store(corr)
	return PendingRequest{p: p, s: s, corr: corr}, nil
}

// Wait waits for the reply of a request sent by SendRequest (see RequestLoan for the reply
// and the errors). Call it once; a second call fails with ErrClosed.
func (pr PendingRequest) Wait(ctx context.Context) (Message, error) {
	p, s := pr.p, pr.s
	// Claim the request in one step: a second Wait, or one racing a later SendRequest that
	// reused the slot, finds another value and fails, and never frees a slot it does not hold.
	if p == nil || s == nil || pr.corr == 0 || !s.waiting.CompareAndSwap(pr.corr, 0) {
		return Message{}, &Error{Op: "request", Err: ErrClosed}
	}
	defer s.busy.Store(false)
	if !p.gate.enter() {
		return Message{}, &Error{Op: "request", Name: p.name, Err: ErrClosed}
	}
	defer p.gate.exit()
	h, err := p.b.p.AwaitReply(ctx, &s.in, p.b.reqWait, pr.corr, s.check, checkEvery)
	if err != nil {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			p.b.r.CountRequest(p.topic.Index(), shm.RequestTimedOut)
			return Message{}, &Error{Op: "request", Name: p.name, Err: ErrTimeout}
		case errors.Is(err, ErrResponderDied) && p.b.closed.Load():
			// Bus.Close closes this Bus's own subscriptions before it wakes the requests: a
			// responder gone with them went with the close, which is what the request reports.
			return Message{}, &Error{Op: "request", Name: p.name, Err: ErrClosed}
		case errors.Is(err, ErrResponderDied):
			p.b.r.CountRequest(p.topic.Index(), shm.RequestResponderDied)
			return Message{}, &Error{Op: "request", Name: p.name, Err: ErrResponderDied}
		case errors.Is(err, shm.ErrClosed):
			return Message{}, &Error{Op: "request", Name: p.name, Err: ErrClosed}
		case errors.Is(err, context.Canceled):
			return Message{}, err
		}
		return Message{}, &Error{Op: "request", Name: p.name, Err: err}
	}
	if h.HasPrefix(ErrorReplyPrefix) {
		// An error reply: the responder could not send the reply it meant to.
		err := parseErrorReply(h)
		h.Release()
		return Message{}, &Error{Op: "request", Name: p.name, Err: err}
	}
	return Message{s: s.sub, h: h}, nil
}

// Error replies. A reply is bytes and nothing else: it has no status. A responder that cannot
// send the reply it means to (larger than the bus's largest buffer, no buffer free, a remote
// answer a bridge cannot carry) would otherwise send nothing, and its requester would wait for
// its whole timeout. It answers with an error reply instead (RespondError): the bytes of
// ErrorReplyPrefix followed by the reason in UTF-8, at most MaxErrorReason bytes. A request
// whose reply is one fails at once with a *ResponderError. An ordinary reply that begins with
// those twelve bytes is read as an error reply too: a NUL byte, "offq-error" and a NUL byte do
// not begin a reply by accident.

// ErrorReplyPrefix begins an error reply.
const ErrorReplyPrefix = "\x00offq-error\x00"

// MaxErrorReason is the most bytes of reason an error reply carries.
const MaxErrorReason = 200

// ResponderError is the error of a request whose responder answered with an error reply
// (RespondError): it could not send the reply it meant to.
type ResponderError struct {
	Reason string // the responder's reason, printable characters only
}

func (e *ResponderError) Error() string { return "responder failed: " + e.Reason }

// ErrorReply returns the error reply carrying reason, cut (at a character boundary) to
// MaxErrorReason bytes and to limit bytes in all (a bus's largest buffer). RespondError sends
// one; a bridge forwards one it received, as bytes, to the other side.
func ErrorReply(reason string, limit int) []byte {
	n := min(MaxErrorReason, max(0, limit-len(ErrorReplyPrefix)))
	if len(reason) > n {
		for n > 0 && !utf8.RuneStart(reason[n]) {
			n--
		}
		reason = reason[:n]
	}
	return append([]byte(ErrorReplyPrefix), reason...)
}

// parseErrorReply returns the error the error reply h carries. The reason comes from another
// process: it is cut to MaxErrorReason bytes and its unprintable characters (terminal escapes,
// newlines) are replaced.
func parseErrorReply(h shm.Held) error {
	var reason string
	h.Read(func(data []byte) error {
		data = data[len(ErrorReplyPrefix):]
		reason = string(data[:min(len(data), MaxErrorReason)])
		return nil
	})
	return &ResponderError{Reason: strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, reason)}
}

// RespondError answers the request at a with an error reply carrying reason (see
// ResponderError): its requester fails at once instead of waiting for its timeout.
func (a ReplyAddress) RespondError(ctx context.Context, reason string) error {
	if a.b == nil {
		return ErrNotRequest
	}
	return a.Respond(ctx, ErrorReply(reason, a.b.MaxMessageSize()))
}

// RespondError answers the request m with an error reply carrying reason (see
// ReplyAddress.RespondError).
func (m Message) RespondError(ctx context.Context, reason string) error {
	a, err := m.ReplyAddress()
	if err != nil {
		return err
	}
	return a.RespondError(ctx, reason)
}

// IsRequest reports whether the message is a request (sent by Request): one to answer with
// Respond or RespondLoan.
func (m Message) IsRequest() bool {
	if m.s == nil {
		return false
	}
	to, _ := m.h.ReplyTo()
	return to != 0
}

// ReplyLoan is a buffer in shared memory lent to a responder for its reply: write the reply
// into Bytes, then Send it (or Discard it). It names the requester's reply inbox, so it
// stays usable after the request is released.
type ReplyLoan struct {
	b     *Bus
	l     shm.Loan
	n     int
	to    shm.InboxID
	corr  uint64
	topic uint32
}

// ReplyAddress is where the reply to a request goes: the requester's reply inbox and the
// request's correlation id. It stays valid after the request is released, so a responder
// can release the request early and reply later (a bridge does, when the answer comes from
// another host).
type ReplyAddress struct {
	b     *Bus
	to    shm.InboxID
	corr  uint64
	topic uint32
}

// ReplyAddress returns the reply address of the request m. It fails with ErrNotRequest if m
// is not a request.
func (m Message) ReplyAddress() (ReplyAddress, error) {
	if m.s == nil {
		return ReplyAddress{}, ErrReleased
	}
	to, corr := m.h.ReplyTo()
	if to == 0 {
		return ReplyAddress{}, &Error{Op: "respond", Name: m.Topic(), Err: ErrNotRequest}
	}
	return ReplyAddress{b: m.s.b, to: to, corr: corr, topic: m.h.Meta().Topic}, nil
}

// ReplyLoan lends a buffer of n bytes for the reply to the request m. It fails with
// ErrNotRequest if m is not a request; otherwise as Publisher.Loan. It allocates nothing.
func (m Message) ReplyLoan(n int) (ReplyLoan, error) {
	a, err := m.ReplyAddress()
	if err != nil {
		return ReplyLoan{}, err
	}
	return a.Loan(n)
}

// Respond replies with a copy of data (see Message.Respond).
func (a ReplyAddress) Respond(ctx context.Context, data []byte) error {
	r, err := a.Loan(len(data))
	if err != nil {
		return err
	}
	if err := r.l.Write(data); err != nil {
		r.l.Discard()
		return err
	}
	return r.Send(ctx)
}

// Loan lends a buffer of n bytes for the reply (see Message.ReplyLoan).
func (a ReplyAddress) Loan(n int) (ReplyLoan, error) {
	b := a.b
	if b == nil {
		return ReplyLoan{}, ErrNotRequest
	}
	to, corr := a.to, a.corr
	if !b.enter() {
		return ReplyLoan{}, b.closedError("respond", b.topicName(a.topic))
	}
	defer b.exit()
	l, err := b.p.Loan(n)
	if err != nil {
		if !errors.Is(err, shm.ErrPoolExhausted) || !b.reapOnExhaustion() {
			return ReplyLoan{}, err
		}
		if l, err = b.p.Loan(n); err != nil {
			return ReplyLoan{}, err
		}
	}
	return ReplyLoan{b: b, l: l, n: n, to: to, corr: corr, topic: a.topic}, nil
}

// Bytes returns the reply's n bytes, in shared memory. Write the reply here.
func (r ReplyLoan) Bytes() []byte { return r.l.Prefix(r.n) }

// Cap returns the size of the loaned buffer (its size class).
func (r ReplyLoan) Cap() int { return r.l.Cap() }

// WithLen returns the loan with its reply length set to n (at most Cap).
func (r ReplyLoan) WithLen(n int) ReplyLoan {
	r.n = max(0, min(n, r.l.Cap()))
	return r
}

// Discard gives back a reply loan that will not be sent.
func (r ReplyLoan) Discard() error {
	if r.b == nil {
		return ErrLoanEnded
	}
	if !r.b.enter() {
		return ErrLoanEnded // Bus.Close ended the loan
	}
	defer r.b.exit()
	return r.l.Discard()
}

// Send sends the reply into the requester's reply inbox, without copying it and without
// looking up a topic. The loan is consumed. It fails with ErrRequesterGone if the requester
// is gone (its reply inbox closed), ErrLoanEnded for a loan already sent or discarded. A
// reply to a request that already gave up (timed out) is delivered and dropped by the
// requester. It allocates nothing.
func (r ReplyLoan) Send(ctx context.Context) error {
	if r.b == nil {
		return ErrLoanEnded
	}
	if !r.b.enter() {
		return &Error{Op: "respond", Name: r.b.topicName(r.topic), Err: ErrClosed} // Close ended the loan
	}
	err := r.b.p.Reply(ctx, r.l, r.n, r.to, r.corr, r.topic)
	r.b.exit()
	switch {
	case err == nil:
		return nil
	case r.b.closed.Load():
		return &Error{Op: "respond", Name: r.b.topicName(r.topic), Err: ErrClosed} // Close ended the loan
	case errors.Is(err, shm.ErrLoanEnded):
		return err
	case errors.Is(err, shm.ErrClosed):
		return &Error{Op: "respond", Name: r.b.topicName(r.topic), Err: ErrRequesterGone}
	}
	return &Error{Op: "respond", Name: r.b.topicName(r.topic), Err: err}
}

// Respond replies to the request m with a copy of data: the copying form of ReplyLoan and
// Send. Call it before releasing m.
func (m Message) Respond(ctx context.Context, data []byte) error {
	r, err := m.ReplyLoan(len(data))
	if err != nil {
		return err
	}
	if err := r.l.Write(data); err != nil {
		r.l.Discard()
		return err
	}
	return r.Send(ctx)
}

// Respond replies to the request m with *v encoded by c, written straight into the reply's
// loaned buffer (the typed form of Message.Respond). It loans what c.SizeHint says, or the
// smallest class first and then larger ones while the encoding does not fit.
func Respond[R any](ctx context.Context, m Message, c codec.Codec[R], v *R) error {
	n := max(1, c.SizeHint(v))
	for {
		r, err := m.ReplyLoan(n)
		if err != nil {
			return err
		}
		var k int
		err = r.l.Fill(func(buf []byte) (err error) {
			k, err = c.Encode(buf, v)
			return err
		})
		if err == nil {
			return r.WithLen(k).Send(ctx)
		}
		r.Discard()
		if !errors.Is(err, codec.ErrShortBuffer) || r.Cap() >= largestClass(m.s.b) {
			return &Error{Op: "respond", Name: m.Topic(), Err: err}
		}
		n = r.Cap() + 1
	}
}

// DecodeReply decodes the reply m (from Request) into v with c (see TypedMessage.Decode).
func DecodeReply[R any](m Message, c codec.Codec[R], v *R) error {
	if m.s == nil {
		return ErrReleased
	}
	return m.h.Read(func(data []byte) error { return c.Decode(data, v) })
}
