package bus

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/offq/offq/internal/shm"
)

// A publisher's slot ring (WithSlotRing; internal/shm/slotring.go): its small messages go to
// the subscribers that read the ring through one line each, not through their queues. The
// ring is single-writer: a loan of it is out at most once (the ring's loan token, taken by
// Loan and given back once the loan is sent or discarded).

var (
	errRingBatch   = errors.New("a publisher with a slot ring sends one message at a time (Loan, Send)")
	errRingRequest = errors.New("a publisher with a slot ring does not send requests: use a publisher of the topic without WithSlotRing")
)

// tooLargeError is ErrTooLarge with a text of its own: a slot ring's limit is not a size
// class's, which ErrTooLarge's text names.
type tooLargeError string

func tooLarge(msg string) error { return tooLargeError(msg) }

func (e tooLargeError) Error() string { return string(e) }
func (e tooLargeError) Unwrap() error { return ErrTooLarge }

// makeRing creates the publisher's ring on its topic.
func (p *Publisher) makeRing(o pubOptions) error {
	if d := p.topic.HistoryDepth(); d > 0 {
		return fmt.Errorf("%w: the topic keeps a history of %d messages, and a slot ring keeps none", ErrInvalidOption, d)
	}
	readers := min(shm.MaxRingReaders, int(p.b.r.Config().Inboxes))
	r, err := p.b.p.CreateSlotRing(p.topic, shm.RingShape{Slots: o.ringSlots, Payload: o.ringSize, Readers: readers})
	if err != nil {
		if errors.Is(err, shm.ErrRingTaken) {
			return fmt.Errorf("%w: another publisher of the topic, in this process or another, has one open (close it first, or publish without WithSlotRing), or was closed with a loan of its ring neither sent nor discarded (send or discard it)", err)
		}
		if errors.Is(err, shm.ErrTooLarge) {
			return tooLarge(fmt.Sprintf("a slot ring of %d slots of %d bytes takes a buffer of %d bytes, and the bus's largest size class is %d: ask for fewer or smaller slots, or configure a larger class",
				o.ringSlots, o.ringSize, shm.RingShape{Slots: o.ringSlots, Payload: o.ringSize, Readers: readers}.Size(), largestClass(p.b)))
		}
		return err
	}
	p.ring = r
	return nil
}

// loanRing lends the ring's staging buffer for the next message (shm.SlotRing.Loan).
func (p *Publisher) loanRing(n int) (l Loan, err error) {
	if err := p.ring.LoanInto(n, &l.l); err != nil {
		return Loan{}, p.ringLoanFailed(n, err)
	}
	l.p, l.n = p, n
	return l, nil
}

// ringLoanFailed is the error of a ring's Loan(n) whose LoanInto failed with err.
func (p *Publisher) ringLoanFailed(n int, err error) error {
	if err == shm.ErrRingRetiring {
		// The ring was retired while this loan took its token: giving the token back
		// finishes the retirement, in shared memory, so inside the use gate (a Bus.Close
		// under way frees the ring itself).
		if p.b.enter() {
			p.ring.EndLoan()
			p.b.exit()
		}
		return ErrClosed
	}
	return p.ringLoanError(n, err)
}

// ringLoanError is the error of a ring's Loan(n) that failed with err: unwrapped, as a pool
// loan's errors are (Publish wraps them once).
func (p *Publisher) ringLoanError(n int, err error) error {
	switch {
	case errors.Is(err, shm.ErrTooLarge):
		return tooLarge(fmt.Sprintf("a message of %d bytes: the publisher's slot ring holds messages of up to %d (WithSlotRing)", n, p.ring.Payload()))
	case errors.Is(err, shm.ErrClosed):
		return ErrClosed
	}
	return err
}

// waitRingLoan waits for the ring's outstanding loan to be sent or discarded, then lends the
// next slot (Publish). It yields at first (a loan is usually sent within a microsecond), then
// sleeps, up to a millisecond at a time: a goroutine that holds its loan for long does not
// cost the waiting one a core. It gives up with ErrClosed once the publisher or the Bus is
// closed: a loan whose Send the closing Bus refused is never given back by its holder, and
// Bus.Close waits for this call (it is inside the Bus's use gate).
func (p *Publisher) waitRingLoan(ctx context.Context, n int) (Loan, error) {
	pause := 10 * time.Microsecond
	for i := 1; ; i++ {
		l, err := p.loanRing(n)
		if !errors.Is(err, ErrRingLoaned) {
			return l, err
		}
		if i%64 == 0 || i >= 1024 { // once it sleeps, at every turn
			if err := ctx.Err(); err != nil {
				return Loan{}, err
			}
			if p.closed.Load() || p.b.closed.Load() {
				return Loan{}, ErrClosed
			}
		}
		if i < 1024 {
			runtime.Gosched()
			continue
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Millisecond)
	}
}

// sendRing publishes a loan of the ring. The message is committed to the ring first, outside
// the send lock (the loan's token makes this goroutine the ring's only writer, and the Bus's
// use gate keeps the region mapped), so that nothing stands between a spinning reader and the
// message. Then the subscribers that read the ring are woken: by the commit itself, with no
// lock, while no subscriber is sent copies (commitRing); otherwise under the send lock, where
// the others are sent a copy through their queues (fanRing). The send is split into sendRing,
// commitRing and fanRing so that each has one defer at most: a function with several defers
// and many returns gets its defers run by the runtime, not inline, and this is the round
// trip's path.
func (p *Publisher) sendRing(ctx context.Context, l *Loan, inGate bool) error {
	if inGate {
		return p.commitRing(ctx, l)
	}
	if !p.b.enter() {
		return &Error{Op: "send", Name: p.name, Err: ErrClosed} // Bus.Close frees the ring
	}
	defer p.b.exit()
	return p.commitRing(ctx, l)
}

// commitRing is sendRing inside the Bus's use gate. If the topic has subscribers that are sent
// copies, the copies' buffer is borrowed before the message is committed to the ring: a Send
// that fails for want of it has delivered the message to nobody (and ended the loan).
func (p *Publisher) commitRing(ctx context.Context, l *Loan) error {
	if p.closed.Load() {
		l.l.Discard()
		return &Error{Op: "send", Name: p.name, Err: ErrClosed}
	}
	g := p.b.r.SubscriptionGen()
	var cp shm.Loan
	copies := p.noCopies.Load() != g<<1|1
	var wake *[]shm.Inbox
	if copies {
		if err := p.borrowCopy(l.n, &cp); err != nil {
			if l.l.Discard() == ErrLoanEnded {
				return ErrLoanEnded // sent or discarded already
			}
			return &Error{Op: "send", Name: p.name, Err: err}
		}
	} else {
		// No subscriber is sent copies as of generation g, and the list of the ring's readers
		// is g's (refresh stored noCopies after it): the commit wakes them itself, and the
		// send takes no lock. Only the holder of the ring's loan token writes the list
		// (refresh runs in fanRing, under the token), and CommitLoanWake reads it only once it
		// has found this loan to be the one out, so this goroutine holds the token: a Send of
		// a loan already sent reads nothing of it.
		wake = &p.ringTargets
	}
	seq, err := p.ring.CommitLoanWake(l.l, l.n, wake)
	if err != nil {
		if copies {
			cp.Discard()
		}
		if errors.Is(err, ErrLoanEnded) {
			return err // sent or discarded already: the token is not this loan's
		}
		p.ring.EndLoan()
		if errors.Is(err, shm.ErrClosed) {
			err = ErrClosed
		}
		return &Error{Op: "send", Name: p.name, Err: err}
	}
	if !copies {
		p.ring.EndLoan()
		return nil
	}
	err = p.fanRing(ctx, l.n, seq, g, &cp)
	p.ring.EndLoan() // after fanRing, which copies the staged message
	return err
}

// borrowCopy lends *cp, a pool buffer of n bytes for the copies of a ring's message: as a
// pool loan is lent (Publisher.loan), with one reap and one more try if the pools are
// exhausted.
func (p *Publisher) borrowCopy(n int, cp *shm.Loan) (err error) {
	if *cp, err = p.b.p.Loan(n); err != nil {
		if !errors.Is(err, shm.ErrPoolExhausted) || !p.b.reapOnExhaustion() {
			return err
		}
		*cp, err = p.b.p.Loan(n)
	}
	return err
}

// fanRing wakes the subscribers that read the ring, and sends the others a copy of message
// seq, n bytes, through their queues: cp (borrowed by commitRing), a buffer of the pool with
// the same bytes, sequence number and time. The target list is brought up to subscription
// generation g, the one commitRing decided on. The loan's token is still taken (the staged
// message is read here). commitRing sends without it when no subscriber is sent copies.
func (p *Publisher) fanRing(ctx context.Context, n int, seq, g uint64, cp *shm.Loan) error {
	p.mu.Lock()
	defer p.unlock()
	if g != p.gen {
		p.refresh(g)
	}
	p.ring.Wake(p.ringTargets)
	to := p.sendTargets()
	if len(to) == 0 {
		cp.Discard()
		return nil
	}
	if err := cp.Write(p.ring.Staged(n)); err != nil {
		cp.Discard()
		return &Error{Op: "send", Name: p.name, Err: err}
	}
	res, err := p.topic.SendAs(ctx, cp.WithStamp(p.ring.Stamp()), n, to, seq)
	if res.Closed > 0 {
		p.gen = ^uint64(0)
		p.noCopies.Store(0)
	}
	if err != nil {
		return &Error{Op: "send", Name: p.name, Err: err}
	}
	return nil
}

// splitRing moves the inboxes that read the ring out of the target list (refresh).
func (p *Publisher) splitRing() {
	p.ringTargets = p.ringTargets[:0]
	if p.ring == nil {
		return
	}
	k := p.topic.RingTargets(p.targets, p.ring.Slots())
	p.ringTargets = append(p.ringTargets, p.targets[len(p.targets)-k:]...)
	p.targets = p.targets[:len(p.targets)-k]
}

// retireRing closes the ring (Publisher.Close): no message follows; its readers read on to
// its last one, and the Bus frees it once they have (Bus.tick) or when it closes.
func (p *Publisher) retireRing() {
	if !p.b.enter() {
		return // Bus.Close frees it
	}
	defer p.b.exit()
	// The subscribers that read the ring as of now: it is freed once each has read it to the
	// end (or closed, or died), also one that has not opened it yet.
	targets := p.ringReaders()
	// Under the Bus's lock, which the timer holds while it checks the open rings' topic words
	// (RepairWord): it must not put back the word of a ring freed meanwhile.
	p.b.mu.Lock()
	defer p.b.mu.Unlock()
	p.ring.Retire()
	if !p.ring.FreeFor(targets, false) {
		p.b.retired = append(p.b.retired, retiredRing{p.ring, targets, p.name})
	}
}

// ringReaders lists the inboxes that read the ring as of now (splitRing's ringTargets), not
// nil, for FreeFor counts only these. It reads the region's subscriptions itself instead of
// taking the send lock for the publisher's target list: a Send blocked on a full Block
// subscriber holds that lock for as long as it waits, and Close does not wait for it. If the
// region cannot be read, the list is empty (as refresh leaves the target list).
func (p *Publisher) ringReaders() []shm.Inbox {
	all, _ := p.b.r.Targets(nil, p.match)
	k := p.topic.RingTargets(all, p.ring.Slots())
	return append([]shm.Inbox{}, all[len(all)-k:]...)
}

// retiredRing is a closed publisher's slot ring, kept until the subscribers that read it
// (targets, as of the close) have read it, closed or died: a closed publisher's messages stay
// readable as a queue's do. Bus.Close frees it after waiting ringDrainWait at most.
type retiredRing struct {
	r       *shm.SlotRing
	targets []shm.Inbox
	topic   string // for the log
}

// freeRetired frees the retired rings whose readers are done with them. It also brings the
// byte counts of the open publishers' rings up to date, and puts back a ring whose topic word
// another process wrote over (the timer calls it once a second).
func (b *Bus) freeRetired() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for p := range b.pubs {
		if p.ring != nil && !p.closed.Load() {
			p.ring.FlushBytes()
			p.ring.RepairWord()
		}
	}
	keep := b.retired[:0]
	for _, r := range b.retired {
		if !r.r.FreeFor(r.targets, false) {
			keep = append(keep, r)
		}
	}
	clear(b.retired[len(keep):])
	b.retired = keep
}

// ringDrainWait bounds how long Bus.Close waits for the live subscribers that read its
// publishers' slot rings to read them to their last message before it frees them (closeRings).
// A reader that keeps up needs microseconds; one that does not read within this time loses
// what it had not read when the ring is freed.
const ringDrainWait = 500 * time.Millisecond

// testHookRingsWait, if set, runs when Bus.Close finds slot rings not read to the end by their
// live readers, before it waits for them (closeRings).
var testHookRingsWait func()

// closeRings retires and frees the rings of the publishers still open (Bus.Close, once the use
// gate is idle: no loan, send or discard is under way, and none starts), and the retired ones.
// It first waits, ringDrainWait at most, for the live subscribers that read them (in other
// Buses: this one's are closed) to read them to their last message, as they would a queue's;
// the rest is lost to them when the ring is freed.
func (b *Bus) closeRings(pubs []*Publisher) {
	b.mu.Lock()
	rings := append([]retiredRing(nil), b.retired...)
	clear(b.retired)
	b.retired = nil
	b.mu.Unlock()
	for _, p := range pubs {
		if p.ring != nil { // (a ring retired or freed already: endRing and FreeFor do nothing)
			endRing(p.ring)
			rings = append(rings, retiredRing{p.ring, p.ringReaders(), p.name})
		}
	}
	deadline := time.Now().Add(ringDrainWait)
	for pause, hooked := 10*time.Microsecond, false; ; pause = min(2*pause, time.Millisecond) {
		left := rings[:0]
		for _, r := range rings {
			if !r.r.FreeFor(r.targets, false) {
				left = append(left, r)
			}
		}
		clear(rings[len(left):])
		rings = left
		if len(rings) == 0 || time.Now().After(deadline) {
			break
		}
		if !hooked && testHookRingsWait != nil {
			testHookRingsWait()
			hooked = true
		}
		time.Sleep(pause)
	}
	for _, r := range rings {
		b.log.Debug("freeing a slot ring whose readers have not read it all", zap.String("topic", r.topic), zap.Duration("waited", ringDrainWait))
		r.r.FreeFor(r.targets, true)
	}
}

// endRing retires ring r and ends a loan of it still out, for Bus.Close once the use gate is
// idle and closed: no Send or Discard of that loan is under way, and none will touch the ring
// (both enter the gate first). A probe loan tells whether the token was free; either way it
// is taken now, by the probe or by the abandoned loan, and EndLoan gives it back into the
// retirement Retire started, which then finishes.
func endRing(r *shm.SlotRing) {
	var probe shm.Loan
	err := r.LoanInto(0, &probe)
	r.Retire()
	if err == nil || err == shm.ErrRingLoaned || err == shm.ErrRingRetiring {
		r.EndLoan()
	}
}

// readsRing reports whether a subscription to pattern reads a topic's slot ring: its pattern
// is a topic name, it drops its oldest message and it is in no queue group (the depth is
// checked against each ring's slots).
func readsRing(pattern string, o subOptions) bool {
	return !strings.ContainsAny(pattern, "*>") && o.overflow == DropOldest && o.group == ""
}
