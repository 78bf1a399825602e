package bus

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/offq/offq/codec"
	"github.com/offq/offq/internal/shm"
	"github.com/offq/offq/topics"
)

// ErrTypeMismatch is wrapped by the error of NewPublisher, Subscribe and
// TypedSubscription.Receive when a topic's recorded codec and type fingerprint are not the
// caller's: another process (or this one) publishes or reads a different type on that topic.
var ErrTypeMismatch = errors.New("type mismatch")

var errNotInPlace = errors.New("the codec does not write in place: use Publish (Loan is for codecs such as codec.Struct)")

// TypedPublisher publishes values of type T to one topic, encoded by a codec. It is safe for
// concurrent use by multiple goroutines.
type TypedPublisher[T any] struct {
	p       *Publisher
	c       codec.Codec[T]
	in      codec.InPlace[T] // c, if it writes in place
	size    int              // T's size, for in-place codecs
	largest int              // the region's largest size class
	hint    atomic.Int64     // encoded size of the last message, where the codec cannot tell it
}

// NewTypedPublisher returns a publisher of T values on topic, encoded by c: codec.Raw{},
// codec.NewMsgpack[T]() or codec.NewStruct[T](). The topic records c's name and T's
// fingerprint when it is first used by a typed publisher or subscriber, in any process; if it
// carries another type or codec already, NewTypedPublisher fails with an error wrapping
// ErrTypeMismatch. A type the codec cannot carry (codec.Struct and a type holding a pointer)
// fails with the codec's *codec.TypeError naming the offending field, and a codec.Struct type
// larger than the region's largest size class with ErrTooLarge.
func NewTypedPublisher[T any](b *Bus, topic string, c codec.Codec[T], opts ...PublisherOption) (*TypedPublisher[T], error) {
	if err := checkCodecName(c); err != nil {
		return nil, &Error{Op: "publisher", Name: topic, Err: err}
	}
	fp, err := c.Fingerprint()
	if err != nil {
		return nil, &Error{Op: "publisher", Name: topic, Err: err}
	}
	p, err := b.Publisher(topic, opts...)
	if err != nil {
		return nil, err
	}
	tp := &TypedPublisher[T]{p: p, c: c, largest: largestClass(b)}
	if err := p.claimTyped(fp, c.Name(), reflect.TypeFor[T]()); err != nil {
		p.Close()
		return nil, &Error{Op: "publisher", Name: topic, Err: err}
	}
	if in, ok := c.(codec.InPlace[T]); ok {
		tp.in, tp.size = in, int(reflect.TypeFor[T]().Size())
		if tp.size > tp.largest {
			p.Close()
			return nil, &Error{Op: "publisher", Name: topic, Err: fmt.Errorf("%w: %s is %d bytes, the largest size class %s",
				ErrTooLarge, reflect.TypeFor[T](), tp.size, shm.Size(tp.largest))}
		}
	}
	return tp, nil
}

// checkCodecName refuses a nil codec, and a name the topic table cannot hold (1 to 16 bytes).
// claimTyped is claimTopic on the publisher's topic, under the Bus's use gate.
func (p *Publisher) claimTyped(fp uint64, codecName string, typ reflect.Type) error {
	if !p.b.enter() {
		return ErrClosed
	}
	defer p.b.exit()
	return claimTopic(p.topic, fp, codecName, typ)
}

func checkCodecName[T any](c codec.Codec[T]) error {
	if c == nil {
		return fmt.Errorf("%w: nil codec", ErrInvalidOption)
	}
	if n := c.Name(); len(n) == 0 || len(n) > 16 {
		return fmt.Errorf("%w: codec name %q: want 1 to 16 bytes", ErrInvalidOption, n)
	}
	return nil
}

func largestClass(b *Bus) int {
	n := 0
	for _, c := range b.r.Config().Classes {
		n = max(n, int(c.Size))
	}
	return n
}

// claimTopic records fp and codec on t if nothing is recorded yet, and fails with
// ErrTypeMismatch if something else is.
func claimTopic(t shm.Topic, fp uint64, codecName string, typ reflect.Type) error {
	ok, err := t.SetFingerprint(fp, codecName, typ.String())
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	have, haveCodec := t.Fingerprint()
	return fmt.Errorf("%w: topic %q carries codec %q, type %s, fingerprint %#016x (%s); this is codec %q, type %s, fingerprint %#016x",
		ErrTypeMismatch, t.Name(), haveCodec, recordedType(t.TypeName()), have, mismatchHint(haveCodec, codecName), codecName, typ, fp)
}

// recordedType names a type recorded on a topic, for errors: "(unnamed)" when its claimer
// recorded no name (an importing bridge of an older origin, offq pub).
func recordedType(name string) string {
	if name == "" {
		return "(unnamed)"
	}
	return name
}

// mismatchHint says what a fingerprint that differs means. The region records the codec, the
// fingerprint and the type's name; types of one name but another layout differ here.
func mismatchHint(have, want string) string {
	switch {
	case have != want:
		return "another codec"
	case have == "msgpack":
		return "msgpack of another layout: one side uses codec.StrictType, which fingerprints the layout"
	case have == "struct":
		return "another layout: field names, kinds, sizes or offsets differ"
	}
	return "another type"
}

// Topic returns the publisher's topic.
func (p *TypedPublisher[T]) Topic() string { return p.p.Topic() }

// FanOut returns how many subscriptions the publisher's last Send delivered to.
func (p *TypedPublisher[T]) FanOut() int { return p.p.FanOut() }

// Close closes the publisher. Close is idempotent.
func (p *TypedPublisher[T]) Close() error { return p.p.Close() }

// Publish encodes *v into a loaned buffer and sends it (see Publisher.Send). The codec writes
// straight into the buffer in shared memory. It loans as many bytes as the codec says v
// needs; a codec that cannot tell (Msgpack) gets as many as the publisher's previous message
// took, and when the encoding does not fit the publisher loans the next size class and
// encodes again. A value whose encoding exceeds the largest size class fails with an error
// wrapping ErrTooLarge that names that size.
//
// Publish allocates nothing, and neither do codec.Raw and codec.Struct; v escapes to the heap,
// though, because the codec is called through an interface, so a *T that points into a
// variable declared in a loop costs an allocation per message. Keep the value somewhere that
// lives longer, or, with codec.Struct, Loan the T in the buffer instead.
func (p *TypedPublisher[T]) Publish(ctx context.Context, v *T) error {
	l, err := p.encode(v)
	if err != nil {
		return err
	}
	return p.p.Send(ctx, l)
}

// Request encodes *v into a loaned buffer, as Publish does, and sends it as a request (see
// Publisher.RequestLoan), returning the reply. Decode the reply with DecodeReply and the
// codec of the reply's type.
func (p *TypedPublisher[T]) Request(ctx context.Context, v *T) (Message, error) {
	l, err := p.encode(v)
	if err != nil {
		return Message{}, err
	}
	return p.p.RequestLoan(ctx, l)
}

// RequestLoan sends a loaned T as a request (see Publisher.RequestLoan): nothing is encoded
// or copied. The loan is consumed.
func (p *TypedPublisher[T]) RequestLoan(ctx context.Context, l TypedLoan[T]) (Message, error) {
	return p.p.RequestLoan(ctx, l.l)
}

// encode loans a buffer and encodes *v into it (see Publish).
func (p *TypedPublisher[T]) encode(v *T) (Loan, error) {
	n := p.c.SizeHint(v)
	exact := n > 0
	if !exact {
		n = max(1, int(p.hint.Load()))
	}
	for {
		l, err := p.p.Loan(min(n, p.largest+1))
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				return Loan{}, p.tooLarge()
			}
			return Loan{}, &Error{Op: "publish", Name: p.p.name, Err: err}
		}
		var m int
		err = l.l.Fill(func(buf []byte) (err error) {
			m, err = p.c.Encode(buf, v)
			return err
		})
		if err == nil {
			if !exact && int64(m) != p.hint.Load() {
				p.hint.Store(int64(m))
			}
			return l.WithLen(m), nil
		}
		l.Discard()
		if !errors.Is(err, codec.ErrShortBuffer) {
			return Loan{}, &Error{Op: "publish", Name: p.p.name, Err: err}
		}
		if l.Cap() >= p.largest {
			return Loan{}, p.tooLarge()
		}
		n = l.Cap() + 1 // the next size class
	}
}

func (p *TypedPublisher[T]) tooLarge() error {
	return &Error{Op: "publish", Name: p.p.name, Err: fmt.Errorf("the %s encoding of a %s does not fit the largest size class, %s: %w",
		p.c.Name(), reflect.TypeFor[T](), shm.Size(p.largest), ErrTooLarge)}
}

// TypedLoan is a T in a buffer in shared memory, lent to a publisher by TypedPublisher.Loan:
// fill in Value, then Send it. A TypedLoan that is not sent must be given back with Discard.
type TypedLoan[T any] struct {
	l Loan
	v *T
}

// Value returns the loaned T, which lives in the buffer: write the message here. It is valid
// until the loan is sent or discarded.
func (l TypedLoan[T]) Value() *T { return l.v }

// Discard gives back a loan that will not be sent.
func (l TypedLoan[T]) Discard() error { return l.l.Discard() }

// Loan lends a zeroed T that lives in a buffer in shared memory, for codecs that write in
// place (codec.Struct): fill it in and Send it, and nothing is encoded or copied. It never
// blocks and allocates nothing; it fails like Publisher.Loan, and for other codecs.
func (p *TypedPublisher[T]) Loan() (TypedLoan[T], error) {
	if p.in == nil {
		return TypedLoan[T]{}, errNotInPlace
	}
	l, err := p.p.Loan(p.size)
	if err != nil {
		return TypedLoan[T]{}, &Error{Op: "loan", Name: p.p.name, Err: err}
	}
	v, err := p.in.View(l.Bytes())
	if err != nil {
		l.Discard()
		return TypedLoan[T]{}, &Error{Op: "loan", Name: p.p.name, Err: err}
	}
	// Zero the value (the buffer held an earlier message) under the fault guard.
	if err := l.l.Fill(func(buf []byte) error { clear(buf[:p.size]); return nil }); err != nil {
		l.Discard()
		return TypedLoan[T]{}, &Error{Op: "loan", Name: p.p.name, Err: err}
	}
	return TypedLoan[T]{l: l, v: v}, nil
}

// Send publishes a loaned T (see Publisher.Send). The loan is consumed; its Value must not be
// used afterwards.
func (p *TypedPublisher[T]) Send(ctx context.Context, l TypedLoan[T]) error {
	return p.p.Send(ctx, l.l)
}

// TypedSubscription receives values of type T, encoded by a codec, from the topics its
// pattern matches. Like Subscription, it may be used from several goroutines; each message
// goes to one of them.
type TypedSubscription[T any] struct {
	s    *Subscription
	c    codec.Codec[T]
	in   codec.InPlace[T]
	fp   uint64
	typ  reflect.Type
	seen []atomic.Uint32 // per topic index: topicUnchecked, topicMatches or topicMismatch
}

const (
	topicUnchecked = iota
	topicMatches
	topicMismatch
)

// NewTypedSubscription subscribes to pattern (see Bus.Subscribe) for values of type T encoded
// by c.
// Every matching topic that exists and has a type recorded must carry c and T, or
// NewTypedSubscription fails with an error wrapping ErrTypeMismatch; an existing topic named exactly by pattern
// with no type recorded gets c's and T's. A topic the subscription meets later is checked,
// and claimed if it has no type, at its first message (see TypedSubscription.Receive). A type
// the codec cannot carry fails with the codec's *codec.TypeError.
func NewTypedSubscription[T any](b *Bus, pattern string, c codec.Codec[T], opts ...SubscribeOption) (*TypedSubscription[T], error) {
	if err := checkCodecName(c); err != nil {
		return nil, &Error{Op: "subscribe", Name: pattern, Err: err}
	}
	fp, err := c.Fingerprint()
	if err != nil {
		return nil, &Error{Op: "subscribe", Name: pattern, Err: err}
	}
	if !b.enter() {
		return nil, &Error{Op: "subscribe", Name: pattern, Err: ErrClosed}
	}
	defer b.exit() // (after the unpins below)
	if err := topics.ValidatePattern(pattern); err != nil {
		return nil, &Error{Op: "subscribe", Name: "", Err: err}
	}
	ts := &TypedSubscription[T]{c: c, fp: fp, typ: reflect.TypeFor[T](), seen: make([]atomic.Uint32, b.r.Config().Topics)}
	ts.in, _ = c.(codec.InPlace[T])
	// Subscribing does not create topics (the first publisher sets a topic's history), so
	// only topics that exist are checked now. Each is pinned until the subscription's inbox
	// is open (whose pattern then keeps it from ReclaimTopics), so that what it recorded and
	// saw stays the topic's; one reclaimed meanwhile is skipped (it had no type in use).
	var pinned []shm.Topic
	defer func() {
		for _, t := range pinned {
			b.p.UnpinTopic(t)
		}
	}()
	err = b.r.EachTopic(func(t shm.Topic) error {
		if !topics.Match(pattern, t.Name()) {
			return nil
		}
		if b.p.PinTopic(t) != nil {
			return nil
		}
		pinned = append(pinned, t)
		var err error
		if topics.IsLiteral(pattern) {
			err = claimTopic(t, fp, c.Name(), ts.typ)
		} else if have, _ := t.Fingerprint(); have != 0 && have != fp {
			err = claimTopic(t, fp, c.Name(), ts.typ) // fails, naming both
		}
		if err != nil {
			return err
		}
		if have, _ := t.Fingerprint(); have == fp {
			ts.seen[t.Index()].Store(topicMatches)
		}
		return nil
	})
	if err != nil {
		return nil, &Error{Op: "subscribe", Name: pattern, Err: err}
	}
	s, err := b.Subscribe(pattern, opts...)
	if err != nil {
		return nil, err
	}
	ts.s = s
	return ts, nil
}

// Pattern returns the subscription's pattern.
func (s *TypedSubscription[T]) Pattern() string { return s.s.Pattern() }

// Len returns how many messages are queued for the subscription.
func (s *TypedSubscription[T]) Len() int { return s.s.Len() }

// Handle calls fn for each message from a goroutine of its own, one message at a time (see
// Subscription.Handle); the message is released when fn returns. A message of a topic that
// carries another type is released without calling fn and logged.
func (s *TypedSubscription[T]) Handle(fn func(TypedMessage[T])) error {
	return s.s.startHandler(func(ctx context.Context) {
		for m, err := range s.Messages(ctx) {
			if errors.Is(err, ErrTypeMismatch) {
				s.s.b.log.Warn("message of another type skipped", zap.String("pattern", s.s.pattern), zap.Error(err))
				continue
			}
			if err != nil {
				if ctx.Err() == nil {
					s.s.b.log.Error("handler stopped", zap.String("pattern", s.s.pattern), zap.Error(err))
				}
				return
			}
			fn(m)
		}
	})
}

// Stats returns the subscription's counters (see Subscription.Stats).
func (s *TypedSubscription[T]) Stats() (SubscriptionStats, error) { return s.s.Stats() }

// Close unsubscribes (see Subscription.Close). Close is idempotent.
func (s *TypedSubscription[T]) Close() error { return s.s.Close() }

// Drain delivers what is queued, then closes the subscription (see Subscription.Drain).
func (s *TypedSubscription[T]) Drain(ctx context.Context) error { return s.s.Drain(ctx) }

// Receive returns the next message (see Subscription.Receive): read it with View (in place,
// for codec.Struct) or Decode, then Release it. Each topic's first message is checked against
// the topic's recorded type, which it claims if none is recorded; a message of a topic that
// carries another type is released and Receive returns an error wrapping ErrTypeMismatch, so
// call Receive again to go on. While messages are queued Receive makes no system call, and
// it allocates nothing.
func (s *TypedSubscription[T]) Receive(ctx context.Context) (TypedMessage[T], error) {
	m, err := s.s.Receive(ctx)
	if err != nil {
		return TypedMessage[T]{}, err
	}
	if err := s.check(m); err != nil {
		m.Release()
		return TypedMessage[T]{}, err
	}
	return TypedMessage[T]{Message: m, c: s.c, in: s.in}, nil
}

func (s *TypedSubscription[T]) check(m Message) error {
	idx := m.h.Meta().Topic
	if int(idx) < len(s.seen) && s.seen[idx].Load() == topicMatches {
		return nil
	}
	b := s.s.b
	if !b.enter() {
		return b.closedError("receive", s.s.pattern)
	}
	defer b.exit()
	err := b.r.OnTopic(int(idx), func(t shm.Topic) error {
		if int(idx) < len(s.seen) && s.seen[idx].Load() == topicMismatch {
			return claimTopic(t, s.fp, s.c.Name(), s.typ) // fails again, naming both types
		}
		if err := claimTopic(t, s.fp, s.c.Name(), s.typ); err != nil {
			s.seen[idx].Store(topicMismatch)
			return err
		}
		s.seen[idx].Store(topicMatches)
		return nil
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, shm.ErrNotFound):
		return &Error{Op: "receive", Name: s.s.pattern, Err: fmt.Errorf("%w: message names no topic (index %d)", ErrTypeMismatch, idx)}
	}
	return &Error{Op: "receive", Name: s.s.pattern, Err: err}
}

// Messages returns an iterator over received messages, for use with range, like
// Subscription.Messages: each message is released when the loop body returns. A message of
// the wrong type is yielded as an error wrapping ErrTypeMismatch, and the iteration goes on
// if the loop does. Like Subscription.Messages it ends quietly when the subscription is closed
// or ctx is done; any other error is yielded once and ends it.
func (s *TypedSubscription[T]) Messages(ctx context.Context) iter.Seq2[TypedMessage[T], error] {
	return func(yield func(TypedMessage[T], error) bool) {
		for {
			m, err := s.Receive(ctx)
			if errors.Is(err, ErrTypeMismatch) {
				if !yield(TypedMessage[T]{}, err) {
					return
				}
				continue
			}
			if err != nil {
				if !quietEnd(ctx, err) {
					yield(TypedMessage[T]{}, err)
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

// TypedMessage is a received message of type T: a Message (Data, Topic, Seq, Time, Release
// and the rest; the same lifetime rules) that knows its codec.
type TypedMessage[T any] struct {
	Message
	c  codec.Codec[T]
	in codec.InPlace[T]
}

// View returns the message's value in place, for codecs that write in place
// (codec.Struct): a *T over the buffer in shared memory, nothing decoded or copied. Treat it
// as read-only (other subscribers read the same bytes), and do not use it after Release. It
// fails if the codec does not write in place, or if the message is too short for T (written
// by a faulty process). It allocates nothing on success.
func (m TypedMessage[T]) View() (*T, error) {
	if m.s == nil {
		return nil, ErrReleased
	}
	if m.in == nil {
		return nil, errNotInPlace
	}
	return m.in.View(m.h.Data())
}

// Decode decodes the message into v: codec.Msgpack reads the buffer in place and copies out
// only what v owns (strings, slices, maps); codec.Struct copies the value; codec.Raw makes v
// alias the message's bytes, valid until Release. Like TypedPublisher.Publish, v escapes to
// the heap.
func (m TypedMessage[T]) Decode(v *T) error {
	if m.s == nil {
		return ErrReleased
	}
	return m.h.Read(func(data []byte) error { return m.c.Decode(data, v) })
}
