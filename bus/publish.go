package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/offq/offq/internal/shm"
	"github.com/offq/offq/topics"
)

// Publisher publishes to one topic. It is safe for concurrent use by multiple goroutines;
// messages sent by one goroutine reach each subscriber in the order they were sent.
type Publisher struct {
	b     *Bus
	name  string
	topic shm.Topic

	// mu is the send lock: it serialises the publisher's sends (Send, SendBatch, the sending
	// part of Publish and SendRequest) and guards the target list below. A send holds it
	// instead of entering the gate: Bus.Close takes it (after setting its closed flag) before
	// it unmaps the region, and Publisher.Close lends the gate a reference for it that the
	// first to find it free after the close gives back (settleLock). Release it with unlock.
	mu      sync.Mutex
	gen     uint64
	targets []shm.Inbox // plain subscriptions
	groups  []qgroup    // queue groups (queuegroup.go)
	scratch []shm.Inbox // a send's targets when there are groups
	closed  atomic.Bool
	// gate is passed by Request's calls (SendRequest, Wait), which count their outcome on the
	// topic: its last call lets the topic go after Close (letGo). Loan, Publish and the others
	// pass the Bus's use gate, sends hold mu.
	gate gate
	// lockOwed is set by Close while the gate holds the send lock's reference (see mu).
	lockOwed atomic.Bool
	// unpinned is set by letGo: the topic's pin is given back once.
	unpinned atomic.Bool

	// ring is the publisher's slot ring (WithSlotRing), or nil; ringTargets are the inboxes
	// that read it (their consumers are woken after each message instead of sent it), split
	// off the target list by refresh. For a ring publisher, refresh runs only in fanRing,
	// under the ring's loan token as well as the send lock, so the token's holder reads the
	// list without the lock (commitRing).
	ring        *shm.SlotRing
	ringTargets []shm.Inbox
	// noCopies is gen<<1|1 while the target list, as of subscription generation gen, has no
	// subscriber that is sent copies of the ring's messages, and 0 otherwise (refresh): a
	// ring's Send reads it without the send lock, to borrow the copies' buffer before it
	// commits the message to the ring only when it may need one, and to send with no lock at
	// all when it needs none.
	noCopies atomic.Uint64
}

// Publisher returns a publisher for topic, a concrete topic name (no wildcards).
func (b *Bus) Publisher(topic string, opts ...PublisherOption) (*Publisher, error) {
	if !b.enter() {
		return nil, &Error{Op: "publisher", Name: topic, Err: ErrClosed}
	}
	defer b.exit()
	o := defaultPubOptions()
	for _, opt := range opts {
		if err := opt.applyPub(&o); err != nil {
			return nil, &Error{Op: "publisher", Name: topic, Err: err}
		}
	}
	if err := o.check(); err != nil {
		// Before the topic is touched: a refused call must not leave the topic created with
		// the history it asked for.
		return nil, &Error{Op: "publisher", Name: topic, Err: err}
	}
	if err := topics.ValidateName(topic); err != nil {
		return nil, &Error{Op: "publisher", Name: "", Err: err}
	}
	t, err := b.pinnedTopic(topic, o.history) // pinned for the publisher's life
	if err != nil {
		return nil, &Error{Op: "publisher", Name: topic, Err: err}
	}
	p := &Publisher{b: b, name: topic, topic: t, gen: ^uint64(0)}
	if o.ringSlots > 0 {
		if err := p.makeRing(o); err != nil {
			b.p.UnpinTopic(t)
			return nil, &Error{Op: "publisher", Name: topic, Err: err}
		}
	}
	p.gate.closed = &b.closed
	p.gate.idle = p.letGo
	b.mu.Lock()
	b.pubs[p] = struct{}{}
	b.mu.Unlock()
	return p, nil
}

// Topic returns the publisher's topic.
func (p *Publisher) Topic() string { return p.name }

// Published returns the topic's last sequence number: how many messages were published on it,
// by every publisher in every process (0 once the Bus is closed).
func (p *Publisher) Published() uint64 {
	if !p.b.enter() {
		return 0
	}
	defer p.b.exit()
	return p.topic.Published()
}

// HistoryDepth returns how many of the topic's last messages it keeps for subscribers that
// join later. The first publisher of the topic on the bus fixed it (WithHistory); a later
// WithHistory of another depth does not change it, and this is how a program can tell.
func (p *Publisher) HistoryDepth() int { return p.topic.HistoryDepth() }

// Codec returns the codec name and type fingerprint recorded on the topic ("" and 0 if none).
func (p *Publisher) Codec() (name string, fingerprint uint64) {
	if !p.b.enter() {
		return "", 0
	}
	defer p.b.exit()
	fp, c := p.topic.Fingerprint()
	return c, fp
}

// ClaimCodec records codec name, fingerprint and typeName (the Go type's name, "" if unknown)
// on the topic if nothing is recorded yet, as a typed publisher does (see NewPublisher), and
// fails with an error wrapping ErrTypeMismatch if another codec or type is. For a program
// that moves encoded messages without decoding them (package bridge).
func (p *Publisher) ClaimCodec(name string, fingerprint uint64, typeName string) error {
	if fingerprint == 0 {
		return nil
	}
	if !p.b.enter() {
		return p.b.closedError("claim codec", p.name)
	}
	defer p.b.exit()
	ok, err := p.topic.SetFingerprint(fingerprint, name, typeName)
	if err != nil {
		return &Error{Op: "claim codec", Name: p.name, Err: err}
	}
	if ok {
		return nil
	}
	have, haveCodec := p.topic.Fingerprint()
	return &Error{Op: "claim codec", Name: p.name, Err: fmt.Errorf("%w: topic carries codec %q, type %s, fingerprint %#016x; this is codec %q, type %s, fingerprint %#016x",
		ErrTypeMismatch, haveCodec, recordedType(p.topic.TypeName()), have, name, recordedType(typeName), fingerprint)}
}

// TypeName returns the name of the Go type recorded on the topic with its codec ("" if none).
func (p *Publisher) TypeName() string {
	if !p.b.enter() {
		return ""
	}
	defer p.b.exit()
	return p.topic.TypeName()
}

// Loan is a buffer in shared memory lent to a publisher: write the message into Bytes, then
// Send it. A Loan that is not sent must be given back with Discard. Sending or discarding a
// loan twice fails with ErrLoanEnded.
type Loan struct {
	p *Publisher
	l shm.Loan
	n int
}

// Loan lends a buffer for a message of n bytes from the smallest size class that has one free.
// It never blocks and allocates nothing. It fails with an error wrapping ErrTooLarge or
// ErrPoolExhausted (a *PoolError naming the size and classes).
func (p *Publisher) Loan(n int) (l Loan, err error) {
	if p.ring != nil {
		// A slot ring's loan is its staging buffer, in the process's memory: it touches no
		// shared memory, so it needs no gate (Bus.Close retires the ring, which then lends
		// nothing; a loan that meets the retirement finishes it inside the gate: ringLoanFailed).
		// Filled in place, in the result: each level that returns a Loan, which the register
		// ABI cannot carry, copies it through the stack (through loan and loanRing it cost 15
		// ns a cycle, through loanRing alone 10: BenchmarkPublishReceiveRing).
		if p.closed.Load() {
			return Loan{}, &Error{Op: "loan", Name: p.name, Err: ErrClosed}
		}
		if err := p.ring.LoanInto(n, &l.l); err != nil {
			return Loan{}, p.ringLoanFailed(n, err)
		}
		l.p, l.n = p, n
		return l, nil
	}
	// The Bus's use gate, not the publisher's: a loan touches the pools, not the topic, so
	// Publisher.Close need not wait for it before it lets the topic go, and the use gate costs
	// no locked instruction (shm.UseGate).
	if !p.b.enter() {
		return Loan{}, &Error{Op: "loan", Name: p.name, Err: ErrClosed}
	}
	defer p.b.exit()
	if testHookInUse != nil {
		testHookInUse("loan")
	}
	return p.loan(n)
}

// loan is Loan inside a gate (the Bus's use gate, or the publisher's), which the caller has
// entered.
func (p *Publisher) loan(n int) (Loan, error) {
	if p.closed.Load() {
		return Loan{}, &Error{Op: "loan", Name: p.name, Err: ErrClosed}
	}
	if p.ring != nil {
		return p.loanRing(n)
	}
	l, err := p.b.p.Loan(n)
	if err != nil {
		if !errors.Is(err, shm.ErrPoolExhausted) || !p.b.reapOnExhaustion() {
			return Loan{}, err
		}
		if l, err = p.b.p.Loan(n); err != nil {
			return Loan{}, err
		}
	}
	return Loan{p: p, l: l, n: n}, nil
}

// Bytes returns the message's n bytes, in shared memory. Write the message here.
func (l Loan) Bytes() []byte { return l.l.Prefix(l.n) }

// Cap returns the size of the loaned buffer (its size class), at least the n asked for.
func (l Loan) Cap() int { return l.l.Cap() }

// WithLen returns the loan with its message length set to n (at most Cap), for writers that
// learn the length as they write.
func (l Loan) WithLen(n int) Loan {
	l.n = max(0, min(n, l.l.Cap()))
	return l
}

// WithTime returns the loan with its publish time set to t: Send stamps the message with t
// instead of the moment of sending, so that subscribers' Message.Time and Age measure from t.
// It is for programs that forward messages published elsewhere, such as bridges, which pass
// the origin's publish time. The zero time means the moment of sending (the default).
func (l Loan) WithTime(t time.Time) Loan {
	l.l = l.l.WithStamp(shm.Stamp(t))
	return l
}

// Write copies data to the start of the loan's buffer, guarded against memory faults (a
// region file truncated under the buffer gives an error wrapping ErrCorrupt, not SIGBUS). It
// fails with ErrTooLarge if data does not fit in Cap bytes; it does not change the length.
func (l Loan) Write(data []byte) error {
	if l.p == nil {
		return ErrLoanEnded
	}
	return l.l.Write(data)
}

// Discard gives back a loan that will not be sent. It fails with ErrLoanEnded if the loan was
// already sent or discarded.
func (l Loan) Discard() error {
	if l.p == nil {
		return ErrLoanEnded
	}
	if !l.p.b.enter() {
		return ErrClosed // Bus.Close ended every loan of the process
	}
	defer l.p.b.exit()
	return l.l.Discard()
}

// Send publishes the loaned message to every subscription whose pattern matches the topic,
// without copying it: each subscriber's queue receives the buffer's handle and a reference.
// The loan is consumed. A subscriber whose queue is full is handled by its overflow policy:
// DropOldest evicts its oldest message, DropNewest skips it, Block waits for room while ctx
// allows. Those drops are counted on the subscriber's side and do not make Send fail. Send
// fails with ErrLoanEnded for a loan already sent or discarded, and with an error wrapping
// ErrCorrupt if it finds its own buffer's header scribbled on by another process. Send
// allocates nothing.
//
// The writes to the loan's bytes happen before every subscriber's Receive of the message.
func (p *Publisher) Send(ctx context.Context, l Loan) error {
	if l.p != p {
		if l.p == nil {
			return ErrLoanEnded
		}
		return &Error{Op: "send", Name: p.name, Err: errors.New("loan belongs to another publisher")}
	}
	if l.l.FromRing() {
		return p.sendRing(ctx, &l, false) // by reference: the round trip's path copies no Loan
	}
	return p.send(ctx, l, false)
}

// send is Send. It takes the send lock, which stands in for the gate (see Publisher.mu);
// inGate says whether the caller holds the Bus's use gate too (Publish), which Bus.Close waits
// for before it detaches, and so whether the loan can be given back when the bus is closed.
func (p *Publisher) send(ctx context.Context, l Loan, inGate bool) error {
	if l.l.FromRing() {
		return p.sendRing(ctx, &l, inGate)
	}
	p.mu.Lock()
	defer p.unlock()
	if p.b.closed.Load() {
		// Bus.Close takes the lock before it unmaps the region, and has not yet (or waits for
		// us): the region is mapped, but Detach ends the loan, unless Publish holds the Bus's
		// use gate and Bus.Close waits for it.
		if inGate {
			l.l.Discard()
		}
		return &Error{Op: "send", Name: p.name, Err: ErrClosed}
	}
	if p.closed.Load() {
		l.l.Discard()
		return &Error{Op: "send", Name: p.name, Err: ErrClosed}
	}
	if g := p.b.r.SubscriptionGen(); g != p.gen {
		p.refresh(g)
	}
	res, err := p.topic.Send(ctx, l.l, l.n, p.sendTargets())
	if res.Closed > 0 {
		p.gen = ^uint64(0) // a target went away: list them again next time
	}
	if err != nil {
		if errors.Is(err, ErrLoanEnded) {
			return err
		}
		return &Error{Op: "send", Name: p.name, Err: err}
	}
	return nil
}

// unlock releases the send lock (Publisher.mu). Once the publisher is closed, it gives back
// the gate's reference for the lock if no send holds the lock any more (settleLock).
func (p *Publisher) unlock() {
	p.mu.Unlock()
	if p.closed.Load() {
		p.settleLock()
	}
}

// settleLock gives back the reference Close lent the gate for the send lock, once: by whoever
// finds the lock free after the close. A send that takes the lock later finds the publisher
// closed and leaves the topic alone. If the lock is held, its holder settles when it unlocks.
func (p *Publisher) settleLock() {
	if !p.lockOwed.Load() || !p.mu.TryLock() {
		return
	}
	owed := p.lockOwed.CompareAndSwap(true, false)
	p.mu.Unlock()
	if owed {
		p.gate.exit()
	}
}

// waitSends waits until no send of the publisher is under way; Bus.Close calls it after
// setting its closed flag, so a send that takes the lock after it fails with ErrClosed.
func (p *Publisher) waitSends() {
	p.mu.Lock()
	p.unlock()
}

// Publish copies data into a loaned buffer and sends it: the convenience form of Loan and
// Send, for data that already exists in the process's memory.
func (p *Publisher) Publish(ctx context.Context, data []byte) error {
	// One passage through the Bus's use gate covers the loan, the copy and the send (whose
	// touch of the topic is under the send lock, which Publisher.Close settles: see mu).
	if !p.b.enter() {
		return &Error{Op: "publish", Name: p.name, Err: &Error{Op: "loan", Name: p.name, Err: ErrClosed}}
	}
	defer p.b.exit()
	if testHookInUse != nil {
		testHookInUse("publish")
	}
	l, err := p.loan(len(data))
	if p.ring != nil && errors.Is(err, ErrRingLoaned) {
		l, err = p.waitRingLoan(ctx, len(data))
	}
	if err != nil {
		return &Error{Op: "publish", Name: p.name, Err: err}
	}
	if err := l.l.Write(data); err != nil {
		l.l.Discard()
		return &Error{Op: "publish", Name: p.name, Err: err}
	}
	return p.send(ctx, l, true)
}

// refresh rebuilds the list of inboxes whose pattern matches the topic. It runs when the
// region's subscription generation has moved, which every subscribe and unsubscribe does. If
// the region cannot be read, the list is left empty and refreshed again at the next Send.
func (p *Publisher) refresh(gen uint64) {
	targets, err := p.b.r.Targets(p.targets[:0], p.match)
	p.targets = targets
	p.splitGroups()
	p.splitRing()
	if err != nil {
		p.gen = ^uint64(0)
		p.noCopies.Store(0)
		return
	}
	p.gen = gen
	if p.ring != nil {
		if len(p.targets)+len(p.groups) == 0 {
			p.noCopies.Store(gen<<1 | 1)
		} else {
			p.noCopies.Store(0)
		}
	}
}

// match reports whether a subscription's pattern takes the publisher's topic.
func (p *Publisher) match(pattern string) bool {
	return topics.ValidatePattern(pattern) == nil && topics.Match(pattern, p.name)
}

// FanOut returns how many subscriptions the publisher's last Send delivered to (the
// subscriptions whose pattern matched its topic then, counting each queue group once, and
// those that read its slot ring).
func (p *Publisher) FanOut() int {
	p.mu.Lock()
	defer p.unlock()
	return len(p.targets) + len(p.groups) + len(p.ringTargets)
}

// letGo unpins the publisher's topic and takes the publisher off the Bus's list, once: its
// gate calls it when the publisher is closed and no call is under way. Until then Bus.Close
// finds the publisher in its list and waits for those calls.
func (p *Publisher) letGo() {
	if p.unpinned.CompareAndSwap(false, true) {
		// Under the use gate: Bus.Close must not unmap the region under the unpin. Once it
		// has begun, Detach clears every pin of the process, this one with them.
		if p.b.enter() {
			if testHookInUse != nil {
				testHookInUse("unpin")
			}
			p.b.p.UnpinTopic(p.topic)
			p.b.exit()
		}
		p.b.mu.Lock()
		delete(p.b.pubs, p)
		p.b.mu.Unlock()
	}
}

// Close closes the publisher: calls made after it fail with ErrClosed, and once the calls
// under way have returned it lets the topic go (once no Publisher of it is open in any
// process, and nothing else uses it, ReclaimTopics may free its entry). Close does not wait
// for them: a Send blocked on a full subscription (Block) goes on until its context or the
// subscription lets it. A publisher with a slot ring (WithSlotRing) retires it; its
// subscribers read it to its last message. A loan of the ring that is out, never sent nor
// discarded, keeps the ring, and the topic's ring with it, until it is sent (which fails with
// ErrClosed) or discarded, or the Bus closes: a new ring publisher of the topic gets
// ErrRingTaken meanwhile. Close is idempotent.
func (p *Publisher) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	if p.ring != nil {
		p.retireRing()
	}
	// A call that entered the gate, or a send that took the lock, before closed was set may
	// still write into the topic's entry: the pin stays until the last of them has left
	// (gate.shut, letGo). The gate holds a reference for the send lock until settleLock finds
	// the lock free: now, or when the send that holds it unlocks.
	p.gate.hold()
	p.lockOwed.Store(true)
	p.gate.shut()
	p.settleLock()
	return nil
}
