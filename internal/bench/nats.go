package bench

// NATS, the engine offq's bridge carries topics over between hosts: a request/reply round trip
// through an embedded nats-server on loopback, with the echo in a child process. It is what a
// message costs once it leaves the host's shared memory.

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/nats-io/nats.go"
)

const natsBenchSubject = "offq.bench.ping"

func (bn *bencher) natsPingPong(ctx context.Context, c benchCase) (res benchResult, err error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	srv, err := startNATS()
	if err != nil {
		return res, err
	}
	defer srv.Shutdown()
	p, err := bn.start("echo", fail, nil, peerArg{Role: "nats-echo", Path: srv.ClientURL(), Size: c.Size})
	if err != nil {
		return res, err
	}
	defer p.stop()
	if _, err := p.expect(ctx, benchReady); err != nil {
		return res, err
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.NoReconnect())
	if err != nil {
		return res, err
	}
	defer nc.Close()
	out := make([]byte, c.Size)
	var seq uint64
	h := newHist()
	err = bn.timeRounds(ctx, h, func() error {
		seq++
		binary.LittleEndian.PutUint64(out, seq)
		msg, err := nc.RequestWithContext(ctx, natsBenchSubject, out)
		if err != nil {
			return err
		}
		if got := binary.LittleEndian.Uint64(msg.Data); got != seq {
			return fmt.Errorf("round trip %d came back as %d", seq, got)
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

// benchNATSEcho answers every request on the bench subject with its own payload.
func benchNATSEcho(ctx context.Context, o peerArg, ready func() error) error {
	nc, err := nats.Connect(o.Path, nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	sub, err := nc.Subscribe(natsBenchSubject, func(m *nats.Msg) { m.Respond(m.Data) })
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return err
	}
	if err := ready(); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// natsServer is the embedded server the nats and bridge rows go through (nats_server.go).
type natsServer interface {
	ClientURL() string
	Shutdown()
}
