package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/offq/offq/internal/shm"
)

// selectStack is how many subscriptions Select handles without allocating.
const selectStack = 16

// Select returns the next message from any of subs, waiting until one of them has a message,
// ctx is done (it returns ctx.Err()) or one of them is closed (ErrClosed, naming its pattern).
// It is Receive over several subscriptions at once, for a goroutine that serves "any of these
// topics, or ctx" without a goroutine per subscription; Message.Subscription says which one
// the message came from. Each call starts looking at a different subscription, so that a busy
// one does not starve the others. Select waits as the first subscription's WaitStrategy says;
// while it sleeps it costs no OS thread (see the package doc's Waiting section). The
// subscriptions must belong to one Bus. With at most 16 subscriptions, Select allocates
// nothing, and while messages are queued it makes no system call.
//
// Select is safe for concurrent use, also with Receive on the same subscriptions: each message
// goes to one caller.
func Select(ctx context.Context, subs ...*Subscription) (Message, error) {
	if len(subs) == 0 {
		return Message{}, &Error{Op: "select", Err: fmt.Errorf("%w: no subscriptions", ErrInvalidOption)}
	}
	b := subs[0].b
	var stack [selectStack]*shm.Inbox
	ins := stack[:0]
	if len(subs) > len(stack) {
		ins = make([]*shm.Inbox, 0, len(subs))
	}
	for _, s := range subs {
		if s.b != b {
			return Message{}, &Error{Op: "select", Name: s.pattern, Err: fmt.Errorf("%w: subscriptions of different buses", ErrInvalidOption)}
		}
	}
	// One passage through the Bus's use gate covers every subscription: they share the Bus.
	if !b.enter() {
		return Message{}, &Error{Op: "select", Name: subs[0].pattern, Err: ErrClosed}
	}
	defer b.exit()
	for _, s := range subs {
		if s.closed.Load() {
			return Message{}, &Error{Op: "select", Name: s.pattern, Err: ErrClosed}
		}
		ins = append(ins, &s.in)
	}
	for _, s := range subs {
		if s.dedupOn.Load() {
			if m, ok := s.nextPending(); ok {
				return m, nil
			}
		}
	}
	for {
		h, i, err := b.p.TakeAny(ctx, ins, subs[0].w)
		if err != nil {
			if i < 0 {
				if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrHeldFull) {
					return Message{}, &Error{Op: "select", Err: err}
				}
				return Message{}, err
			}
			return Message{}, subs[i].takeError("select", err)
		}
		s := subs[i]
		if s.dedupOn.Load() && s.duplicate(h.Meta()) {
			h.Release()
			continue
		}
		return Message{s: s, h: h}, nil
	}
}

// Subscription returns the subscription the message was received from (nil for the zero
// Message).
func (m Message) Subscription() *Subscription { return m.s }
