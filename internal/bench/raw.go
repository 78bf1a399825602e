package bench

// The floors: a counter passed between this process and a child through two words of a
// shared file (floor.RawPingPong), spinning (shm-raw) or with a futex wake-up on every
// message (futex-raw); and a stream of 64-bit words through a single-producer ring in a shared
// file (floor.RawRing, spsc-raw); a stream of messages written in place into pooled buffers
// whose indexes pass through such a ring a batch at a time (floor.RawPool, pool-raw); and a
// round trip through the lines of one offq message each way (floor.LinePingPong: lines-raw,
// and headonly-raw for head-only takes); and a payload each way on lines of its own or on the
// line that announces it, or in a ring of message slots (floor.PayloadPingPong: twoline-raw,
// inline-raw, slotring-raw).

import (
	"context"
	"path/filepath"
	"strconv"

	"github.com/offq/offq/internal/floor"
)

func rawWaitOf(system string) floor.RawWait {
	if system == sysFutex {
		return floor.RawFutex
	}
	return floor.RawSpin
}

func (bn *bencher) rawPingPong(ctx context.Context, c benchCase) (benchResult, error) {
	w := rawWaitOf(c.System)
	return floorCase(ctx, bn, c, "raw", "raw-echo", w.String(), func(path string) (*floor.RawPingPong, error) {
		return floor.CreateRawPingPong(path, w)
	})
}

// floorCase creates a floor's file (kind-N in the run's directory) with create, then times its
// round trips against a child in role, which opens the file as mode says.
func floorCase[P interface {
	pinger
	Close() error
}](ctx context.Context, bn *bencher, c benchCase, kind, role, mode string, create func(path string) (P, error)) (benchResult, error) {
	path := filepath.Join(bn.tmp, kind+"-"+strconv.Itoa(bn.seq))
	pp, err := create(path)
	if err != nil {
		return benchResult{}, err
	}
	defer pp.Close()
	return bn.floorPingPong(ctx, c, pp, peerArg{Role: role, Path: path, Mode: mode})
}

// A pinger is the initiator's side of a floor's ping-pong.
type pinger interface {
	Ping(ctx context.Context) error
	Stop()
}

// floorPingPong times pp's round trips against a child in the role arg names, which answers
// them.
func (bn *bencher) floorPingPong(ctx context.Context, c benchCase, pp pinger, arg peerArg) (res benchResult, err error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	p, err := bn.start("echo", fail, nil, arg)
	if err != nil {
		return res, err
	}
	defer p.stop()
	if _, err := p.expect(ctx, benchReady); err != nil {
		return res, err
	}
	h := newHist()
	err = bn.timeRounds(ctx, h, func() error { return pp.Ping(ctx) })
	pp.Stop()
	if err != nil {
		return res, caseError(ctx, err)
	}
	if err := p.stop(); err != nil {
		return res, err
	}
	return pingResult(c, h), nil
}

// rawStream measures spsc-raw: this process sends (sequence number << 2 | phase) words
// through a RawRing to a child, which counts them like an offq subscriber.
func (bn *bencher) rawStream(ctx context.Context, c benchCase) (res benchResult, err error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	path := filepath.Join(bn.tmp, "ring-"+strconv.Itoa(bn.seq))
	r, err := floor.CreateRawRing(path)
	if err != nil {
		return res, err
	}
	defer r.Close()
	p, err := bn.start("sub", fail, nil, peerArg{Role: "spsc-sub", Path: path})
	if err != nil {
		return res, err
	}
	defer p.stop()
	if _, err := p.expect(ctx, benchReady); err != nil {
		return res, err
	}
	send := func(seq, phase uint64) error { return r.Send(ctx, seq<<2|phase) }
	if err := onCPU(bn.cpus[0], func() error { return bn.publish(send) }); err != nil {
		return res, caseError(ctx, err)
	}
	return bn.collect(ctx, c, []*benchProc{p})
}

// poolStream measures pool-raw: this process writes (sequence number << 2 | phase) words
// into the buffers of a RawPool, c.Batch at a time, for a child that reads them in place and
// counts them like an offq subscriber.
func (bn *bencher) poolStream(ctx context.Context, c benchCase) (res benchResult, err error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	path := filepath.Join(bn.tmp, "pool-"+strconv.Itoa(bn.seq))
	r, err := floor.CreateRawPool(path, c.Batch)
	if err != nil {
		return res, err
	}
	defer r.Close()
	p, err := bn.start("sub", fail, nil, peerArg{Role: "pool-sub", Path: path, Batch: c.Batch})
	if err != nil {
		return res, err
	}
	defer p.stop()
	if _, err := p.expect(ctx, benchReady); err != nil {
		return res, err
	}
	send := func(seq, phase uint64) error {
		if err := r.Send(ctx, seq<<2|phase); err != nil {
			return err
		}
		if phase == phaseEnd {
			r.Flush()
		}
		return nil
	}
	if err := onCPU(bn.cpus[0], func() error { return bn.publish(send) }); err != nil {
		return res, caseError(ctx, err)
	}
	return bn.collect(ctx, c, []*benchProc{p})
}

// linesPingPong measures lines-raw and headonly-raw: a round trip through the cache lines and
// locked operations of one offq message each way, in offq's line pattern or with head-only
// takes.
func (bn *bencher) linesPingPong(ctx context.Context, c benchCase) (benchResult, error) {
	pat := floor.LinesOffq
	if c.System == sysHead {
		pat = floor.LinesHeadOnly
	}
	return floorCase(ctx, bn, c, "lines", "lines-echo", pat.String(), func(path string) (*floor.LinePingPong, error) {
		return floor.CreateLinePingPong(path, pat)
	})
}

// payloadPingPong measures twoline-raw, inline-raw and slotring-raw: a round trip of one
// payload word each way, on lines of its own, on the line that announces it, or in a ring of
// one-line message slots.
func (bn *bencher) payloadPingPong(ctx context.Context, c benchCase) (benchResult, error) {
	sh := floor.PayloadTwoLines
	switch c.System {
	case sysIn:
		sh = floor.PayloadInline
	case sysRing:
		sh = floor.PayloadSlotRing
	}
	return floorCase(ctx, bn, c, "payload", "payload-echo", sh.String(), func(path string) (*floor.PayloadPingPong, error) {
		return floor.CreatePayloadPingPong(path, sh)
	})
}
