package bench

// The floors: a counter passed between this process and a child through two words of a
// shared file (floor.RawPingPong), spinning (shm-raw) or with a futex wake-up on every
// message (futex-raw).

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

func (bn *bencher) rawPingPong(ctx context.Context, c benchCase) (res benchResult, err error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	path := filepath.Join(bn.tmp, "raw-"+strconv.Itoa(bn.seq))
	pp, err := floor.CreateRawPingPong(path, rawWaitOf(c.System))
	if err != nil {
		return res, err
	}
	defer pp.Close()
	p, err := bn.start("echo", fail, nil, peerArg{Role: "raw-echo", Path: path, Mode: rawWaitOf(c.System).String()})
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
