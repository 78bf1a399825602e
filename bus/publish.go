package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/offq/offq/internal/shm"
	"github.com/offq/offq/topics"
)

// Publisher publishes to one topic. It is safe for concurrent use by multiple goroutines;
// messages sent by one goroutine reach each subscriber in the order they were sent.
type Publisher struct {
	b     *Bus
	name  string
	topic shm.Topic

	mu      sync.Mutex
	gen     uint64
	targets []shm.Inbox
	scratch []shm.Subscription
	closed  atomic.Bool
	gate    gate
}

// Publisher returns a publisher for topic, a concrete topic name (no wildcards).
func (b *Bus) Publisher(topic string, opts ...PublisherOption) (*Publisher, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	var o pubOptions
	for _, opt := range opts {
		if err := opt.applyPub(&o); err != nil {
			return nil, fmt.Errorf("bus: publisher %q: %w", topic, err)
		}
	}
	if err := topics.ValidateName(topic); err != nil {
		return nil, fmt.Errorf("bus: publisher: %w", err)
	}
	t, err := b.topic(topic, o.history)
	if err != nil {
		return nil, fmt.Errorf("bus: publisher %q: %w", topic, err)
	}
	p := &Publisher{b: b, name: topic, topic: t, gen: ^uint64(0)}
	p.gate.closed = &b.closed
	b.mu.Lock()
	b.pubs[p] = struct{}{}
	b.mu.Unlock()
	return p, nil
}

// Topic returns the publisher's topic.
func (p *Publisher) Topic() string { return p.name }

// Loan is a buffer in shared memory lent to a publisher: write the message into Bytes, then
// Send it. A Loan that is not sent must be given back with Discard.
type Loan struct {
	p   *Publisher
	buf shm.Buffer
	n   int
}

// Loan lends a buffer for a message of n bytes from the smallest size class that has one free.
// It never blocks and allocates nothing. It fails with an error wrapping ErrTooLarge or
// ErrPoolExhausted (a *shm.PoolError naming the size and classes).
func (p *Publisher) Loan(n int) (Loan, error) {
	if !p.gate.enter() {
		return Loan{}, ErrClosed
	}
	defer p.gate.exit()
	if p.closed.Load() {
		return Loan{}, ErrClosed
	}
	buf, err := p.b.p.Alloc(n)
	if err != nil {
		if !errors.Is(err, shm.ErrPoolExhausted) || !p.b.reapOnExhaustion() {
			return Loan{}, err
		}
		if buf, err = p.b.p.Alloc(n); err != nil {
			return Loan{}, err
		}
	}
	return Loan{p: p, buf: buf, n: n}, nil
}

// Bytes returns the message's n bytes, in shared memory. Write the message here. Like
// Message.Data, it is a slice of the mapping: writing to it after another process truncated
// the region's file faults (SIGBUS), which the caller's own code is not guarded against
// (Publish copies under the guard).
func (l Loan) Bytes() []byte { return l.buf.Bytes()[:l.n] }

// Cap returns the size of the loaned buffer (its size class), at least the n asked for.
func (l Loan) Cap() int { return l.buf.Cap() }

// WithLen returns the loan with its message length set to n (at most Cap), for writers that
// learn the length as they write.
func (l Loan) WithLen(n int) Loan {
	l.n = max(0, min(n, l.buf.Cap()))
	return l
}

// Discard gives back a loan that will not be sent.
func (l Loan) Discard() error {
	if l.p == nil {
		return nil
	}
	if !l.p.gate.enter() {
		return ErrClosed // Bus.Close ended every loan of the process
	}
	defer l.p.gate.exit()
	return l.p.b.p.Unloan(l.buf.Handle())
}

// Send publishes the loaned message to every subscription whose pattern matches the topic,
// without copying it: each subscriber's queue receives the buffer's handle and a reference.
// The loan is consumed. A subscriber whose queue is full is handled by its overflow policy:
// DropOldest evicts its oldest message, DropNewest skips it, Block waits for room while ctx
// allows. Those drops are counted on the subscriber's side and do not make Send fail. Send
// fails with an error wrapping ErrCorrupt if it finds its own buffer's header scribbled on by
// another process. Send allocates nothing.
//
// The writes to the loan's bytes happen before every subscriber's Receive of the message.
func (p *Publisher) Send(ctx context.Context, l Loan) (err error) {
	// One fault guard for the whole send: the parts it is made of (meta, sequence, fan-out,
	// history) run under it and guard nothing themselves.
	defer shm.Unguard(shm.Guard(), &err)
	if l.p != p {
		return fmt.Errorf("bus: send on %q: loan belongs to another publisher", p.name)
	}
	h := l.buf.Handle()
	if !p.gate.enter() {
		return ErrClosed
	}
	defer p.gate.exit()
	if p.closed.Load() {
		p.b.p.Unloan(h)
		return ErrClosed
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if g := p.b.r.SubscriptionGen(); g != p.gen {
		if err := p.refresh(g); err != nil {
			p.b.p.Unloan(h)
			return fmt.Errorf("bus: send on %q: %w", p.name, err)
		}
	}
	l.buf.SetMeta(shm.Meta{
		Len:   uint32(l.n),
		Topic: uint32(p.topic.Index()),
		Seq:   p.topic.NextSeq(l.n),
		Stamp: shm.Now(),
	})
	// Each subscriber's reference is added by Deliver right before its queue's cell commits,
	// not all at once beforehand: a publisher killed half-way through (or blocked on a full
	// queue) holds no reference for a subscriber it has not reached, so a reaper has only the
	// loan to end and nothing leaks.
	stale := false
	for i := range p.targets {
		if testHookFanOut != nil {
			testHookFanOut(i)
		}
		if err := p.targets[i].DeliverBuffer(ctx, l.buf); err != nil {
			if errors.Is(err, shm.ErrBadHandle) {
				// Our own buffer's state word is not what we allocated: scribbled.
				p.b.p.Unloan(h)
				return fmt.Errorf("bus: send on %q: %w: %w", p.name, ErrCorrupt, err)
			}
			if errors.Is(err, shm.ErrClosed) {
				stale = true
			}
		}
	}
	if p.topic.HistoryDepth() > 0 && p.b.r.AddRefs(h, 1) == nil {
		p.topic.Remember(h)
	}
	if stale {
		p.gen = ^uint64(0)
	}
	if err := p.b.p.Unloan(h); err != nil {
		// The loan was ours until now: its state word was scribbled.
		return fmt.Errorf("bus: send on %q: %w: %w", p.name, ErrCorrupt, err)
	}
	return nil
}

// testHookFanOut, if set, runs before each push of a fan-out: a test stops a publisher there
// to kill it in the middle of a fan-out.
var testHookFanOut func(target int)

// Publish copies data into a loaned buffer and sends it: the convenience form of Loan and
// Send, for data that already exists in the process's memory. The copy runs under the fault
// guard: if the region's file was truncated under the buffer, Publish fails with an error
// wrapping ErrCorrupt.
func (p *Publisher) Publish(ctx context.Context, data []byte) error {
	l, err := p.Loan(len(data))
	if err != nil {
		return fmt.Errorf("bus: publish on %q: %w", p.name, err)
	}
	if _, err := shm.Copy(l.Bytes(), data); err != nil {
		l.Discard()
		return fmt.Errorf("bus: publish on %q: %w", p.name, err)
	}
	return p.Send(ctx, l)
}

// refresh rebuilds the list of inboxes whose pattern matches the topic. It runs when the
// region's subscription generation has moved, which every subscribe and unsubscribe does.
func (p *Publisher) refresh(gen uint64) (err error) {
	if p.scratch, err = p.b.r.Subscriptions(p.scratch[:0]); err != nil {
		return err
	}
	p.targets = p.targets[:0]
	for _, s := range p.scratch {
		if topics.ValidatePattern(s.Pattern) != nil || !topics.Match(s.Pattern, p.name) {
			continue
		}
		in, err := p.b.r.Inbox(s.ID)
		if err != nil {
			continue
		}
		p.targets = append(p.targets, in)
	}
	p.gen = gen
	return nil
}

// Subscribers returns how many subscriptions the publisher delivered to at its last Send.
func (p *Publisher) Subscribers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.targets)
}

// Close closes the publisher. Close is idempotent.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	p.b.mu.Lock()
	delete(p.b.pubs, p)
	p.b.mu.Unlock()
	return nil
}
