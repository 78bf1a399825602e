//go:build offqcheck

package shm

// The interleaving checker on slot rings (slotring.go): a writer, readers and, in some
// scenarios, a scribbler run as actors of the checker's scheduler (interleave_test.go), one
// step at a time, every shared-memory operation of the ring a decision point.
//
// After each run: every message a reader returned is intact (its payload is the one written
// for its sequence, on every byte: a copy the writer overwrote while it was read is never
// returned), each reader's messages are in order, and a reader that read to the end received
// or counted as lost every message (received + lost = published); nothing hangs, nothing
// panics; the ring's buffer is back in its pool. With a scribbler, which writes over header
// words of the ring (sequence words, lengths, the published count, the closed word, the
// cursors), the payload checks and the order still hold, and nothing hangs.

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

type ilRingScenario struct {
	name     string
	slots    int
	msgs     int
	readers  int
	loans    bool // the writer lends (Loan, CommitLoan, EndLoan); else Next, two halves, Commit
	lateOpen bool // the second reader opens after the writer has begun, from the start
	scribble bool
}

func ilRingScenarios() []ilRingScenario {
	var out []ilRingScenario
	for _, loans := range []bool{false, true} {
		api := "next"
		if loans {
			api = "loan"
		}
		out = append(out,
			ilRingScenario{name: api + "/one-reader", slots: 2, msgs: 6, readers: 1, loans: loans},
			ilRingScenario{name: api + "/two-readers", slots: 2, msgs: 6, readers: 2, loans: loans},
			ilRingScenario{name: api + "/four-slots", slots: 4, msgs: 9, readers: 2, loans: loans},
			ilRingScenario{name: api + "/late-reader", slots: 2, msgs: 6, readers: 2, loans: loans, lateOpen: true},
			ilRingScenario{name: api + "/scribbled", slots: 2, msgs: 6, readers: 2, loans: loans, scribble: true},
		)
	}
	return out
}

const ilRingPayload = 40

// ilRingBytes is message s's payload: every byte derived from s, so that a copy mixing two
// messages fails the check.
func ilRingBytes(b []byte, s uint64) {
	for i := range b {
		b[i] = byte(s*7 + uint64(i))
	}
	binary.NativeEndian.PutUint64(b, s)
}

func ilRingCheck(b []byte) (uint64, bool) {
	if len(b) != ilRingPayload {
		return 0, false
	}
	s := binary.NativeEndian.Uint64(b)
	want := make([]byte, ilRingPayload)
	ilRingBytes(want, s)
	return s, string(want) == string(b)
}

type ilRingRun struct {
	sc     ilRingScenario
	run    *ilRun
	w      *SlotRing
	hard   []string
	got    [][]uint64
	lost   []uint64
	ended  []bool
	wrote  int
	closed bool
	log    []string
}

func (rr *ilRingRun) hardf(format string, args ...any) {
	rr.hard = append(rr.hard, fmt.Sprintf(format, args...))
}

func ilRingEnv(tb testing.TB) (*Region, []*Participant, Topic) {
	cfg := inboxConfig()
	cfg.Classes = []Class{{Size: 1024, Count: 4}}
	r := newUnitRegion(tb, cfg)
	var ps []*Participant
	for i := range 4 {
		ps = append(ps, attachUnit(tb, r, fmt.Sprint("actor", i)))
	}
	t, err := ps[0].LookupTopic("ring.check", true, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return r, ps, t
}

func ilRingOnce(tb testing.TB, r *Region, ps []*Participant, t Topic, sc ilRingScenario, seed uint64, strat ilStrategy) (res *ilRingRun, trace []int8) {
	res = &ilRingRun{sc: sc, got: make([][]uint64, sc.readers), lost: make([]uint64, sc.readers), ended: make([]bool, sc.readers)}
	w, err := ps[0].CreateSlotRing(t, RingShape{Slots: sc.slots, Payload: ilRingPayload, Readers: sc.readers})
	if err != nil {
		res.hardf("CreateSlotRing: %v", err)
		return res, nil
	}
	res.w = w
	readers := make([]*RingReader, sc.readers)
	for i := range readers {
		if sc.lateOpen && i == 1 {
			continue
		}
		if readers[i], err = ps[1+i].OpenSlotRing(t, true); err != nil {
			res.hardf("OpenSlotRing: %v", err)
			return res, nil
		}
	}
	// consumers2: an actor that polled and found nothing stays parked until something it
	// watches changes (ringObs), as with two consumers of an inbox: two pollers would
	// otherwise wake each other for ever while a third, of lower priority, never runs.
	run := &ilRun{seed: seed, sc: ilScenario{consumers2: true}}
	s := &ilSched{run: run, strat: strat, fairSpin: 24}
	run.s = s
	var fp uint64
	run.ringObs = func(a *ilActor) {
		// The fingerprint of what the actors watch, for the scheduler's fair parking.
		g := w.g
		f := g.w.published.Load()*31 + g.hd.closed.Load()
		for k := range g.slots {
			f = f*31 + g.slot(k+1).seq.Load()
		}
		for k := range g.readers {
			f = f*31 + g.reader(k).cursor.Load()
		}
		f = f*31 + g.state.Load() + g.word.Load()<<1
		if f != fp {
			fp = f
			for _, b := range s.actors {
				b.parked = false
			}
		}
	}
	s.add("writer", func(a *ilActor) {
		for m := 1; m <= sc.msgs; m++ {
			if sc.loans {
				l, err := w.Loan(ilRingPayload)
				if err != nil {
					res.hardf("Loan %d: %v", m, err)
					return
				}
				ilRingBytes(l.buf.Bytes()[:ilRingPayload], uint64(m))
				if _, err := w.CommitLoan(l, ilRingPayload); err != nil {
					res.hardf("CommitLoan %d: %v", m, err)
				}
				w.EndLoan()
			} else {
				b, err := w.Next(ilRingPayload)
				if err != nil {
					res.hardf("Next %d: %v", m, err)
					return
				}
				msg := make([]byte, ilRingPayload)
				ilRingBytes(msg, uint64(m))
				copy(b[:ilRingPayload/2], msg) // in two halves, a decision between them
				step()
				copy(b[ilRingPayload/2:], msg[ilRingPayload/2:])
				if _, err := w.Commit(ilRingPayload, 0); err != nil {
					res.hardf("Commit %d: %v", m, err)
				}
			}
			res.wrote = m
			res.log = append(res.log, fmt.Sprintf("@%d wrote %d", s.steps, m))
		}
		w.Retire()
		res.closed = true
		// As the Bus does: wait for the readers to read it all, for a while (here, a number of
		// turns), then free it anyway: a reader stuck on a scribbled slot must not keep the
		// ring for ever.
		for k := 0; !w.Free(false); k++ {
			if k == 200 && sc.scribble {
				w.Free(true)
				break
			}
			s.idle(a)
		}
	})
	for i := range sc.readers {
		s.add(fmt.Sprint("reader", i), func(a *ilActor) {
			dst := make([]byte, w.g.payload) // the slot's room: a scribbled length may use it
			for readers[i] == nil {          // a late reader: opens once the writer has begun
				if res.wrote == 0 {
					s.idle(a)
					continue
				}
				rd, err := ps[1+i].OpenSlotRing(t, true)
				if err != nil {
					if res.closed {
						res.ended[i] = true // too late: nothing to read
						return
					}
					s.idle(a)
					continue
				}
				readers[i] = rd
			}
			rd := readers[i]
			for {
				m, ok, err := rd.Poll(dst)
				if err != nil {
					if err != ErrRingEnded {
						res.hardf("reader%d: %v", i, err)
					}
					res.ended[i] = true
					res.lost[i] = rd.Lost()
					return
				}
				if !ok {
					s.idle(a)
					continue
				}
				sq, good := ilRingCheck(dst[:m.Len])
				if sc.scribble && m.Len != ilRingPayload {
					// A scribbled length that fits the slot: the reader cannot tell it, and
					// copies that many bytes of the message; they must still be its own.
					want := make([]byte, ilRingPayload)
					if m.Len < 8 {
						continue // too short to tell whose it is
					}
					sq = binary.NativeEndian.Uint64(dst)
					ilRingBytes(want, sq)
					k := min(int(m.Len), ilRingPayload) // past the payload: what the slot held there
					good = string(want[:k]) == string(dst[:k])
				}
				if !good {
					res.hardf("reader%d: message %d (header seq %d) is not the one written for it: % x; %v", i, sq, m.Seq, dst[:m.Len], res.log)
				}
				res.log = append(res.log, fmt.Sprintf("@%d reader%d took pos %d topicSeq %d payload %d len %d", s.steps, i, rd.next-1, m.Seq, sq, m.Len))
				if n := len(res.got[i]); n > 0 && sq <= res.got[i][n-1] {
					res.hardf("reader%d: message %d after %d; %v", i, sq, res.got[i][n-1], res.log)
				}
				res.got[i] = append(res.got[i], sq)
				res.lost[i] = rd.Lost()
			}
		})
	}
	if sc.scribble {
		s.add("scribbler", func(a *ilActor) {
			rng := rand.New(rand.NewPCG(seed, 77))
			g := w.g
			for range 3 {
				step()
				v := rng.Uint64N(uint64(sc.msgs) + 3)
				if rng.IntN(4) == 0 {
					v |= ringBusy
				}
				res.log = append(res.log, fmt.Sprintf("@%d scribble", s.steps))
				switch rng.IntN(5) {
				case 0:
					k := 1 + rng.Uint64N(g.slots)
					res.log = append(res.log, fmt.Sprintf("seq of slot for %d := %d", k, v))
					g.slot(k).seq.Store(v)
				case 1:
					k, l := 1+rng.Uint64N(g.slots), uint32(rng.Uint64N(2*ilRingPayload))
					res.log = append(res.log, fmt.Sprintf("length of slot for %d := %d", k, l))
					g.slot(k).length = l
				case 2:
					res.log = append(res.log, fmt.Sprintf("published := %d", v&^ringBusy))
					g.w.published.Store(v &^ ringBusy)
				case 3:
					res.log = append(res.log, fmt.Sprintf("closed := %d", v&1))
					g.hd.closed.Store(v & 1)
				case 4:
					k := rng.Uint64N(g.readers)
					res.log = append(res.log, fmt.Sprintf("cursor %d := %d", k, v&^ringBusy))
					g.reader(k).cursor.Store(v &^ ringBusy)
				}
			}
		})
	}
	s.goRun()
	trace = s.trace
	if len(s.panics) > 0 {
		res.hardf("%v", s.panics)
	}
	if s.hang {
		g := w.g
		var st []string
		for i, rd := range readers {
			if rd != nil {
				st = append(st, fmt.Sprintf("reader%d next %d cursor %d ended %v got %v", i, rd.next, rd.entry.cursor.Load(), rd.ended, res.got[i]))
			}
		}
		var seqs []uint64
		for k := range g.slots {
			seqs = append(seqs, g.slot(k+1).seq.Load())
		}
		res.hardf("hang after %d decisions: wrote %d closed %v retired %v published %d slots %v; %v; last actors %v",
			s.steps, res.wrote, res.closed, w.retired.Load(), g.w.published.Load(), seqs, st, s.trace[len(s.trace)-20:])
	}
	if !w.freed {
		w.Free(true)
	}
	for _, rd := range readers {
		if rd != nil {
			rd.Close()
		}
	}
	if len(s.panics) > 0 || s.hang {
		return res, trace
	}
	for i := range sc.readers {
		if !sc.scribble && res.ended[i] && !(sc.lateOpen && i == 1) && uint64(len(res.got[i]))+res.lost[i] != uint64(sc.msgs) {
			res.hardf("reader%d: received %d (%v) and lost %d of %d", i, len(res.got[i]), res.got[i], res.lost[i], sc.msgs)
		}
		if !sc.scribble && !res.ended[i] {
			res.hardf("reader%d did not see the ring end", i)
		}
	}
	if n := r.inUse(); n != 0 && !sc.scribble {
		res.hardf("%d buffers in use after the run", n)
	}
	return res, trace
}

// inUse counts the buffers in use in every pool.
func (r *Region) inUse() (n int64) {
	for i := range r.pools {
		n += r.pools[i].inUse()
	}
	return n
}

// TestInterleaveSlotRing runs every slot ring scenario under random and PCT schedules.
func TestInterleaveSlotRing(t *testing.T) {
	n := *ilSchedules
	if n <= 0 {
		n = 3000
	}
	base := ilBaseSeed()
	t.Logf("base seed %d (-offq.seed), %d schedules per scenario (-offq.schedules)", base, n)
	for _, sc := range ilRingScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			r, ps, tp := ilRingEnv(t)
			t0 := time.Now()
			for i := range n {
				seed := base + uint64(i)
				strat, _, label := ilStrategyFor(ilScenario{producers: 1, msgs: sc.msgs}, seed, i)
				res, trace := ilRingOnce(t, r, ps, tp, sc, seed, strat)
				if len(res.hard) > 0 {
					t.Fatalf("%s schedule %d (seed %d, %s, %d decisions): %v", sc.name, i+1, seed, label, len(trace), res.hard)
				}
			}
			t.Logf("%s: %d schedules in %v", sc.name, n, time.Since(t0).Round(time.Millisecond))
		})
	}
}
