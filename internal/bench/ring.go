package bench

// slotring-shm: the round trip through offq's slot rings (internal/shm/slotring.go,
// docs/slot-rings.md) between two processes, both spinning. It is offq's own code on a real
// region (the rings in pool buffers on loan, readers checking every header, the clock read
// for each message's stamp), not yet reachable from the bus API: the row the bus's ping-pong
// would take once a publisher can own a ring.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strconv"

	"github.com/offq/offq/internal/shm"
)

// ringShape is the ping-pong's rings: eight slots each way, of the case's size, one reader.
func ringShape(size int) shm.RingShape {
	return shm.RingShape{Slots: 8, Payload: max(size, 8), Readers: 1}
}

// ringConfig is a region with one class that holds a ring of the case's size, for two rings.
func ringConfig(size int) shm.Config {
	c := shm.DefaultConfig()
	c.Classes = []shm.Class{{Size: shm.Size(roundUp64(ringShape(size).Bytes())), Count: 4}}
	c.Inboxes, c.InboxCapacity, c.Topics, c.Participants, c.HistoryDepth, c.Held = 1, 2, 4, 4, 1, 4
	return c
}

// ringSide is one process's half: the ring it writes and the other's that it reads.
type ringSide struct {
	r   *shm.Region
	p   *shm.Participant
	w   *shm.SlotRing
	rd  *shm.RingReader
	buf []byte
}

// newRingSide attaches to r as name and creates the ring of topic mine.
func newRingSide(r *shm.Region, size int, name, mine string) (_ *ringSide, err error) {
	s := &ringSide{r: r, buf: make([]byte, max(size, 8))}
	if s.p, err = r.Attach(name); err != nil {
		return nil, err
	}
	tm, err := s.p.LookupTopic(mine, true, 0)
	if err == nil {
		s.w, err = s.p.CreateSlotRing(tm, ringShape(size))
	}
	if err != nil {
		s.p.Detach()
		return nil, err
	}
	return s, nil
}

// open opens the ring of topic theirs for reading, from its first message, waiting for it
// to exist while ctx lasts.
func (s *ringSide) open(ctx context.Context, theirs string) error {
	tt, err := s.p.LookupTopic(theirs, true, 0)
	if err != nil {
		return err
	}
	for n := 1; ; n++ {
		s.rd, err = s.p.OpenSlotRing(tt, true)
		if !errors.Is(err, shm.ErrNoRing) {
			return err
		}
		if n&0xfff == 0 && ctx.Err() != nil {
			return fmt.Errorf("waiting for the ring of %s: %w", theirs, ctx.Err())
		}
		runtime.Gosched()
	}
}

// send publishes v in a message of the case's size.
func (s *ringSide) send(v uint64) error {
	b, err := s.w.Next(len(s.buf))
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(b, v)
	_, err = s.w.Commit(len(s.buf), 0)
	return err
}

// take spins until the next message arrives and returns its first word.
func (s *ringSide) take(ctx context.Context) (uint64, error) {
	for n := 1; ; n++ {
		m, ok, err := s.rd.Poll(s.buf)
		if err != nil {
			return 0, err
		}
		if ok {
			if m.Len < 8 {
				return 0, fmt.Errorf("a message of %d bytes", m.Len)
			}
			return binary.LittleEndian.Uint64(s.buf), nil
		}
		if n&0xffff == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
}

func (s *ringSide) close(ctx context.Context) {
	if s.rd != nil {
		s.rd.Close()
	}
	if s.w != nil {
		s.w.Close(ctx)
	}
	s.p.Detach()
}

func (bn *bencher) ringPingPong(ctx context.Context, c benchCase) (res benchResult, err error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	name := "ring-" + strconv.Itoa(bn.seq)
	r, err := shm.Create(name, shm.Options{Dir: bn.tmp, Config: ringConfig(c.Size)})
	if err != nil {
		return res, err
	}
	defer shm.Unlink(bn.tmp, name)
	defer r.Close()
	p, err := bn.start("echo", fail, nil, peerArg{Role: "ring-echo", Bus: name, Size: c.Size})
	if err != nil {
		return res, err
	}
	defer p.stop()
	if _, err := p.expect(ctx, benchReady); err != nil {
		return res, err
	}
	s, err := newRingSide(r, c.Size, "offq bench ring", topicPing)
	if err != nil {
		return res, err
	}
	defer s.close(ctx)
	if err := s.open(ctx, topicPong); err != nil {
		return res, err
	}
	h := newHist()
	var seq uint64
	err = bn.timeRounds(ctx, h, func() error {
		seq++
		if err := s.send(seq); err != nil {
			return err
		}
		got, err := s.take(ctx)
		if err != nil {
			return err
		}
		if got != seq {
			return fmt.Errorf("round trip %d came back as %d", seq, got)
		}
		return nil
	})
	if err != nil {
		return res, caseError(ctx, err)
	}
	if rl := s.rd.Lost(); rl != 0 {
		return res, fmt.Errorf("the ping-pong lost %d messages", rl)
	}
	if err := p.stop(); err != nil {
		return res, err
	}
	return pingResult(c, h), nil
}

// benchRingEcho is offq-ring's child: it writes the pong ring and reads the ping ring,
// answering every message with its first word.
func benchRingEcho(ctx context.Context, o peerArg, ready func() error) error {
	r, err := shm.Open(o.Bus, shm.Options{Dir: o.Dir})
	if err != nil {
		return err
	}
	defer r.Close()
	s, err := newRingSide(r, o.Size, "offq bench ring-echo", topicPong)
	if err != nil {
		return err
	}
	defer s.close(context.Background())
	return onCPU(o.CPU, func() error {
		if err := ready(); err != nil {
			return err
		}
		if err := s.open(ctx, topicPing); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for {
			v, err := s.take(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if err := s.send(v); err != nil {
				return err
			}
		}
	})
}
