package bench

// The bridge: what a message costs when it leaves the host through offq's NATS bridge. Bus A
// (this process) and bus B stand for two hosts, each with a bridge to one embedded nats-server
// on loopback; the echo is an offq subscriber on bus B in a child process. One round trip is
// offq → bridge → NATS → bridge → offq → echo → offq → bridge → NATS → bridge → offq.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/offq/offq/bridge"
	"github.com/offq/offq/bus"
	"github.com/offq/offq/transport"
)

func (bn *bencher) bridgePingPong(ctx context.Context, c benchCase) (res benchResult, err error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	srv, err := startNATS()
	if err != nil {
		return res, err
	}
	defer srv.Shutdown()
	cfg := transport.Config{
		Classes: []transport.Class{{Size: transport.Size(roundUp64(c.Size)), Count: 64}},
		Inboxes: 8, InboxCapacity: 16, Topics: 4, Participants: 4, Held: 16,
	}
	nameA, nameB := "bridge-a-"+strconv.Itoa(bn.seq), "bridge-b-"+strconv.Itoa(bn.seq)
	a, err := bn.openBenchBus(nameA, cfg)
	if err != nil {
		return res, err
	}
	defer transport.Unlink(bn.tmp, nameA)
	defer a.Close()
	b, err := bn.openBenchBus(nameB, cfg)
	if err != nil {
		return res, err
	}
	defer transport.Unlink(bn.tmp, nameB)
	defer b.Close()
	brA, err := bridge.New(a, srv.ClientURL(), bridge.WithExport(topicPing), bridge.WithImport(topicPong))
	if err != nil {
		return res, err
	}
	defer brA.Close()
	brB, err := bridge.New(b, srv.ClientURL(), bridge.WithImport(topicPing), bridge.WithExport(topicPong))
	if err != nil {
		return res, err
	}
	defer brB.Close()
	sub, err := a.Subscribe(topicPong, bus.WithWait(waitOf(c.Mode)), bus.WithoutHistory())
	if err != nil {
		return res, err
	}
	pub, err := a.Publisher(topicPing)
	if err != nil {
		return res, err
	}
	p, err := bn.start("echo", fail, nil, peerArg{Role: "offq-echo", Bus: nameB, Mode: c.Mode, Size: c.Size})
	if err != nil {
		return res, err
	}
	defer p.stop()
	if _, err := p.expect(ctx, benchReady); err != nil {
		return res, err
	}
	var seq uint64
	// round sends one ping and waits up to wait for its pong; the path is at most once, so a
	// round may lose its message (counted by the bridges) before every subscription is in place.
	round := func(wait time.Duration) error {
		seq++
		l, err := pub.Loan(c.Size)
		if err != nil {
			return err
		}
		binary.LittleEndian.PutUint64(l.Bytes(), seq)
		if err := pub.Send(ctx, l); err != nil {
			return err
		}
		for {
			rctx, cancel := context.WithTimeout(ctx, wait)
			m, err := sub.Receive(rctx)
			cancel()
			if err != nil {
				return err
			}
			got := binary.LittleEndian.Uint64(m.Data())
			m.Release()
			if got == seq {
				return nil
			}
			// a late pong of an earlier, timed-out round: skip it
		}
	}
	// Until the first pong comes back, the subscriptions are still reaching the server.
	for start := time.Now(); ; {
		err := round(100 * time.Millisecond)
		if err == nil {
			break
		}
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
			return res, fmt.Errorf("bridge path not ready: %w", err)
		}
	}
	h := newHist()
	err = bn.timeRounds(ctx, h, func() error { return round(5 * time.Second) })
	if err != nil {
		return res, caseError(ctx, err)
	}
	if err := p.stop(); err != nil {
		return res, err
	}
	return pingResult(c, h), nil
}
