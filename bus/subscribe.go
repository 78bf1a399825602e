package bus

import (
	"context"
	"errors"
	"iter"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/offq/offq/internal/shm"
	"github.com/offq/offq/topics"
)

// Subscription receives the messages published to every topic its pattern matches, in a
// queue (an inbox in shared memory) of its own. Receive and Messages may be called from
// several goroutines; each message goes to one of them. Messages from one publisher arrive in
// the order it sent them.
type Subscription struct {
	b       *Bus
	pattern string
	in      shm.Inbox
	w       shm.Waiter

	closed   atomic.Bool
	draining atomic.Bool

	// History handed over at Subscribe, served before the queue, and the (topic, seq) pairs it
	// holds, so that a message both remembered and delivered live is received once.
	mu      sync.Mutex
	cancel  context.CancelFunc // stops the handler goroutine (Handle), if any
	done    chan struct{}      // closed when the handler goroutine has returned
	pending []shm.Held
	dedup   map[topicSeq]struct{}
	dedupOn atomic.Bool
}

type topicSeq struct {
	topic uint32
	seq   uint64
}

// Subscribe subscribes to pattern: a topic name, or a pattern with '*' (one token) and '>'
// (the remaining tokens), as in NATS. It sees every message published after it returns on a
// matching topic, including topics created later, and first the retained history of matching
// topics that keep one (see WithHistory, WithoutHistory).
func (b *Bus) Subscribe(pattern string, opts ...SubscribeOption) (*Subscription, error) {
	if !b.enter() {
		return nil, &Error{Op: "subscribe", Name: pattern, Err: ErrClosed}
	}
	defer b.exit()
	o := defaultSubOptions()
	for _, opt := range opts {
		if err := opt.applySub(&o); err != nil {
			return nil, &Error{Op: "subscribe", Name: pattern, Err: err}
		}
	}
	if err := topics.ValidatePattern(pattern); err != nil {
		return nil, &Error{Op: "subscribe", Name: "", Err: err}
	}
	if err := o.validate(int(b.r.Config().InboxCapacity)); err != nil {
		return nil, &Error{Op: "subscribe", Name: pattern, Err: err}
	}
	ic := shm.InboxConfig{
		Capacity: o.depth, Overflow: o.overflow, BlockLimit: o.blockLimit, Pattern: pattern, Group: o.group,
	}
	if readsRing(pattern, o) {
		// A topic name: the subscription reads the topic's slot ring, if it gets one (ring.go).
		// The topic is pinned until the inbox is open, which then keeps it from being
		// reclaimed. A topic table too full for the name only costs the ring: the subscription
		// then receives every message through its queue.
		if t, err := b.pinnedTopic(pattern, 0); err == nil {
			defer b.p.UnpinTopic(t)
			ic.RingOf = &t
		}
	}
	in, err := b.p.OpenInbox(ic)
	if err != nil {
		return nil, &Error{Op: "subscribe", Name: pattern, Err: err}
	}
	s := &Subscription{b: b, pattern: pattern, in: in, w: shm.Waiter{Strategy: o.wait, Spin: o.spin}}
	if o.history {
		s.takeHistory()
	}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	b.log.Debug("subscribed", zap.String("pattern", pattern), zap.Int("inbox", in.ID().Index()))
	return s, nil
}

// takeHistory holds a reference to each retained message of every matching topic. It runs
// after the inbox is open, so a message published meanwhile is in the history, in the queue,
// or in both (and then received once). Each topic is pinned while its history is joined: the
// open inbox keeps a matching topic from being reclaimed from now on, but the entry may have
// been reclaimed (and taken by another name) since the table was read, and a pin that holds
// proves it was not.
func (s *Subscription) takeHistory() {
	// The topic table is read under the fault guard (EachTopic): a region cut under it is
	// logged, and the subscription goes on without history.
	err := s.b.r.EachTopic(func(t shm.Topic) error {
		if t.HistoryDepth() == 0 {
			return nil
		}
		if s.b.p.PinTopic(t) != nil {
			return nil // reclaimed since the table was read: it had no history
		}
		defer s.b.p.UnpinTopic(t)
		if !topics.Match(s.pattern, t.Name()) {
			return nil
		}
		err := s.b.p.TakeHistory(t, func(h shm.Held) {
			s.pending = append(s.pending, h)
			if s.dedup == nil {
				s.dedup = make(map[topicSeq]struct{})
			}
			m := h.Meta()
			s.dedup[topicSeq{m.Topic, m.Seq}] = struct{}{}
		})
		if err != nil { // the process holds Config.Held messages already: no room for history
			s.b.log.Warn("subscribed without part of the history", zap.String("pattern", s.pattern),
				zap.String("topic", t.Name()), zap.Error(err))
		}
		return nil
	})
	if err != nil {
		s.b.log.Warn("subscribed without history: the topic table could not be read", zap.String("pattern", s.pattern), zap.Error(err))
	}
	s.dedupOn.Store(len(s.dedup) > 0)
}

// SubscriptionStats are a subscription's counters, kept in its queue in shared memory: queued
// and capacity, delivered, dropped by reason, publishers blocked for room, bad words found.
type SubscriptionStats = shm.InboxStats

// Stats returns the subscription's counters.
func (s *Subscription) Stats() (SubscriptionStats, error) {
	if !s.b.enter() {
		return SubscriptionStats{}, s.b.closedError("stats", s.pattern)
	}
	defer s.b.exit()
	st, err := s.b.r.InboxStatsOf(s.in.ID())
	if err != nil {
		return st, &Error{Op: "stats", Name: s.pattern, Err: err}
	}
	return st, nil
}

// Pattern returns the subscription's pattern.
func (s *Subscription) Pattern() string { return s.pattern }

// Receive returns the next message, waiting as the subscription's WaitStrategy says until one
// arrives, ctx is done (it returns ctx.Err()) or the subscription is closed (ErrClosed). The
// message's bytes stay valid, in shared memory, until Release; Release it promptly, because
// the buffer is not reused until every subscriber has. While messages are queued, Receive
// makes no system call and allocates nothing.
func (s *Subscription) Receive(ctx context.Context) (m Message, err error) {
	if !s.b.enter() {
		return Message{}, &Error{Op: "receive", Name: s.pattern, Err: ErrClosed}
	}
	defer s.b.exit()
	if testHookInUse != nil {
		testHookInUse("receive")
	}
	if s.closed.Load() {
		return Message{}, &Error{Op: "receive", Name: s.pattern, Err: ErrClosed}
	}
	if s.dedupOn.Load() {
		if m, ok := s.nextPending(); ok {
			return m, nil
		}
	}
	for {
		// The reference moves from the queue into a held entry in one crash-safe step, built
		// in place in the message returned.
		// m is the result: the take fills it in place, and nothing is copied on return.
		m = Message{s: s}
		if err := s.b.p.TakeInto(ctx, &s.in, s.w, &m.h); err != nil {
			return Message{}, s.takeError("receive", err)
		}
		if s.dedupOn.Load() && s.duplicate(m.h.Meta()) {
			m.h.Release()
			continue
		}
		return m, nil
	}
}

// takeError is the error Receive (or Select, op) returns for err from a take.
func (s *Subscription) takeError(op string, err error) error {
	if errors.Is(err, shm.ErrClosed) {
		if !s.closed.Load() && !s.b.closed.Load() {
			// Nobody in this process closed the subscription, and only its owner closes an
			// inbox while the owner lives: another process wrote over the queue's state word.
			return &Error{Op: op, Name: s.pattern, Err: errQueueDamaged}
		}
		return &Error{Op: op, Name: s.pattern, Err: ErrClosed}
	}
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrHeldFull) {
		return &Error{Op: op, Name: s.pattern, Err: err}
	}
	return err
}

func (s *Subscription) nextPending() (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		return Message{}, false
	}
	h := s.pending[0]
	s.pending = s.pending[1:]
	return Message{s: s, h: h}, true
}

// duplicate reports whether m was already handed over as history. A live message of a topic
// newer than all its history ends the check for that topic.
func (s *Subscription) duplicate(m shm.Meta) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := topicSeq{m.Topic, m.Seq}
	if _, ok := s.dedup[k]; ok {
		delete(s.dedup, k)
		s.dedupOn.Store(len(s.dedup) > 0 || len(s.pending) > 0)
		return true
	}
	newer := true
	for k := range s.dedup {
		if k.topic == m.Topic && k.seq > m.Seq {
			newer = false
		}
	}
	if newer {
		for k := range s.dedup {
			if k.topic == m.Topic {
				delete(s.dedup, k)
			}
		}
	}
	s.dedupOn.Store(len(s.dedup) > 0 || len(s.pending) > 0)
	return false
}

// Messages returns an iterator over received messages, for use with range. Each message is
// valid during its iteration and released when the loop body returns (call Clone to keep its
// bytes). The iteration ends quietly, without an error, when the subscription is closed or
// drained and when ctx is cancelled or its deadline passes (check ctx.Err() after the loop
// to tell these apart); any other error is yielded once and ends it.
func (s *Subscription) Messages(ctx context.Context) iter.Seq2[Message, error] {
	return func(yield func(Message, error) bool) {
		for {
			m, err := s.Receive(ctx)
			if err != nil {
				if !quietEnd(ctx, err) {
					yield(Message{}, err)
				}
				return
			}
			cont := yield(m, nil)
			m.Release()
			if !cont {
				return
			}
		}
	}
}

// quietEnd reports whether err ends a Messages iteration without being yielded: the
// subscription was closed, or ctx (the caller's) is done.
func quietEnd(ctx context.Context, err error) bool {
	return errors.Is(err, ErrClosed) || ctx.Err() != nil && errors.Is(err, ctx.Err())
}

// Handle calls fn for each message from a goroutine of its own, one message at a time: the
// callback form of Receive and Messages. The message is released when fn returns (call Clone
// to keep its bytes). Close or Drain the subscription (or Close the Bus) to stop; do not close
// them from inside fn. Handle may be called once per subscription; Receive and Messages may
// still be used beside it (each message goes to one of them).
func (s *Subscription) Handle(fn func(Message)) error {
	return s.startHandler(func(ctx context.Context) {
		for m, err := range s.Messages(ctx) {
			if err != nil {
				if ctx.Err() == nil {
					s.b.log.Error("handler stopped", zap.String("pattern", s.pattern), zap.Error(err))
				}
				return
			}
			fn(m)
		}
	})
}

// startHandler runs run on a goroutine of its own until the subscription closes.
func (s *Subscription) startHandler(run func(ctx context.Context)) error {
	if s.closed.Load() {
		return &Error{Op: "handle", Name: s.pattern, Err: ErrClosed}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return &Error{Op: "handle", Name: s.pattern, Err: errHandlerRunning}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	done := make(chan struct{})
	s.done = done
	go func() {
		defer close(done)
		run(ctx)
	}()
	return nil
}

var errHandlerRunning = errors.New("a handler already runs on this subscription")

// Len returns how many messages are queued for the subscription (0 once the Bus is closed).
func (s *Subscription) Len() int {
	if !s.b.enter() {
		return 0
	}
	defer s.b.exit()
	return s.in.Len()
}

// Close unsubscribes: publishers stop delivering to the subscription, and messages still
// queued are released. Messages already received stay valid until released. Close is
// idempotent.
func (s *Subscription) Close() error {
	if !s.b.enter() {
		return nil // Bus.Close closes every subscription of the Bus
	}
	defer s.b.exit()
	return s.close()
}

// close is Close, under the Bus's use gate or from Bus.Close.
func (s *Subscription) close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.mu.Lock()
	if s.cancel != nil {
		s.cancel()
	}
	pend := s.pending
	s.pending = nil
	s.dedup = nil
	s.dedupOn.Store(false)
	s.mu.Unlock()
	for _, h := range pend {
		h.Release()
	}
	err := s.b.p.CloseInbox(&s.in)
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
	return err
}

// wait blocks until the subscription's handler goroutine, if any, has returned.
func (s *Subscription) wait() {
	if done := s.handler(); done != nil {
		<-done
	}
}

// handler returns the channel closed when the handler goroutine returns (nil: no handler).
func (s *Subscription) handler() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// Drain lets the subscription deliver what is queued, then closes it. With a handler (Handle)
// it waits until the handler has run for every queued message or ctx is done; without one it
// closes once Receive has found the queue empty (Receive then returns ErrClosed).
func (s *Subscription) Drain(ctx context.Context) error {
	if s.closed.Load() {
		return &Error{Op: "drain", Name: s.pattern, Err: ErrClosed}
	}
	s.draining.Store(true)
	if s.handler() == nil {
		return s.drainPull(ctx)
	}
	// Wait for the handler to empty the queue, then stop it.
	err := s.waitEmpty(ctx)
	s.Close()
	s.wait()
	return err
}

func (s *Subscription) drainPull(ctx context.Context) error {
	err := s.waitEmpty(ctx)
	s.Close()
	return err
}

// waitEmpty waits until the subscription's queue is empty or closed, under the subscription's
// gate: Bus.Close closes the queue, which ends the wait, and then waits for it to return.
func (s *Subscription) waitEmpty(ctx context.Context) error {
	if !s.b.enter() {
		return nil // the Bus is closed: its Close released what was queued
	}
	defer s.b.exit()
	return s.in.WaitEmpty(ctx)
}
