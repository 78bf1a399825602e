package bench

// The transports a Go programmer reaches for first: a Unix stream socket (net) and pipes
// (os.Pipe), one Write per message, read with io.ReadFull. They go through Go's runtime
// poller, as they would in an application.

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// link is this process's side of the connection to one child.
type link struct {
	r       io.Reader
	w       io.Writer
	closers []io.Closer
}

func closeLinks(links []link) {
	for _, l := range links {
		for _, c := range l.closers {
			c.Close()
		}
	}
}

// connect starts n children playing role and connects to each: a Unix socket they dial, or
// pipes they inherit (one each way for an echo, one for a subscriber).
func (bn *bencher) connect(ctx context.Context, fail context.CancelCauseFunc, c benchCase, role string, n int) (links []link, procs []*benchProc, err error) {
	defer func() {
		if err != nil {
			closeLinks(links)
			stopAll(procs)
			links, procs = nil, nil
		}
	}()
	arg := peerArg{Role: c.System + "-" + role, Size: c.Size}
	if c.System == sysUDS {
		path := filepath.Join(bn.tmp, "uds-"+strconv.Itoa(bn.seq))
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			return nil, nil, err
		}
		defer ln.Close()
		for i := range n {
			p, err := bn.start(fmt.Sprintf("%s-%d", role, i+1), fail, nil, peerArg{Role: arg.Role, Size: arg.Size, Path: path})
			if err != nil {
				return links, procs, err
			}
			procs = append(procs, p)
		}
		stop := context.AfterFunc(ctx, func() { ln.Close() })
		defer stop()
		ln.SetDeadline(time.Now().Add(caseTimeout))
		for range n {
			conn, err := ln.AcceptUnix()
			if err != nil {
				return links, procs, caseError(ctx, fmt.Errorf("accept: %w", err))
			}
			links = append(links, link{r: conn, w: conn, closers: []io.Closer{conn}})
		}
		return links, procs, nil
	}
	for i := range n {
		toR, toW, err := os.Pipe()
		if err != nil {
			return links, procs, err
		}
		l := link{w: toW, closers: []io.Closer{toW}}
		extra := []*os.File{toR}
		var fromR, fromW *os.File
		if role == "echo" {
			if fromR, fromW, err = os.Pipe(); err != nil {
				toR.Close()
				toW.Close()
				return links, procs, err
			}
			l.r = fromR
			l.closers = append(l.closers, fromR)
			extra = append(extra, fromW)
		}
		links = append(links, l)
		p, err := bn.start(fmt.Sprintf("%s-%d", role, i+1), fail, extra, arg)
		toR.Close() // the child's ends: ours are closed so that the child sees end of file
		if fromW != nil {
			fromW.Close()
		}
		if err != nil {
			return links, procs, err
		}
		procs = append(procs, p)
	}
	return links, procs, nil
}

func (bn *bencher) socketPingPong(ctx context.Context, c benchCase) (res benchResult, err error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	links, procs, err := bn.connect(ctx, fail, c, "echo", 1)
	if err != nil {
		return res, err
	}
	defer func() { stopAll(procs) }()
	defer closeLinks(links)
	stop := context.AfterFunc(ctx, func() { closeLinks(links) }) // unblock a read or write
	defer stop()
	if _, err := procs[0].expect(ctx, benchReady); err != nil {
		return res, err
	}
	l := links[0]
	out, in := make([]byte, c.Size), make([]byte, c.Size)
	var seq uint64
	h := newHist()
	err = bn.timeRounds(ctx, h, func() error {
		seq++
		binary.LittleEndian.PutUint64(out, seq)
		if _, err := l.w.Write(out); err != nil {
			return err
		}
		if _, err := io.ReadFull(l.r, in); err != nil {
			return err
		}
		if got := binary.LittleEndian.Uint64(in); got != seq {
			return fmt.Errorf("round trip %d came back as %d", seq, got)
		}
		return nil
	})
	if err != nil {
		return res, caseError(ctx, err)
	}
	closeLinks(links) // the echo reads end of file
	ps := procs
	procs = nil
	if err := stopAll(ps); err != nil {
		return res, err
	}
	return pingResult(c, h), nil
}

// socketStream writes every message to each child in turn; the kernel's socket or pipe
// buffer is the queue, and a full one blocks the writer, as Block does in offq.
func (bn *bencher) socketStream(ctx context.Context, c benchCase) (res benchResult, err error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	links, procs, err := bn.connect(ctx, fail, c, "sub", c.Subs)
	if err != nil {
		return res, err
	}
	defer func() { stopAll(procs) }()
	defer closeLinks(links)
	stop := context.AfterFunc(ctx, func() { closeLinks(links) })
	defer stop()
	for _, p := range procs {
		if _, err := p.expect(ctx, benchReady); err != nil {
			return res, err
		}
	}
	buf := make([]byte, c.Size)
	send := func(seq, phase uint64) error {
		binary.LittleEndian.PutUint64(buf[0:], seq)
		binary.LittleEndian.PutUint64(buf[8:], phase)
		for _, l := range links {
			if _, err := l.w.Write(buf); err != nil {
				return err
			}
		}
		return nil
	}
	err = onCPU(bn.cpus[0], func() error { return bn.publish(send) })
	if err != nil {
		return res, caseError(ctx, err)
	}
	return bn.collect(ctx, c, procs)
}
