package bench

// Request/reply round trips: offq's Request (the requester loans, writes the sequence number
// in place and sends; a responder process replies by loaning and sending into the requester's
// reply inbox) beside NATS's Request through the embedded server (natsPingPong, which is a
// request/reply round trip already).

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/transport"
)

func (bn *bencher) offqRequest(ctx context.Context, c benchCase) (res benchResult, err error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	name := "request-" + strconv.Itoa(bn.seq)
	cfg := transport.Config{
		Classes: []transport.Class{{Size: transport.Size(roundUp64(c.Size)), Count: 16}},
		Inboxes: 4, InboxCapacity: 4, Topics: 4, Participants: 4, Held: 4,
	}
	b, err := bus.Open(name, bus.WithDir(bn.tmp), bus.WithConfig(cfg), bus.WithLogger(bn.log), bus.WithName("offq bench"),
		bus.WithRequestWait(waitOf(c.Mode)))
	if err != nil {
		return res, err
	}
	defer transport.Unlink(bn.tmp, name)
	defer b.Close()
	pub, err := b.Publisher(topicPing)
	if err != nil {
		return res, err
	}
	p, err := bn.start("responder", fail, nil, peerArg{Role: "offq-responder", Bus: name, Mode: c.Mode, Size: c.Size})
	if err != nil {
		return res, err
	}
	defer p.stop()
	if _, err := p.expect(ctx, benchReady); err != nil {
		return res, err
	}
	h := newHist()
	var seq uint64
	err = bn.timeRounds(ctx, h, func() error {
		seq++
		l, err := pub.Loan(c.Size)
		if err != nil {
			return err
		}
		binary.LittleEndian.PutUint64(l.Bytes(), seq)
		m, err := pub.RequestLoan(ctx, l)
		if err != nil {
			return err
		}
		got := binary.LittleEndian.Uint64(m.Data())
		m.Release()
		if got != seq {
			return fmt.Errorf("request %d answered as %d", seq, got)
		}
		return nil
	})
	if err != nil {
		return res, caseError(ctx, err)
	}
	if err := p.stop(); err != nil {
		return res, err
	}
	return pingResult(c, h), nil
}

// benchOffqResponder answers each request on the ping topic with a reply of the same size
// carrying its sequence number, loaned and written in place.
func benchOffqResponder(ctx context.Context, c peerChild, o peerArg) error {
	b, err := bus.Open(o.Bus, bus.WithDir(o.Dir), bus.WithLogger(childLogger(o)), bus.WithName("offq bench "+o.Role))
	if err != nil {
		return err
	}
	defer b.Close()
	sub, err := b.Subscribe(topicPing, bus.WithWait(waitOf(o.Mode)), bus.WithoutHistory())
	if err != nil {
		return err
	}
	return onCPU(o.CPU, func() error {
		if err := c.Encode(benchLine{Type: benchReady}); err != nil {
			return err
		}
		for {
			m, err := sub.Receive(ctx)
			if err != nil {
				return err
			}
			seq := binary.LittleEndian.Uint64(m.Data())
			r, err := m.ReplyLoan(o.Size)
			m.Release()
			if err != nil {
				return err
			}
			binary.LittleEndian.PutUint64(r.Bytes(), seq)
			if err := r.Send(ctx); err != nil {
				return err
			}
		}
	})
}

// peerChild is what a child role needs of its peer.Child.
type peerChild interface{ Encode(v any) error }
