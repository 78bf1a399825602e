package bus

import (
	"context"
	"errors"
	"fmt"
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
	gate     gate
	draining atomic.Bool
	cancel   context.CancelFunc // handler goroutine, if any
	done     chan struct{}      // closed when the handler goroutine has returned

	// History handed over at Subscribe, served before the queue, and the (topic, seq) pairs it
	// holds, so that a message both remembered and delivered live is received once.
	mu      sync.Mutex
	pending []pending
	dedup   map[topicSeq]struct{}
	dedupOn atomic.Bool
}

type pending struct {
	idx int
	h   shm.Handle
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
	if b.closed.Load() {
		return nil, ErrClosed
	}
	o := subOptions{history: true}
	for _, opt := range opts {
		if err := opt.applySub(&o); err != nil {
			return nil, fmt.Errorf("bus: subscribe %q: %w", pattern, err)
		}
	}
	if err := topics.ValidatePattern(pattern); err != nil {
		return nil, fmt.Errorf("bus: subscribe: %w", err)
	}
	if err := o.validate(int(b.r.Config().InboxCapacity)); err != nil {
		return nil, fmt.Errorf("bus: subscribe %q: %w", pattern, err)
	}
	in, err := b.p.OpenInbox(shm.InboxConfig{
		Capacity: o.depth, Policy: o.overflow, BlockLimit: o.blockLimit, Pattern: pattern,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: subscribe %q: %w", pattern, err)
	}
	s := &Subscription{b: b, pattern: pattern, in: in, w: shm.Waiter{Strategy: o.wait, Spin: o.spin}}
	s.gate.closed = &b.closed
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
// or in both (and then received once).
func (s *Subscription) takeHistory() {
	r := s.b.r
	for i := range int(r.Config().Topics) {
		t, err := r.Topic(i)
		if err != nil || t.HistoryDepth() == 0 || !topics.Match(s.pattern, t.Name()) {
			continue
		}
		err = t.HoldHistory(s.b.p, func(idx int, h shm.Handle) {
			buf, err := r.Buffer(h)
			if err != nil {
				s.b.p.Unhold(idx, h)
				return
			}
			s.pending = append(s.pending, pending{idx: idx, h: h})
			if s.dedup == nil {
				s.dedup = make(map[topicSeq]struct{})
			}
			m := buf.Meta()
			s.dedup[topicSeq{m.Topic, m.Seq}] = struct{}{}
		})
		if err != nil { // the process holds Config.Held messages already: no room for history
			s.b.log.Warn("subscribed without part of the history", zap.String("pattern", s.pattern),
				zap.String("topic", t.Name()), zap.Error(err))
		}
	}
	s.dedupOn.Store(len(s.dedup) > 0)
}

// InboxID returns the subscription's inbox in the region (as in shm.InboxStats).
func (s *Subscription) InboxID() shm.InboxID { return s.in.ID() }

// Pattern returns the subscription's pattern.
func (s *Subscription) Pattern() string { return s.pattern }

// Receive returns the next message, waiting as the subscription's WaitStrategy says until one
// arrives, ctx is done (it returns ctx.Err()) or the subscription is closed (ErrClosed). The
// message's bytes stay valid, in shared memory, until Release; Release it promptly, because
// the buffer is not reused until every subscriber has. While messages are queued, Receive
// makes no system call and allocates nothing.
func (s *Subscription) Receive(ctx context.Context) (_ Message, err error) {
	// One fault guard for the whole receive: the parts it is made of (reserve, take, the
	// buffer's header) run under it and guard nothing themselves.
	defer shm.Unguard(shm.Guard(), &err)
	return s.receive(ctx)
}

// receive is Receive for a caller that holds the fault guard.
func (s *Subscription) receive(ctx context.Context) (Message, error) {
	if !s.gate.enter() {
		return Message{}, ErrClosed
	}
	defer s.gate.exit()
	if s.closed.Load() {
		return Message{}, ErrClosed
	}
	if s.dedupOn.Load() {
		if m, ok := s.nextPending(); ok {
			return m, nil
		}
	}
	idx, err := s.b.p.Reserve()
	if err != nil {
		return Message{}, fmt.Errorf("bus: receive on %q: %w", s.pattern, err)
	}
	for {
		// The reference moves from the queue into the held entry in one crash-safe step.
		h, err := s.in.PopInto(ctx, s.w, s.b.p, idx)
		if err != nil {
			s.b.p.Unreserve(idx)
			if errors.Is(err, shm.ErrClosed) {
				return Message{}, ErrClosed
			}
			return Message{}, err
		}
		buf, err := s.b.r.Buffer(h)
		if err != nil {
			// A handle that does not name a live buffer: written by a faulty process.
			s.b.p.Forget(idx)
			s.b.log.Warn("dropped bad handle", zap.String("pattern", s.pattern), zap.Error(err))
			continue
		}
		if s.dedupOn.Load() && s.duplicate(buf.Meta()) {
			s.b.p.Unhold(idx, h)
			if idx, err = s.b.p.Reserve(); err != nil {
				return Message{}, fmt.Errorf("bus: receive on %q: %w", s.pattern, err)
			}
			continue
		}
		return Message{s: s, h: h, idx: int32(idx), buf: buf}, nil
	}
}

func (s *Subscription) nextPending() (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		return Message{}, false
	}
	p := s.pending[0]
	s.pending = s.pending[1:]
	buf, err := s.b.r.Buffer(p.h)
	if err != nil {
		// Not a live buffer any more (the region was scribbled): nothing to release.
		s.b.p.Forget(p.idx)
		s.b.p.Unreserve(p.idx)
		return Message{}, false
	}
	return Message{s: s, h: p.h, idx: int32(p.idx), buf: buf}, true
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
// bytes). The iteration ends, without an error, when the subscription is closed or drained;
// it yields ctx.Err() or another error once and ends.
func (s *Subscription) Messages(ctx context.Context) iter.Seq2[Message, error] {
	return func(yield func(Message, error) bool) {
		for {
			m, err := s.Receive(ctx)
			if err != nil {
				if !errors.Is(err, ErrClosed) {
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

// Handle subscribes to pattern and calls fn for each message from a goroutine of its own, one
// message at a time. The message is released when fn returns (call Clone to keep its bytes).
// Close the subscription (or the Bus) to stop; do not close the Bus from inside fn.
func (b *Bus) Handle(pattern string, fn func(Message), opts ...SubscribeOption) (*Subscription, error) {
	s, err := b.Subscribe(pattern, opts...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		for m, err := range s.Messages(ctx) {
			if err != nil {
				if ctx.Err() == nil {
					b.log.Error("handler stopped", zap.String("pattern", pattern), zap.Error(err))
				}
				return
			}
			fn(m)
		}
	}()
	return s, nil
}

// Len returns how many messages are queued for the subscription (0 if the region's memory
// faults: its file was truncated).
func (s *Subscription) Len() int {
	defer shm.Unguard(shm.Guard(), nil)
	return s.in.Len()
}

// Close unsubscribes: publishers stop delivering to the subscription, and messages still
// queued are released. Messages already received stay valid until released. Close is
// idempotent.
func (s *Subscription) Close() (err error) {
	if s.closed.Swap(true) {
		return nil
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Lock()
	pend := s.pending
	s.pending = nil
	s.dedup = nil
	s.dedupOn.Store(false)
	s.mu.Unlock()
	for _, p := range pend {
		s.b.p.Unhold(p.idx, p.h)
	}
	err = s.in.Close()
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
	return err
}

// wait blocks until the subscription's handler goroutine, if any, has returned.
func (s *Subscription) wait() {
	if s.done != nil {
		<-s.done
	}
}

// Drain lets the subscription deliver what is queued, then closes it. With a handler (Handle)
// it waits until the handler has run for every queued message or ctx is done; without one it
// closes once Receive has found the queue empty (Receive then returns ErrClosed).
func (s *Subscription) Drain(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.draining.Store(true)
	if s.done == nil {
		return s.drainPull(ctx)
	}
	// Wait for the handler to empty the queue, then stop it.
	err := s.in.WaitEmpty(ctx)
	s.Close()
	s.wait()
	return err
}

func (s *Subscription) drainPull(ctx context.Context) error {
	err := s.in.WaitEmpty(ctx)
	s.Close()
	return err
}
