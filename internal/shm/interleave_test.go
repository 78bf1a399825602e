//go:build offqcheck

package shm

// The interleaving checker: producers, a consumer, a closer and a scribbler run as goroutines
// ("actors") of which exactly one runs at a time. Every shared-memory operation of the inbox
// protocol is preceded by step() (step_on.go), where the running actor asks the scheduler who
// performs the next operation; the scheduler picks an actor by a strategy (random walk, PCT
// priorities, a replayed schedule, or a preemption-bounded exhaustive search), hands it the
// baton and waits for the baton to come back. A schedule is therefore the sequence of actors
// chosen at the decision points, and replaying it replays the run exactly.
//
// After each run the checker verifies, with no actor running: every accepted message was
// received once or dropped as the policy and the counters say, nothing twice, each producer's
// messages in order (and messages whose pushes did not overlap in the order of their pushes);
// every buffer's reference count is exactly the references the ring cells, the consumer's held
// list and the scribbler's victims hold; no error but the expected ones; the ring drains and
// works afterwards. A run that takes more than a bound of decisions is reported as a hang.
//
//	go test -tags offqcheck -run Interleave ./internal/shm                  # the CI-sized run
//	go test -tags offqcheck -run Interleave ./internal/shm -args -offq.schedules=20000
//	go test -tags offqcheck -run InterleaveReplay ./internal/shm -args -offq.replay='...' -offq.iltrace
//	go test -tags offqcheck -run InterleaveDFS ./internal/shm -args -offq.dfsbound=3 -offq.dfsmax=-1

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var (
	ilSchedules = flag.Int("offq.schedules", 0, "interleaving checker: random and PCT schedules per scenario (0: the CI-sized default)")
	ilDFSBound  = flag.Int("offq.dfsbound", 2, "interleaving checker: preemption bound of the exhaustive search")
	ilDFSMax    = flag.Int("offq.dfsmax", 0, "interleaving checker: stop each exhaustive search after this many schedules (0: the CI-sized default, -1: no limit)")
	ilReplay    = flag.String("offq.replay", "", "interleaving checker: replay one schedule, as printed by a failure (scenario:seed:fairSpin:schedule, or @file)")
	ilVerbose   = flag.Bool("offq.iltrace", false, "interleaving checker: log the ring at every decision of a replayed schedule")
	ilSoftFail  = flag.Bool("offq.softfail", false, "interleaving checker: fail on soft findings too (counters that disagree, damage that was not counted)")
)

// ilDefaultSchedules is the CI-sized number of random and PCT schedules per scenario: an
// estimate from the throughput of the scenarios that pass (2,000 to 60,000 schedules a second);
// to be measured again once every scenario passes.
const ilDefaultSchedules = 10000

// ilMaxDecisions bounds one run. A correct run needs a few hundred decisions; an actor that
// spins on another one that the scheduler starves (PCT) needs at most a few thousand per
// bounded wait in the inbox code (foreignSpins turns of a few operations each). A loop that
// only maxTurns (2^20 turns of about five decisions) ends counts as a hang.
const ilMaxDecisions = 200_000

// ---- scenarios

type ilCloseMode int

const (
	ilNoClose       ilCloseMode = iota
	ilConsumerClose             // the consumer closes the inbox at a random point
	ilCloserActor               // another goroutine of the owner closes it while the consumer takes
	ilReopen                    // another goroutine closes it and reopens the entry; stale producers go on
)

// ilKind is a kind of value a scribbler writes into a cell.
type ilKind int

const (
	ilNoScribble   ilKind = iota
	ilWrongLap            // a (bad) handle with the lap parity of the other lap
	ilRightLap            // a bad handle with the cell's own lap parity (the ring cannot tell it from a message)
	ilOtherPos            // an empty marker of this generation for another position
	ilOwnEmpty            // the empty marker of the cell's own position (over a message)
	ilOtherGen            // an empty marker of another generation
	ilClaimed             // a claimed marker of this generation
	ilClaimedOther        // a claimed marker of another generation
	ilRandom              // random bits
	ilPositions           // not a cell: the head or the tail moved far away (repairPositions)
	ilKinds
)

func (k ilKind) String() string {
	return [...]string{"none", "wrong-lap-handle", "right-lap-bad-handle", "empty-other-position",
		"own-empty-marker", "empty-other-generation", "claimed", "claimed-other-generation", "random-bits",
		"positions"}[k]
}

type ilScenario struct {
	name      string
	policy    Overflow
	capacity  int
	producers int
	msgs      int // per producer
	prefill   int // messages producer 0 pushes before the run starts
	consumer  bool
	hold      int // messages the consumer may hold unreleased at once
	close     ilCloseMode
	scribble  ilKind
	sameLoan  bool // producer 0 delivers one loan again and again (a fan-out to one inbox)
	// consumers2: a second goroutine of the owner takes from the inbox too (concurrent
	// Receive on one subscription): neither may count the other's take as corruption.
	consumers2 bool
	// batch: each producer delivers its messages as one batch (pushBatch: runs of cells
	// committed one by one, the tail moved once per run).
	batch bool
	// handoff: producers deliver as a send to one inbox does (handoff.go): each loan's own
	// reference goes to its cell, the owner cleared right before the cell's commit.
	handoff bool
	// takeBatch: the (first) consumer takes as TakeBatch does: after a take at the head, a
	// run of takes past it (takeRun), the head moved every headEvery positions (2 in a ring of
	// 4) and at the end of the run, as many as it may hold.
	takeBatch bool
}

func ilScenarios() []ilScenario {
	var out []ilScenario
	for _, pol := range []Overflow{DropOldest, DropNewest} {
		p := map[Overflow]string{DropOldest: "oldest", DropNewest: "newest"}[pol]
		out = append(out,
			ilScenario{name: p + "/cap2-2x3", policy: pol, capacity: 2, producers: 2, msgs: 3, consumer: true, hold: 2},
			ilScenario{name: p + "/cap2-3x2", policy: pol, capacity: 2, producers: 3, msgs: 2, consumer: true, hold: 1},
			ilScenario{name: p + "/cap4-2x4", policy: pol, capacity: 4, producers: 2, msgs: 4, consumer: true, hold: 3},
			ilScenario{name: p + "/full-ring", policy: pol, capacity: 2, producers: 1, msgs: 4, prefill: 2, consumer: true, hold: 1},
			ilScenario{name: p + "/evict-vs-take", policy: pol, capacity: 2, producers: 2, msgs: 2, prefill: 2, consumer: true, hold: 2},
			ilScenario{name: p + "/no-consumer", policy: pol, capacity: 2, producers: 2, msgs: 3},
			ilScenario{name: p + "/consumer-closes", policy: pol, capacity: 2, producers: 2, msgs: 3, consumer: true, hold: 2, close: ilConsumerClose},
			ilScenario{name: p + "/closer", policy: pol, capacity: 2, producers: 2, msgs: 3, consumer: true, hold: 2, close: ilCloserActor},
			ilScenario{name: p + "/reopen", policy: pol, capacity: 2, producers: 2, msgs: 3, prefill: 1, consumer: true, hold: 1, close: ilReopen},
		)
		for k := ilWrongLap; k < ilKinds; k++ {
			out = append(out, ilScenario{name: p + "/scribble-" + k.String(), policy: pol, capacity: 2, producers: 2, msgs: 3,
				consumer: true, hold: 2, scribble: k})
		}
	}
	out = append(out,
		ilScenario{name: "same-tail/cap4-2x2", policy: DropNewest, capacity: 4, producers: 2, msgs: 2},
		ilScenario{name: "oldest/same-loan", policy: DropOldest, capacity: 2, producers: 2, msgs: 3, consumer: true, hold: 1, sameLoan: true},
		ilScenario{name: "oldest/two-consumers", policy: DropOldest, capacity: 2, producers: 2, msgs: 3, consumer: true, hold: 2, consumers2: true},
		ilScenario{name: "newest/two-consumers", policy: DropNewest, capacity: 2, producers: 2, msgs: 3, consumer: true, hold: 2, consumers2: true},
		ilScenario{name: "oldest/two-consumers-cap4", policy: DropOldest, capacity: 4, producers: 2, msgs: 4, consumer: true, hold: 3, consumers2: true},
	)
	// The batched forms: runs of cells against single pushes, each other, a full ring,
	// closing, reopening and scribbles.
	for _, pol := range []Overflow{DropOldest, DropNewest} {
		p := map[Overflow]string{DropOldest: "oldest", DropNewest: "newest"}[pol]
		out = append(out,
			ilScenario{name: p + "/batch-cap4-2x3", policy: pol, capacity: 4, producers: 2, msgs: 3, consumer: true, hold: 2, batch: true},
			ilScenario{name: p + "/batch-cap2-2x3", policy: pol, capacity: 2, producers: 2, msgs: 3, consumer: true, hold: 1, batch: true},
			ilScenario{name: p + "/batch-full-ring", policy: pol, capacity: 4, producers: 1, msgs: 4, prefill: 2, consumer: true, hold: 1, batch: true},
			ilScenario{name: p + "/batch-no-consumer", policy: pol, capacity: 4, producers: 2, msgs: 3, batch: true},
			ilScenario{name: p + "/batch-closer", policy: pol, capacity: 4, producers: 2, msgs: 3, consumer: true, hold: 2, close: ilCloserActor, batch: true},
			ilScenario{name: p + "/batch-reopen", policy: pol, capacity: 4, producers: 2, msgs: 3, prefill: 1, consumer: true, hold: 1, close: ilReopen, batch: true},
			ilScenario{name: p + "/batch-two-consumers", policy: pol, capacity: 4, producers: 2, msgs: 3, consumer: true, hold: 2, consumers2: true, batch: true},
		)
		out = ilScribbled(out, ilScenario{name: p + "/batch-scribble-", policy: pol, capacity: 4, producers: 2, msgs: 3,
			consumer: true, hold: 2, batch: true})
	}
	// The batched take (ringrun.go): a run of takes past a lagging head, against single and
	// batched pushes, evictions, a second consumer taking one at a time, closing, reopening
	// and scribbles.
	for _, pol := range []Overflow{DropOldest, DropNewest} {
		p := map[Overflow]string{DropOldest: "oldest", DropNewest: "newest"}[pol]
		out = append(out,
			ilScenario{name: p + "/takebatch-cap4-2x3", policy: pol, capacity: 4, producers: 2, msgs: 3, consumer: true, hold: 3, takeBatch: true},
			ilScenario{name: p + "/takebatch-cap8-2x4", policy: pol, capacity: 8, producers: 2, msgs: 4, consumer: true, hold: 6, takeBatch: true},
			ilScenario{name: p + "/takebatch-full-ring", policy: pol, capacity: 4, producers: 1, msgs: 4, prefill: 3, consumer: true, hold: 3, takeBatch: true},
			ilScenario{name: p + "/takebatch-evict-vs-take", policy: pol, capacity: 4, producers: 2, msgs: 3, prefill: 4, consumer: true, hold: 4, takeBatch: true},
			ilScenario{name: p + "/takebatch-batch-cap4-2x3", policy: pol, capacity: 4, producers: 2, msgs: 3, consumer: true, hold: 3, takeBatch: true, batch: true},
			ilScenario{name: p + "/takebatch-handoff-cap4-2x3", policy: pol, capacity: 4, producers: 2, msgs: 3, consumer: true, hold: 3, takeBatch: true, handoff: true},
			ilScenario{name: p + "/takebatch-closer", policy: pol, capacity: 4, producers: 2, msgs: 3, consumer: true, hold: 3, close: ilCloserActor, takeBatch: true},
			ilScenario{name: p + "/takebatch-consumer-closes", policy: pol, capacity: 4, producers: 2, msgs: 3, consumer: true, hold: 3, close: ilConsumerClose, takeBatch: true},
			ilScenario{name: p + "/takebatch-reopen", policy: pol, capacity: 4, producers: 2, msgs: 3, prefill: 1, consumer: true, hold: 3, close: ilReopen, takeBatch: true},
			ilScenario{name: p + "/takebatch-two-consumers", policy: pol, capacity: 4, producers: 2, msgs: 3, consumer: true, hold: 3, consumers2: true, takeBatch: true},
		)
		out = ilScribbled(out, ilScenario{name: p + "/takebatch-scribble-", policy: pol, capacity: 4, producers: 2, msgs: 3,
			consumer: true, hold: 3, takeBatch: true})
	}
	// The hand-off (a send to one inbox): single and batched, against each other, a full
	// ring, evictions, closing, reopening, two consumers and scribbles.
	for _, pol := range []Overflow{DropOldest, DropNewest} {
		p := map[Overflow]string{DropOldest: "oldest", DropNewest: "newest"}[pol]
		out = append(out,
			ilScenario{name: p + "/handoff-cap2-2x3", policy: pol, capacity: 2, producers: 2, msgs: 3, consumer: true, hold: 2, handoff: true},
			ilScenario{name: p + "/handoff-full-ring", policy: pol, capacity: 2, producers: 1, msgs: 4, prefill: 2, consumer: true, hold: 1, handoff: true},
			ilScenario{name: p + "/handoff-evict-vs-take", policy: pol, capacity: 2, producers: 2, msgs: 2, prefill: 2, consumer: true, hold: 2, handoff: true},
			ilScenario{name: p + "/handoff-closer", policy: pol, capacity: 2, producers: 2, msgs: 3, consumer: true, hold: 2, close: ilCloserActor, handoff: true},
			ilScenario{name: p + "/handoff-reopen", policy: pol, capacity: 2, producers: 2, msgs: 3, prefill: 1, consumer: true, hold: 1, close: ilReopen, handoff: true},
			ilScenario{name: p + "/handoff-two-consumers", policy: pol, capacity: 2, producers: 2, msgs: 3, consumer: true, hold: 2, consumers2: true, handoff: true},
			ilScenario{name: p + "/handoff-batch-cap4-2x3", policy: pol, capacity: 4, producers: 2, msgs: 3, consumer: true, hold: 2, batch: true, handoff: true},
			ilScenario{name: p + "/handoff-batch-full-ring", policy: pol, capacity: 4, producers: 1, msgs: 4, prefill: 2, consumer: true, hold: 1, batch: true, handoff: true},
			ilScenario{name: p + "/handoff-batch-closer", policy: pol, capacity: 4, producers: 2, msgs: 3, consumer: true, hold: 2, close: ilCloserActor, batch: true, handoff: true},
			ilScenario{name: p + "/handoff-batch-reopen", policy: pol, capacity: 4, producers: 2, msgs: 3, prefill: 1, consumer: true, hold: 1, close: ilReopen, batch: true, handoff: true},
		)
		out = ilScribbled(out, ilScenario{name: p + "/handoff-scribble-", policy: pol, capacity: 2, producers: 2, msgs: 3,
			consumer: true, hold: 2, handoff: true})
		out = ilScribbled(out, ilScenario{name: p + "/handoff-batch-scribble-", policy: pol, capacity: 4, producers: 2, msgs: 3,
			consumer: true, hold: 2, batch: true, handoff: true})
	}
	return out
}

// ilScribbled appends to out one copy of base per scribble kind that names a plausible
// state (all but random bits), each named base.name followed by the kind.
func ilScribbled(out []ilScenario, base ilScenario) []ilScenario {
	for _, k := range []ilKind{ilWrongLap, ilOwnEmpty, ilOtherPos, ilClaimed, ilPositions} {
		sc := base
		sc.name, sc.scribble = base.name+k.String(), k
		out = append(out, sc)
	}
	return out
}

func ilScenarioByName(name string) (ilScenario, bool) {
	for _, sc := range slices.Concat(ilScenarios(), ilDFSScenarios(), ilReproScenarios()) {
		if sc.name == name {
			return sc, true
		}
	}
	return ilScenario{}, false
}

// ilReproScenarios are the settings of the reproduction tests: producer 0 fills the ring of
// capacity 2 before the run and pushes one message more in it; producer 1 pushes one.
func ilReproScenarios() []ilScenario {
	var out []ilScenario
	for _, pol := range []Overflow{DropOldest, DropNewest} {
		out = append(out, ilScenario{name: "repro/" + pol.String(), policy: pol, capacity: 2, producers: 2, msgs: 1,
			prefill: 2, consumer: true, hold: 2})
	}
	return out
}

// ilDFSScenarios are small enough for the exhaustive search.
func ilDFSScenarios() []ilScenario {
	return []ilScenario{
		{name: "dfs/oldest-2x2-cap2", policy: DropOldest, capacity: 2, producers: 2, msgs: 2, consumer: true, hold: 1},
		{name: "dfs/newest-2x2-cap2", policy: DropNewest, capacity: 2, producers: 2, msgs: 2, consumer: true, hold: 1},
		{name: "dfs/oldest-evict-vs-take", policy: DropOldest, capacity: 2, producers: 1, msgs: 2, prefill: 2, consumer: true, hold: 1},
		{name: "dfs/oldest-consumer-closes", policy: DropOldest, capacity: 2, producers: 2, msgs: 2, consumer: true, hold: 1, close: ilConsumerClose},
		{name: "dfs/oldest-two-consumers", policy: DropOldest, capacity: 2, producers: 1, msgs: 3, consumer: true, hold: 2, consumers2: true},
		{name: "dfs/oldest-batch-2x2-cap2", policy: DropOldest, capacity: 2, producers: 2, msgs: 2, consumer: true, hold: 1, batch: true},
		{name: "dfs/newest-batch-2x2-cap4", policy: DropNewest, capacity: 4, producers: 2, msgs: 2, consumer: true, hold: 1, batch: true},
		{name: "dfs/oldest-handoff-2x2-cap2", policy: DropOldest, capacity: 2, producers: 2, msgs: 2, consumer: true, hold: 1, handoff: true},
		{name: "dfs/newest-handoff-batch-2x2-cap4", policy: DropNewest, capacity: 4, producers: 2, msgs: 2, consumer: true, hold: 1, batch: true, handoff: true},
	}
}

// ---- the scheduler

type ilActor struct {
	id      int
	name    string
	fn      func(a *ilActor)
	wake    chan struct{}
	done    bool
	parked  bool // waits for another actor to take a step
	until   int  // not eligible before this decision (unless nobody else is)
	same    int  // consecutive own decisions that changed nothing watched
	inPush  bool
	sawFull bool
	prio    int
	rng     *rand.Rand
}

type ilAbort struct{}

type ilSched struct {
	run      *ilRun
	actors   []*ilActor
	cur      *ilActor
	steps    int
	strat    ilStrategy
	trace    []int8
	finished chan struct{}
	abort    bool
	hang     bool
	panics   []string
	fairSpin int // park an actor after this many own decisions that changed nothing (0: never)
	lastFP   uint64
	elig     []*ilActor
}

type ilStrategy interface {
	// begin is called once the actors are known.
	begin(s *ilSched)
	// pick chooses among the eligible actors (in id order); cur may be nil or not eligible.
	pick(s *ilSched, eligible []*ilActor) *ilActor
}

func (s *ilSched) add(name string, fn func(a *ilActor)) *ilActor {
	a := &ilActor{id: len(s.actors), name: name, fn: fn, wake: make(chan struct{})}
	a.rng = rand.New(rand.NewPCG(s.run.seed, uint64(a.id)+1))
	s.actors = append(s.actors, a)
	return a
}

// go runs the actors to completion, one step at a time.
func (s *ilSched) goRun() {
	s.finished = make(chan struct{})
	s.strat.begin(s)
	for _, a := range s.actors {
		go s.body(a)
	}
	stepHook = s.step
	first := s.choose()
	s.cur = first
	first.wake <- struct{}{}
	<-s.finished
	stepHook = nil
}

func (s *ilSched) body(a *ilActor) {
	<-a.wake
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(ilAbort); !ok {
				s.panics = append(s.panics, fmt.Sprintf("%s panicked: %v\n%s", a.name, r, debug.Stack()))
				s.abort = true
			}
		}
		if !s.abort {
			s.run.observe(a)
		}
		a.done = true
		next := s.choose()
		if next == nil {
			close(s.finished)
			return
		}
		s.cur = next
		next.wake <- struct{}{}
	}()
	if !s.abort {
		a.fn(a)
	}
}

// step is stepHook: the running actor is about to perform a shared-memory operation.
func (s *ilSched) step() {
	a := s.cur
	if s.abort {
		panic(ilAbort{})
	}
	s.run.observe(a)
	if s.steps >= ilMaxDecisions {
		s.hang = true
		s.abort = true
		panic(ilAbort{})
	}
	next := s.choose()
	if next != a {
		s.cur = next
		next.wake <- struct{}{}
		<-a.wake
		if s.abort {
			panic(ilAbort{})
		}
	}
}

// idle parks the running actor until another one has taken a step: it polled and found
// nothing to do.
func (s *ilSched) idle(a *ilActor) {
	a.parked = true
	s.step()
}

func (s *ilSched) eligible() []*ilActor {
	e := s.elig[:0]
	for _, a := range s.actors {
		if !a.done && !a.parked && s.steps >= a.until {
			e = append(e, a)
		}
	}
	if len(e) == 0 {
		for _, a := range s.actors {
			if !a.done {
				a.parked, a.until = false, 0
				e = append(e, a)
			}
		}
	}
	s.elig = e
	return e
}

func (s *ilSched) choose() *ilActor {
	e := s.eligible()
	if len(e) == 0 {
		return nil
	}
	var next *ilActor
	if s.abort {
		next = e[0]
	} else {
		next = s.strat.pick(s, e)
	}
	s.steps++
	s.trace = append(s.trace, int8(next.id))
	if !s.run.sc.consumers2 {
		for _, a := range s.actors {
			if a != next {
				a.parked = false // next takes a step: whoever waited for one may look again
			}
		}
	}
	return next
}

// ---- strategies

// ilRandomWalk picks uniformly; with sticky > 0 it keeps the running actor with that
// probability (long uninterrupted stretches, and so other interleavings than uniform ones).
type ilRandomWalk struct {
	rng    *rand.Rand
	sticky float64
}

func (w *ilRandomWalk) begin(*ilSched) {}
func (w *ilRandomWalk) pick(s *ilSched, e []*ilActor) *ilActor {
	if w.sticky > 0 && s.cur != nil && slices.Contains(e, s.cur) && w.rng.Float64() < w.sticky {
		return s.cur
	}
	return e[w.rng.IntN(len(e))]
}

// ilPCT is probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010): random distinct
// priorities, the highest-priority eligible actor runs, and at depth-1 random decisions the
// running actor drops below everyone.
type ilPCT struct {
	rng    *rand.Rand
	depth  int
	length int // estimated decisions per run
	change map[int]int
}

func (p *ilPCT) begin(s *ilSched) {
	n := len(s.actors)
	perm := p.rng.Perm(n)
	for i, a := range s.actors {
		a.prio = p.depth + perm[i]
	}
	p.change = map[int]int{}
	for i := 1; i < p.depth; i++ {
		p.change[1+p.rng.IntN(p.length)] = p.depth - i
	}
}

func (p *ilPCT) pick(s *ilSched, e []*ilActor) *ilActor {
	if pr, ok := p.change[s.steps]; ok && s.cur != nil {
		s.cur.prio = pr
	}
	best := e[0]
	for _, a := range e[1:] {
		if a.prio > best.prio {
			best = a
		}
	}
	return best
}

// ilReplayer follows a recorded schedule, then keeps the running actor while it can and
// otherwise takes the lowest id. A forced choice that is not eligible is a divergence.
type ilReplayer struct {
	trace    []int8
	diverged string
}

func (r *ilReplayer) begin(*ilSched) {}
func (r *ilReplayer) pick(s *ilSched, e []*ilActor) *ilActor {
	if s.steps < len(r.trace) {
		for _, a := range e {
			if int8(a.id) == r.trace[s.steps] {
				return a
			}
		}
		if r.diverged == "" {
			r.diverged = fmt.Sprintf("decision %d: actor %d is not eligible", s.steps, r.trace[s.steps])
		}
	}
	return ilDefault(s, e)
}

func ilDefault(s *ilSched, e []*ilActor) *ilActor {
	if s.cur != nil && slices.Contains(e, s.cur) {
		return s.cur
	}
	return e[0]
}

// ilDFS is a preemption-bounded exhaustive search (as in CHESS): a prefix of forced choices,
// then the default (keep the running actor); afterwards the deepest decision with an untried
// alternative within the preemption bound becomes the next prefix.
type ilDFS struct {
	prefix []int8
	bound  int
	rec    []ilDFSPoint
}

type ilDFSPoint struct {
	options  []int8 // default first, then the other eligible actors by id
	chosen   int
	preempts int  // preemptions before this decision
	curElig  bool // the running actor could have gone on
	cur      int8
}

func (d *ilDFS) begin(*ilSched) { d.rec = d.rec[:0] }
func (d *ilDFS) pick(s *ilSched, e []*ilActor) *ilActor {
	def := ilDefault(s, e)
	pt := ilDFSPoint{options: []int8{int8(def.id)}, cur: -1}
	for _, a := range e {
		if a != def {
			pt.options = append(pt.options, int8(a.id))
		}
	}
	if s.cur != nil {
		pt.cur = int8(s.cur.id)
		pt.curElig = slices.Contains(e, s.cur)
	}
	if n := len(d.rec); n > 0 {
		last := d.rec[n-1]
		pt.preempts = last.preempts + last.cost(last.chosen)
	}
	i := len(d.rec)
	if i < len(d.prefix) {
		pt.chosen = slices.Index(pt.options, d.prefix[i])
		if pt.chosen < 0 {
			panic(fmt.Sprintf("exhaustive search: decision %d: actor %d not eligible on replay", i, d.prefix[i]))
		}
	}
	d.rec = append(d.rec, pt)
	id := pt.options[pt.chosen]
	for _, a := range e {
		if int8(a.id) == id {
			return a
		}
	}
	panic("unreachable")
}

func (p ilDFSPoint) cost(j int) int {
	if p.curElig && p.options[j] != p.cur {
		return 1
	}
	return 0
}

// next sets the prefix of the next schedule; false when the search is complete.
func (d *ilDFS) next() bool {
	for i := len(d.rec) - 1; i >= 0; i-- {
		p := d.rec[i]
		for j := p.chosen + 1; j < len(p.options); j++ {
			if p.preempts+p.cost(j) <= d.bound {
				d.prefix = d.prefix[:0]
				for _, q := range d.rec[:i] {
					d.prefix = append(d.prefix, q.options[q.chosen])
				}
				d.prefix = append(d.prefix, p.options[j])
				return true
			}
		}
	}
	return false
}

// ---- one run

// ilEnv is a region with a consumer and producers, reused run after run (every run leaves it
// as it found it: no buffer allocated, nothing held, the inbox entry free).
type ilEnv struct {
	r    *Region
	q    *Participant   // the consumer, owner of the inbox
	ps   []*Participant // producers
	tb   testing.TB
	runs int
	snap []byte // the region as newILEnv left it (see restore)
}

// restore puts the region back as newILEnv left it, and the process's allocation cursors and
// hints where a fresh process starts them, so that the next run starts from the state every
// run of the exhaustive search starts from. A run otherwise begins where the one before it
// ended: the ring's head and tail (and so which cell and which lap parity its first message
// gets), the inbox's generation, the slots' generations, the pool's cursor. Those change how
// many shared-memory steps a run takes, and the search, which replays a prefix of the previous
// run's choices, then found an actor not eligible on replay (-offq.dfsbound=3 on
// dfs/oldest-consumer-closes: the recorded run began at another position than its replay).
// The random schedules keep the carried-over state: it varies the positions and generations
// they meet. A schedule the search prints replays as found (ilReplayOnce starts from a fresh
// region, which is this state).
func (e *ilEnv) restore() {
	copy(e.r.mem, e.snap)
	for i := range e.r.pools {
		p := &e.r.pools[i]
		p.next.Store(0)
		p.lent.Store(0)
		p.scanned.Store(0)
		p.distrust.Store(false)
	}
	for _, p := range append([]*Participant{e.q}, e.ps...) {
		p.held.hint.Store(0)
		p.turn.Store(0)
		p.handoffHint.Store(0)
	}
}

func newILEnv(tb testing.TB) *ilEnv {
	cfg := inboxConfig()
	cfg.Inboxes = 1 // so that a reopen takes the same entry
	r := newUnitRegion(tb, cfg)
	e := &ilEnv{r: r, q: attachUnit(tb, r, "consumer"), tb: tb}
	for i := range 4 {
		e.ps = append(e.ps, attachUnit(tb, r, fmt.Sprint("producer", i)))
	}
	e.snap = append([]byte(nil), r.mem...)
	return e
}

type ilMsg struct {
	producer, seq int
	h             Handle
	inv, resp     int // decisions at the start and end of its push
	err           error
	sawFull       bool
	recv          []int // receipt numbers
}

type ilHeld struct {
	idx int
	h   Handle
}

type ilRun struct {
	ringObs   func(a *ilActor) // set by a slot ring's run: observes instead of the inbox checks
	sc        ilScenario
	env       *ilEnv
	seed      uint64
	s         *ilSched
	in, out   Inbox // the consumer's and the producers' handles on the inbox
	newIn     Inbox // after a reopen
	reopened  bool
	msgs      []*ilMsg
	byKey     map[[2]int]*ilMsg
	nrecv     int
	garbage   int // handles received that name no buffer (scribbled)
	sameRecv  int // receipts of the same-loan producer's messages
	held      []ilHeld
	reserved  int // the consumer's reserved held entry, or -1
	reserved2 int // the second consumer's (consumers2)
	// the producers still pushing
	producersLeft  int
	closeStart     int // decision at which Close began (-1: not closed)
	closeEnd       int
	destroyed      []Handle // references whose only record the scribbler overwrote
	destroyedSwept int      // of those, freed by the sweep (no longer the checker's to release)
	scribbled      string
	errs           []string // unexpected errors seen by actors
	hard, soft     []string
	// observation
	lastDropOld    uint64
	closedCounters [4]uint64 // dropOldest, dropNewest, corrupt, skipped when the closer closed the inbox
	lastTail       uint64
	phantom        bool
	swept          int
	baseCorrupt    uint64
	consumerErrs   []error
}

func (r *ilRun) hardf(format string, args ...any) {
	r.hard = append(r.hard, fmt.Sprintf(format, args...))
}
func (r *ilRun) softf(format string, args ...any) {
	r.soft = append(r.soft, fmt.Sprintf(format, args...))
}

// ilResult is what a run found.
type ilResult struct {
	sc       ilScenario
	seed     uint64
	fairSpin int
	trace    []int8
	steps    int
	hard     []string
	soft     []string
	diverged string // a replay whose forced choice was not possible
}

func (res *ilResult) schedule() string { return ilSchedule(res.sc, res.seed, res.fairSpin, res.trace) }

// ilSchedule formats what -offq.replay takes: scenario:seed:fairSpin:schedule.
func ilSchedule(sc ilScenario, seed uint64, fairSpin int, trace []int8) string {
	return fmt.Sprintf("%s:%d:%d:%s", sc.name, seed, fairSpin, ilEncode(trace))
}

// ilEncode writes a schedule as run lengths: "0*12 2*3 1*5" (actor*decisions).
func ilEncode(trace []int8) string {
	var b strings.Builder
	for i := 0; i < len(trace); {
		j := i
		for j < len(trace) && trace[j] == trace[i] {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d*%d", trace[i], j-i)
		i = j
	}
	return b.String()
}

func ilDecode(s string) ([]int8, error) {
	var out []int8
	for _, f := range strings.Fields(s) {
		a, n, ok := strings.Cut(f, "*")
		if !ok {
			n = "1"
		}
		id, err1 := strconv.Atoi(a)
		k, err2 := strconv.Atoi(n)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("bad schedule element %q", f)
		}
		for range k {
			out = append(out, int8(id))
		}
	}
	return out, nil
}

func ilParseReplay(s string) (sc ilScenario, seed uint64, fairSpin int, trace []int8, err error) {
	if name, ok := strings.CutPrefix(s, "@"); ok { // a long schedule, in a file
		b, err := os.ReadFile(name)
		if err != nil {
			return sc, 0, 0, nil, err
		}
		s = strings.TrimSpace(string(b))
	}
	parts := strings.SplitN(s, ":", 4)
	if len(parts) != 4 {
		return sc, 0, 0, nil, fmt.Errorf("want scenario:seed:fairSpin:schedule")
	}
	sc, ok := ilScenarioByName(parts[0])
	if !ok {
		return sc, 0, 0, nil, fmt.Errorf("no scenario %q", parts[0])
	}
	if seed, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return sc, 0, 0, nil, err
	}
	if fairSpin, err = strconv.Atoi(parts[2]); err != nil {
		return sc, 0, 0, nil, err
	}
	trace, err = ilDecode(parts[3])
	return sc, seed, fairSpin, trace, err
}

var testHookReleaseSweptCount int

// run executes sc once under strat and checks the outcome.
func (e *ilEnv) run(sc ilScenario, seed uint64, strat ilStrategy, fairSpin int) *ilResult {
	e.runs++
	r := &ilRun{sc: sc, env: e, seed: seed, byKey: map[[2]int]*ilMsg{}, reserved: -1, reserved2: -1, closeStart: -1, closeEnd: -1}
	res := &ilResult{sc: sc, seed: seed, fairSpin: fairSpin}
	defer func() { res.hard, res.soft = r.hard, r.soft }()
	reg := e.r
	r.baseCorrupt = reg.hdr.corrupt.Load()
	testHookReleaseSweptCount = 0
	testHookReleaseSwept = func(h Handle) {
		// A release of a handle no producer pushed is of a scribbled word that decoded (an
		// evicting producer takes the oldest cell without checking what it names, and its
		// release finds the generation stale and leaves the buffer alone): not a reference
		// released twice.
		for _, m := range r.msgs {
			if m.h == h {
				testHookReleaseSweptCount++
				return
			}
		}
		if r.sc.scribble == ilNoScribble {
			testHookReleaseSweptCount++ // no scribble: every handle is a pushed one
		}
	}
	defer func() { testHookReleaseSwept = nil }()

	in, err := e.q.OpenInbox(InboxConfig{Capacity: sc.capacity, Overflow: sc.policy})
	if err != nil {
		r.hardf("OpenInbox: %v", err)
		return res
	}
	r.in = in
	r.lastTail = in.v.hdr.tail.Load()
	if r.out, err = reg.inbox(in.ID()); err != nil {
		r.hardf("Region.Inbox: %v", err)
		return res
	}
	for i := range sc.prefill {
		m := r.newMsg(0, i+1)
		if m.err = r.push(e.ps[0], m, nil); m.err != nil {
			r.hardf("prefill push %d: %v", i+1, m.err)
			return res
		}
	}

	s := &ilSched{run: r, strat: strat, fairSpin: fairSpin}
	r.s = s
	for i := range sc.producers {
		r.producersLeft++
		s.add(fmt.Sprint("producer", i), func(a *ilActor) { r.producer(a, i) })
	}
	if sc.consumer {
		s.add("consumer", func(a *ilActor) { r.consumer(a, &r.reserved) })
	}
	if sc.consumers2 {
		s.add("consumer2", func(a *ilActor) { r.consumer(a, &r.reserved2) })
	}
	if sc.close == ilCloserActor || sc.close == ilReopen {
		s.add("closer", r.closer)
	}
	if sc.scribble != ilNoScribble {
		s.add("scribbler", r.scribbler)
	}
	s.goRun()
	res.trace, res.steps = s.trace, s.steps
	if len(s.panics) > 0 {
		r.hardf("%s", strings.Join(s.panics, "\n"))
	}
	if s.hang {
		r.hardf("hang: no end after %d decisions (an actor spins on a state that never changes)", s.steps)
	}
	if len(s.panics) > 0 || s.hang {
		return res // every actor has returned, but the ring is in an unknown state
	}
	r.finish()
	return res
}

func (r *ilRun) newMsg(producer, seq int) *ilMsg {
	m := &ilMsg{producer: producer, seq: seq, inv: -1, resp: -1}
	r.msgs = append(r.msgs, m)
	if !(r.sc.sameLoan && producer == 0) {
		r.byKey[[2]int{producer, seq}] = m
	}
	return m
}

// push is the publisher's side of a delivery, as send does it: odd sequence numbers go
// through Push with a reference added beforehand, even ones through Deliver. With loan set,
// that buffer is delivered (the same-loan producer) and the loan is kept.
func (r *ilRun) push(p *Participant, m *ilMsg, loan *Buffer) error {
	reg := r.env.r
	var b Buffer
	if loan != nil {
		b = *loan
	} else {
		var err error
		if b, err = p.alloc(8); err != nil {
			return err
		}
		b.SetMeta(Meta{Len: 8, Topic: uint32(m.producer), Seq: uint64(m.seq)})
	}
	m.h = b.Handle()
	var err error
	if r.sc.handoff && loan == nil {
		w := p.takeHandoff(m.h)
		if w == nil {
			return fmt.Errorf("no hand-off word free")
		}
		err = r.out.push(context.Background(), m.h, b.s, p.owner)
		giveHandoff(w)
		if err == nil {
			return nil // the loan ended into the cell
		}
	} else if m.seq%2 == 1 && loan == nil {
		if err = reg.addRefsHandle(m.h, 1); err != nil {
			return err
		}
		if err = r.out.pushHandle(context.Background(), m.h); err != nil {
			if rerr := reg.release(m.h); rerr != nil {
				r.errs = append(r.errs, fmt.Sprintf("release after a failed push: %v", rerr))
			}
		}
	} else {
		err = r.out.deliverBuffer(context.Background(), b)
	}
	if loan == nil {
		if uerr := p.unloan(m.h); uerr != nil {
			r.errs = append(r.errs, fmt.Sprintf("unloan %v: %v", m.h, uerr))
		}
	}
	return err
}

func (r *ilRun) producer(a *ilActor, i int) {
	defer func() { r.producersLeft-- }()
	p := r.env.ps[i]
	first := 1
	if i == 0 {
		first += r.sc.prefill
	}
	var loan *Buffer
	if r.sc.sameLoan && i == 0 {
		b, err := p.alloc(8)
		if err != nil {
			r.errs = append(r.errs, fmt.Sprintf("alloc: %v", err))
			return
		}
		b.SetMeta(Meta{Len: 8, Topic: 0, Seq: 0})
		loan = &b
		defer func() {
			if err := p.unloan(b.Handle()); err != nil {
				r.errs = append(r.errs, fmt.Sprintf("unloan: %v", err))
			}
		}()
	}
	if r.sc.batch && !(r.sc.sameLoan && i == 0) {
		r.pushBatch(a, p, i, first)
		return
	}
	for seq := first; seq < first+r.sc.msgs; seq++ {
		m := r.newMsg(i, seq)
		a.inPush, a.sawFull = true, false
		m.inv = r.s.steps
		m.err = r.push(p, m, loan)
		m.resp = r.s.steps
		m.sawFull = a.sawFull
		a.inPush = false
	}
}

// pushBatch is producer i's side of a batched send: its messages loaned, delivered as one
// batch (each with the loan's reference added as its cell commits), and the loans ended.
func (r *ilRun) pushBatch(a *ilActor, p *Participant, i, first int) {
	var ms []*ilMsg
	var hs []Handle
	var ss []*slotHeader
	for seq := first; seq < first+r.sc.msgs; seq++ {
		m := r.newMsg(i, seq)
		b, err := p.alloc(8)
		if err != nil {
			m.err = err
			r.errs = append(r.errs, fmt.Sprintf("alloc: %v", err))
			return
		}
		b.SetMeta(Meta{Len: 8, Topic: uint32(i), Seq: uint64(seq)})
		m.h = b.Handle()
		ms, hs, ss = append(ms, m), append(hs, b.h), append(ss, b.s)
	}
	errs := make([]error, len(ms))
	a.inPush, a.sawFull = true, false
	inv := r.s.steps
	if r.sc.handoff {
		w := p.takeHandoff(hs[0])
		if w == nil {
			r.errs = append(r.errs, "no hand-off word free")
			return
		}
		r.out.pushBatch(context.Background(), hs, ss, errs, p.owner, w)
		giveHandoff(w)
	} else {
		r.out.pushBatch(context.Background(), hs, ss, errs, 0, nil)
	}
	for j, m := range ms {
		m.inv, m.resp, m.err, m.sawFull = inv, r.s.steps, errs[j], a.sawFull
	}
	a.inPush = false
	for _, m := range ms {
		if r.sc.handoff && m.err == nil {
			continue // ended into its cell
		}
		if uerr := p.unloan(m.h); uerr != nil {
			r.errs = append(r.errs, fmt.Sprintf("unloan %v: %v", m.h, uerr))
		}
	}
}

func (r *ilRun) consumer(a *ilActor, reserved *int) {
	q := r.env.q
	closeAt := -1
	if r.sc.close == ilConsumerClose && reserved == &r.reserved {
		closeAt = a.rng.IntN(r.sc.producers*r.sc.msgs + 3)
	}
	for polls := 0; ; polls++ {
		if polls == closeAt {
			r.closeStart = r.s.steps
			if err := r.in.close(); err != nil {
				r.errs = append(r.errs, fmt.Sprintf("Close: %v", err))
			}
			r.closeEnd = r.s.steps
		}
		if *reserved < 0 {
			idx, err := q.reserve()
			if err != nil {
				r.errs = append(r.errs, fmt.Sprintf("Reserve: %v", err))
				return
			}
			*reserved = idx
		}
		done := r.producersLeft == 0
		h, ok, err := r.in.tryPopInto(q, *reserved)
		if err != nil {
			r.consumerErrs = append(r.consumerErrs, err)
			return
		}
		if ok {
			r.received(h, *reserved)
			*reserved = -1
			if r.sc.takeBatch && reserved == &r.reserved {
				if err := r.takeRun(reserved); err != nil {
					r.consumerErrs = append(r.consumerErrs, err)
					return
				}
			}
			for len(r.held) > 0 && (len(r.held) >= r.sc.hold || a.rng.IntN(2) == 0) {
				r.unhold(0)
			}
			continue
		}
		if done {
			return
		}
		r.s.idle(a)
	}
}

// takeRun goes on from the take at the head that the consumer just made as TakeBatchInto
// does (takeRun in ringrun.go), while it may hold more, and ends the run. reserved is where
// the consumer keeps a reserved entry (given back here when the run stops).
func (r *ilRun) takeRun(reserved *int) error {
	q := r.env.q
	run := r.in.startRun()
	defer run.end()
	for len(r.held) < r.sc.hold {
		idx, err := q.reserve()
		if err != nil {
			return fmt.Errorf("Reserve: %w", err)
		}
		h, ok, err := run.next(q.held.word(uint32(idx)), uint64(idx))
		if err != nil || !ok {
			q.unreserve(idx)
			return err
		}
		r.received(h, idx)
	}
	return nil
}

// received records a handle the consumer took into held entry idx.
func (r *ilRun) received(h Handle, idx int) {
	b, err := r.env.r.buffer(h)
	if err != nil {
		if r.sc.scribble == ilNoScribble {
			r.hardf("received %v, which names no live buffer: %v", h, err)
		}
		// As Participant.accept does: the entry forgets the handle (it names no reference of
		// ours: releasing it would drop someone else's, or find the buffer free) and is given
		// back.
		r.env.q.forget(idx)
		r.env.q.unreserve(idx)
		r.garbage++
		return
	}
	r.held = append(r.held, ilHeld{idx, h})
	m := b.Meta()
	if r.sc.sameLoan && m.Topic == 0 {
		r.sameRecv++
		r.nrecv++
		return
	}
	msg := r.byKey[[2]int{int(m.Topic), int(m.Seq)}]
	if msg == nil || msg.h != h {
		r.hardf("received %v with meta %+v: no such message was pushed", h, m)
		return
	}
	msg.recv = append(msg.recv, r.nrecv)
	r.nrecv++
}

// unhold releases the consumer's i-th held message, after checking that its buffer is still
// the one it received (a reference released under the consumer's feet shows here).
func (r *ilRun) unhold(i int) {
	hd := r.held[i]
	r.held = slices.Delete(r.held, i, i+1)
	reg := r.env.r
	if b, err := reg.buffer(hd.h); err == nil {
		if m := b.Meta(); !(r.sc.sameLoan && m.Topic == 0) {
			if msg := r.byKey[[2]int{int(m.Topic), int(m.Seq)}]; msg == nil || msg.h != hd.h {
				r.hardf("held buffer %v changed under the consumer: meta %+v", hd.h, m)
			}
		}
	} else if r.sc.scribble == ilNoScribble {
		r.hardf("held buffer %v was freed under the consumer: %v", hd.h, err)
	}
	if err := r.env.q.unhold(hd.idx, hd.h); err != nil {
		if r.sc.scribble == ilNoScribble || !errors.Is(err, ErrBadHandle) {
			r.hardf("Unhold(%d, %v): %v", hd.idx, hd.h, err)
		}
	}
}

func (r *ilRun) closer(a *ilActor) {
	// Wait a random number of decisions, then close (and perhaps reopen) the inbox.
	a.until = r.s.steps + a.rng.IntN(40*r.sc.producers*r.sc.msgs)
	r.s.idle(a)
	r.closeStart = r.s.steps
	if err := r.in.close(); err != nil {
		r.errs = append(r.errs, fmt.Sprintf("Close: %v", err))
	}
	r.closeEnd = r.s.steps
	hd := r.in.v.hdr
	r.closedCounters = [4]uint64{hd.dropOldest.Load(), hd.dropNewest.Load(), hd.corrupt.Load(), hd.skipped.Load()}
	if r.sc.close == ilReopen { // OpenInbox resets the counters
		in, err := r.env.q.OpenInbox(InboxConfig{Capacity: r.sc.capacity, Overflow: r.sc.policy})
		if err != nil {
			r.errs = append(r.errs, fmt.Sprintf("reopen: %v", err))
			return
		}
		r.newIn, r.reopened = in, true
	}
}

func (r *ilRun) scribbler(a *ilActor) {
	a.until = r.s.steps + a.rng.IntN(30*r.sc.producers*r.sc.msgs)
	r.s.idle(a)
	in := &r.in
	hd := in.v.hdr
	head, tail := hd.head.Load(), hd.tail.Load()
	if r.sc.scribble == ilPositions {
		d := []int64{1 << 30, -(1 << 30), 1<<20 + 3, -(1 << 20) - 5, 5 * int64(in.cap)}[a.rng.IntN(5)]
		w, what := &hd.head, "head"
		if a.rng.IntN(2) == 0 {
			w, what = &hd.tail, "tail"
		}
		step()
		old := w.Load()
		w.Store(uint64(int64(old) + d))
		r.scribbled = fmt.Sprintf("%s %d moved by %d (head %d, tail %d)", what, old, d, head, tail)
		return
	}
	var pos uint64 // the position whose cell is hit
	switch a.rng.IntN(4) {
	case 0, 1:
		pos = head
	case 2:
		pos = tail
	default:
		pos = head + uint64(a.rng.IntN(int(in.cap)))
	}
	var v uint64
	bad := uint64(makeHandle(handleClassMask, handleIdxMask, 1)) // a class the region lacks: no pool's buffer
	switch k := r.sc.scribble; k {
	case ilWrongLap:
		v = bad | in.parity(pos+in.cap)
	case ilRightLap:
		v = bad | in.parity(pos)
	case ilOtherPos:
		d := []int64{1, -1, 3, int64(in.cap), -int64(in.cap), 2 * int64(in.cap)}[a.rng.IntN(6)]
		v = in.empty(uint64(int64(pos) + d))
	case ilOwnEmpty:
		v = in.empty(pos)
	case ilOtherGen:
		v = markBit | ((in.gen+1+uint64(a.rng.IntN(3)))&cellGenMask)<<48 | pos&posMask
	case ilClaimed:
		v = in.claimed(uint64(a.rng.IntN(4)), uint64(a.rng.IntN(4)))
	case ilClaimedOther:
		v = markBit | parityBit | ((in.gen+1)&cellGenMask)<<48 | uint64(a.rng.IntN(4))
	case ilRandom:
		v = a.rng.Uint64()
	}
	step()
	old := in.cell(pos).Swap(v)
	r.scribbled = fmt.Sprintf("cell of position %d (head %d, tail %d): %#x over %#x", pos, head, tail, v, old)
	if old&markBit == 0 {
		if _, err := r.env.r.buffer(Handle(old &^ parityBit)); err == nil {
			r.destroyed = append(r.destroyed, Handle(old&^parityBit))
		}
	}
}

// observe runs at every decision: a, which ran since the last one, may have changed the ring.
func (r *ilRun) observe(a *ilActor) {
	if r.ringObs != nil {
		r.ringObs(a) // a slot ring's run (interleave_ring_test.go)
		return
	}
	s := r.s
	in := &r.in
	hd := in.v.hdr
	fp := hd.head.Load()*31 + hd.tail.Load() + uint64(r.producersLeft)<<40
	fp = fp*31 + hd.state.Load()
	occ := 0
	for i := range in.cap {
		v := in.cell(i).Load()
		fp = fp*31 + v
		if v&markBit == 0 || (v&parityBit != 0 && v&cellGenBits == in.tag) {
			occ++
		}
	}
	for _, c := range []*atomic.Uint64{&hd.dropOldest, &hd.dropNewest, &hd.corrupt, &hd.skipped} {
		fp = fp*31 + c.Load()
	}
	for i := range r.env.q.held.n {
		fp = fp*31 + r.env.q.held.word(i).Load()
	}
	if ilTraceLog != nil {
		name := "-"
		if a != nil {
			name = a.name
		}
		var cells []string
		for i := range in.cap {
			cells = append(cells, ilCell(in, in.cell(i).Load()))
		}
		var held []string
		for i := range r.env.q.held.n {
			if w := r.env.q.held.word(i).Load(); w != 0 {
				held = append(held, fmt.Sprintf("%d:%#x", i, w))
			}
		}
		ilTraceLog(fmt.Sprintf("%5d after %-10s head %d tail %d cells [%s] held [%s] state %#x dropOld %d corrupt %d",
			s.steps, name, hd.head.Load(), hd.tail.Load(), strings.Join(cells, " "), strings.Join(held, " "),
			hd.state.Load(), hd.dropOldest.Load(), hd.corrupt.Load()))
	}
	// The tail moves past a position only once it was filled, and a filled cell never again
	// reads empty for that position: a tail past a cell still empty for its position is a
	// position skipped without a message (no scribble, the ring open).
	if t := hd.tail.Load(); t > r.lastTail && r.sc.scribble == ilNoScribble && r.closeStart < 0 {
		for pos := max(r.lastTail, t-min(t, in.cap)); pos < t; pos++ {
			if in.cell(pos).Load() == in.empty(pos) && !r.phantom {
				r.phantom = true
				name := "?"
				if a != nil {
					name = a.name
				}
				r.hardf("%s moved the tail past position %d at decision %d, but no message was ever put there (head %d)",
					name, pos, s.steps, hd.head.Load())
			}
		}
		r.lastTail = t
	}
	if uint64(occ) >= in.cap {
		for _, b := range s.actors {
			if b.inPush {
				b.sawFull = true
			}
		}
	}
	if d := hd.dropOldest.Load(); d != r.lastDropOld {
		if a != nil && a.inPush && !a.sawFull && r.sc.scribble == ilNoScribble && r.closeStart < 0 {
			r.hardf("%s evicted a message at decision %d, but the ring was never full during its push", a.name, s.steps)
		}
		r.lastDropOld = d
	}
	if r.sc.consumers2 && fp != s.lastFP {
		// Two consumers that poll an empty ring would wake each other for ever while a
		// producer of lower priority (PCT) never runs: with them, an actor that found nothing
		// to do waits until something it watches changes (or until nobody else can run).
		for _, b := range s.actors {
			if b != a {
				b.parked = false
			}
		}
	}
	if s.fairSpin > 0 && a != nil {
		if fp == s.lastFP {
			if a.same++; a.same >= s.fairSpin {
				a.parked, a.same = true, 0
			}
		} else {
			a.same = 0
		}
	}
	s.lastFP = fp
}

// ilTraceLog, when set, receives a line per decision (-offq.iltrace).
var ilTraceLog func(string)

// ilCell formats a cell value for the trace.
func ilCell(in *Inbox, v uint64) string {
	gen := cellGen(v)
	g := ""
	if gen != in.gen&cellGenMask {
		g = fmt.Sprintf("/gen%d", gen)
	}
	switch {
	case v&markBit == 0:
		return fmt.Sprintf("H(%#x,p%d)", Handle(v&^parityBit).slot(), v>>62&1)
	case v&parityBit == 0:
		return fmt.Sprintf("E(%d%s)", v&posMask, g)
	default:
		return fmt.Sprintf("C(%d@%d%s)", v&claimedIdxMask, (v>>16)&claimedPosMask, g)
	}
}

// finish checks a run whose actors have all returned.
func (r *ilRun) finish() {
	reg := r.env.r
	in := &r.in
	hd := in.v.hdr
	sc := r.sc
	scribbled := sc.scribble != ilNoScribble
	for _, e := range r.errs {
		r.hardf("%s", e)
	}
	closed := r.closeStart >= 0

	// Errors the producers saw.
	accepted, fullErrs := 0, 0
	for _, m := range r.msgs {
		switch {
		case m.err == nil:
			accepted++
			if closed && m.inv > r.closeEnd && !r.reopened {
				r.hardf("push of %d/%d started after Close returned and succeeded", m.producer, m.seq)
			}
		case errors.Is(m.err, ErrClosed) && closed && m.resp >= r.closeStart:
		case errors.Is(m.err, ErrFull) && (sc.policy == DropNewest || errors.Is(m.err, errClaimed)):
			// Under DropOldest, a full ring whose oldest message a slow consumer is still
			// taking drops the new message instead (errClaimed, counted as newest).
			fullErrs++
			if !m.sawFull && !scribbled && m.inv >= 0 {
				r.hardf("push of %d/%d failed with ErrFull, but the ring was never full during it", m.producer, m.seq)
			}
		case errors.Is(m.err, ErrCorrupt) && scribbled:
		default:
			r.hardf("push of %d/%d (decisions %d-%d): unexpected error %v", m.producer, m.seq, m.inv, m.resp, m.err)
		}
	}
	for _, err := range r.consumerErrs {
		switch {
		case errors.Is(err, ErrClosed) && closed:
		case errors.Is(err, ErrCorrupt) && scribbled:
		default:
			r.hardf("consumer: unexpected error %v", err)
		}
	}

	// With nobody running, every allocated buffer's references are exactly those the records
	// hold: ring cells, the consumer's held entries, and the scribbler's victims.
	if scribbled {
		// A scribble that looks like a legal state (an empty marker of a plausible
		// position) can lose a message and leave its reference in no record; the reapers'
		// sweep (Region.Reap) frees those. Sweep twice, as two reaps would, and count.
		// The scribbler's victims are references of that kind too: those the sweep frees
		// are no longer the checker's to release.
		reg := r.env.r
		if n := reg.sweep() + reg.sweep(); n > 0 {
			r.swept += n
			kept := r.destroyed[:0]
			for _, h := range r.destroyed {
				if b, err := reg.buffer(h); err == nil && b.Refs() > 0 {
					kept = append(kept, h)
				}
			}
			if lost := n - (len(r.destroyed) - len(kept)); lost > 0 {
				r.softf("scribble %s: %d lost references freed by the sweep", r.sc.scribble, lost)
			}
			r.destroyedSwept += len(r.destroyed) - len(kept)
			r.destroyed = kept
		}
	}
	r.checkRefs("at the end of the run")
	if len(r.hard) > 0 {
		return
	}

	// Drain what is left, then check that the ring is empty and still works.
	ring := r.in
	if r.reopened {
		ring = r.newIn
	}
	if !closed || r.reopened {
		for range 4*sc.capacity + 8 {
			if r.reserved < 0 {
				idx, err := r.env.q.reserve()
				if err != nil {
					r.hardf("Reserve: %v", err)
					return
				}
				r.reserved = idx
			}
			h, ok, err := ring.tryPopInto(r.env.q, r.reserved)
			if err != nil {
				if !(scribbled && errors.Is(err, ErrCorrupt)) {
					r.hardf("draining: %v", err)
				}
				continue
			}
			if !ok {
				break
			}
			if r.reopened {
				r.hardf("a stale producer's message %v reached the reopened ring", h)
			}
			r.received(h, r.reserved)
			r.reserved = -1
		}
		for i := range ring.cap {
			v := ring.cell(i).Load()
			if _, err := reg.buffer(Handle(v &^ parityBit)); v&markBit == 0 && (!scribbled || err == nil) {
				if sc.scribble == ilOtherPos || sc.scribble == ilOwnEmpty || sc.scribble == ilPositions {
					// The loss tolerated below (a position filled behind the head): the
					// next lap repairs the cell, counting it, and the sweep frees the buffer.
					r.softf("scribble %s: a message stranded behind the head", sc.scribble)
					continue
				}
				r.hardf("after draining, cell %d still holds %#x (head %d, tail %d): a message is stranded",
					i, v, ring.v.hdr.head.Load(), ring.v.hdr.tail.Load())
			}
		}
		r.statsCheck(accepted)
		// The ring works: a message goes through.
		p := r.env.ps[0]
		okOnce := false
		for try := 0; try < 3 && !okOnce; try++ {
			m := &ilMsg{producer: 9, seq: 1}
			saved := r.out
			r.out = ring
			err := r.push(p, m, nil)
			r.out = saved
			if err != nil {
				if !(scribbled && errors.Is(err, ErrCorrupt)) {
					r.hardf("push after the run: %v", err)
				}
				continue
			}
			if r.reserved < 0 {
				r.reserved, _ = r.env.q.reserve()
			}
			h, ok, err := ring.tryPopInto(r.env.q, r.reserved)
			if err != nil || !ok || h != m.h {
				r.hardf("pop after the run: %v %v %v, want %v", h, ok, err, m.h)
				break
			}
			r.reserved = -1
			if err := r.env.q.unhold(indexOfHeld(r.env.q, h), h); err != nil {
				r.hardf("unhold after the run: %v", err)
			}
			okOnce = true
		}
		if !okOnce && !scribbled {
			r.hardf("the ring does not work after the run")
		}
	}
	if r.reserved >= 0 {
		r.env.q.unreserve(r.reserved)
		r.reserved = -1
	}
	if r.reserved2 >= 0 {
		r.env.q.unreserve(r.reserved2)
		r.reserved2 = -1
	}
	for len(r.held) > 0 {
		r.unhold(0)
	}
	if err := ring.close(); err != nil {
		r.hardf("Close: %v", err)
	}
	if r.reopened {
		r.in.close() // no-op: already closed
	}
	if n := allocated(reg); n != len(r.destroyed) {
		r.hardf("%d buffers allocated after Close, want %d (the scribbler's victims)", n, len(r.destroyed))
	}
	for _, h := range r.destroyed {
		if err := reg.release(h); err != nil {
			r.hardf("releasing the scribbled reference %v: %v", h, err)
		}
	}
	if n := allocated(reg); n != 0 {
		r.hardf("%d buffers allocated at the end", n)
		r.leakFree()
	}
	if testHookReleaseSweptCount != 0 {
		r.hardf("%d releases found their buffer already free (a reference released twice)", testHookReleaseSweptCount)
	}
	if n := r.env.q.Held(); n != 0 {
		r.hardf("the consumer's held list has %d entries in use at the end", n)
	}

	// Messages.
	notReceived := 0
	last := map[int]int{}
	for _, m := range r.msgs {
		if len(m.recv) > 1 {
			r.hardf("message %d/%d received %d times", m.producer, m.seq, len(m.recv))
		}
		if len(m.recv) > 0 && m.err != nil {
			r.hardf("message %d/%d received, but its push failed: %v", m.producer, m.seq, m.err)
		}
		if m.err == nil && len(m.recv) == 0 && !(sc.sameLoan && m.producer == 0) {
			notReceived++
		}
	}
	if sc.sameLoan {
		n := 0
		for _, m := range r.msgs {
			if m.producer == 0 && m.err == nil {
				n++
			}
		}
		notReceived += n - r.sameRecv
		if r.sameRecv > n {
			r.hardf("the same-loan producer's messages were received %d times, %d were accepted", r.sameRecv, n)
		}
	}
	ordered := slices.Clone(r.msgs)
	ordered = slices.DeleteFunc(ordered, func(m *ilMsg) bool { return len(m.recv) == 0 })
	sort.Slice(ordered, func(i, j int) bool { return ordered[i].recv[0] < ordered[j].recv[0] })
	if sc.consumers2 || sc.scribble == ilPositions {
		// Two consumers receive in no particular order between them; a message that was in
		// the ring when its head or tail was scribbled may come after later ones (or not at
		// all) once the positions are put back.
		ordered = nil
	}
	for _, m := range ordered {
		if l, ok := last[m.producer]; ok && m.seq <= l {
			r.hardf("producer %d: message %d received after %d", m.producer, m.seq, l)
		}
		last[m.producer] = m.seq
	}
	for i, a := range ordered {
		for _, b := range ordered[:i] { // b was received before a
			if a.resp >= 0 && a.resp <= b.inv {
				r.hardf("message %d/%d (pushed in decisions %d-%d) received after %d/%d (pushed in %d-%d)",
					a.producer, a.seq, a.inv, a.resp, b.producer, b.seq, b.inv, b.resp)
			}
		}
	}
	dropOld := int(hd.dropOldest.Load())
	dropNew := hd.dropNewest.Load()
	corrupt := hd.corrupt.Load() + reg.hdr.corrupt.Load() - r.baseCorrupt
	if r.reopened {
		// The counters of the closed generation, as the closer saw them; stale producers
		// may have counted into the new generation's since.
		c := r.closedCounters
		dropOld, dropNew = int(c[0]+hd.dropOldest.Load()), c[1]+hd.dropNewest.Load()
		corrupt += c[2]
	}
	switch {
	case scribbled:
		destroyed := len(r.destroyed) + r.destroyedSwept
		if sc.scribble == ilPositions {
			// The messages in the ring when the head or tail moved may be lost (they are
			// behind the position put back, or their cells are repaired by the next lap).
			destroyed += sc.capacity + 1
		}
		if sc.scribble == ilOtherPos || sc.scribble == ilOwnEmpty {
			// An empty marker of a plausible position written where the position is done can
			// make a producer (whose tail lags) fill a position the consumer has passed:
			// that message is lost too, and counted as corrupt when the next lap finds it.
			// Telling such a marker from a true one would cost a read of the head on every
			// push; the scribble is hostile data the ring cannot tell from a legal state.
			destroyed++
		}
		if notReceived > dropOld+destroyed+btoi(closed)*sc.capacity {
			r.hardf("%d messages not received; %d evicted, %d destroyed by the scribble (%s)", notReceived, dropOld, destroyed, r.scribbled)
		}
		if (notReceived > dropOld || r.garbage > 0) && corrupt == 0 && r.garbage == 0 {
			r.softf("scribble %s: %d messages lost (%d evicted), nothing counted as corrupt (%s)", sc.scribble, notReceived, dropOld, r.scribbled)
		}
	case closed:
		if notReceived < dropOld || notReceived > dropOld+sc.capacity+1 {
			r.hardf("%d messages not received, %d evicted: Close dropped %d", notReceived, dropOld, notReceived-dropOld)
		}
		if corrupt != 0 {
			r.softf("no scribble, yet %d corruption counted", corrupt)
		}
	default:
		if notReceived != dropOld {
			r.hardf("%d accepted messages not received, but %d evicted", notReceived, dropOld)
		}
		if corrupt != 0 && sc.consumers2 {
			r.hardf("no scribble, yet %d corruption counted (inbox %d, skipped %d): a take in progress was taken for damage",
				corrupt, hd.corrupt.Load(), hd.skipped.Load())
		} else if corrupt != 0 {
			r.softf("no scribble, yet %d corruption counted (inbox %d, skipped %d)", corrupt, hd.corrupt.Load(), hd.skipped.Load())
		}
	}
	if int(dropNew) != fullErrs {
		r.softf("DropNewest counter %d, %d pushes failed with ErrFull", dropNew, fullErrs)
	}
}

// statsCheck compares InboxStats with what the run did (before the ring is closed).
func (r *ilRun) statsCheck(accepted int) {
	if r.sc.scribble != ilNoScribble || r.closeStart >= 0 || r.sc.sameLoan {
		return
	}
	st, ok := statsOf(r.env.r, r.in.ID())
	if !ok {
		r.hardf("InboxStats does not list the inbox")
		return
	}
	if int(st.Pushed) != accepted {
		r.softf("InboxStats.Pushed %d, %d pushes accepted", st.Pushed, accepted)
	}
	if int(st.Popped) != r.nrecv {
		r.softf("InboxStats.Popped %d, %d messages received", st.Popped, r.nrecv)
	}
	if st.Depth != 0 {
		r.softf("InboxStats.Depth %d after draining", st.Depth)
	}
}

// checkRefs compares every allocated buffer's reference count with the records.
func (r *ilRun) checkRefs(when string) {
	reg := r.env.r
	want := map[Handle]int{}
	rings := []Inbox{r.in}
	if r.reopened {
		rings = []Inbox{r.newIn}
	}
	for _, ring := range rings {
		for i := range ring.cap {
			if v := ring.cell(i).Load(); v&markBit == 0 {
				want[Handle(v&^parityBit)]++
			}
		}
	}
	q := r.env.q
	heldWords := map[Handle]int{}
	for i := range q.held.n {
		w := q.held.word(i).Load()
		switch {
		case w == 0 || w == heldReserved:
		case w&(heldReserved|heldPending) != 0:
			r.hardf("%s: held entry %d is %#x (a take left half done)", when, i, w)
		default:
			want[Handle(w)]++
			heldWords[Handle(w)]++
		}
	}
	mine := map[Handle]int{}
	for _, hd := range r.held {
		mine[hd.h]++
	}
	if fmt.Sprint(mine) != fmt.Sprint(heldWords) {
		r.hardf("%s: the consumer's held list %v, what it received and holds %v", when, heldWords, mine)
	}
	for _, h := range r.destroyed {
		want[h]++
	}
	for pi := range reg.pools {
		p := &reg.pools[pi]
		for j := range p.count {
			v := p.slot(j).state.Load()
			if stateRefs(v) == 0 {
				continue
			}
			h := p.handle(j, stateGen(v))
			if stateOwner(v) != 0 && !(r.sc.sameLoan) {
				r.hardf("%s: buffer %v is still on loan", when, h)
			}
			n := want[h]
			if r.sc.sameLoan && stateOwner(v) != 0 {
				n++ // the same-loan producer's loan ended after its last push; not yet here
			}
			if int(stateRefs(v)) != n {
				r.hardf("%s: buffer %v has %d references, the records hold %d", when, h, stateRefs(v), n)
			}
			delete(want, h)
		}
	}
	for h, n := range want {
		if _, err := reg.buffer(h); err != nil && n > 0 && r.sc.scribble == ilNoScribble {
			r.hardf("%s: %d records name %v, which is not allocated: %v", when, n, h, err)
		}
	}
}

// leakFree frees whatever a failed run left allocated, so that the environment can go on.
func (r *ilRun) leakFree() {
	reg := r.env.r
	for pi := range reg.pools {
		p := &reg.pools[pi]
		for j := range p.count {
			s := p.slot(j)
			for {
				v := s.state.Load()
				if stateRefs(v) == 0 {
					break
				}
				h := p.handle(j, stateGen(v))
				if stateOwner(v) != 0 {
					reg.unloan(stateOwner(v), h)
				} else {
					reg.release(h)
				}
			}
		}
	}
}

func indexOfHeld(p *Participant, h Handle) int {
	for i := range p.held.n {
		if p.held.word(i).Load() == uint64(h) {
			return int(i)
		}
	}
	return -1
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ---- the tests

// ilStats sums up the runs of one scenario.
type ilStats struct {
	runs, decisions, maxDecisions int
	soft                          map[string]*ilSoft
}

type ilSoft struct {
	n       int
	example string
	sched   string
}

func (st *ilStats) add(res *ilResult) {
	st.runs++
	st.decisions += res.steps
	st.maxDecisions = max(st.maxDecisions, res.steps)
	for _, f := range res.soft {
		k := ilNormalize(f)
		if st.soft == nil {
			st.soft = map[string]*ilSoft{}
		}
		if st.soft[k] == nil {
			st.soft[k] = &ilSoft{example: f, sched: res.schedule()}
		}
		st.soft[k].n++
	}
}

// ilNormalize replaces numbers by N, so that findings of one kind add up.
func ilNormalize(s string) string {
	var b strings.Builder
	digits := false
	for _, c := range s {
		if c >= '0' && c <= '9' || digits && (c >= 'a' && c <= 'f' || c == 'x') {
			if !digits {
				b.WriteByte('N')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteRune(c)
	}
	return b.String()
}

func (st *ilStats) report(t *testing.T, what string, d time.Duration) {
	t.Helper()
	t.Logf("%s: %d schedules, %d decisions (longest %d) in %v", what, st.runs, st.decisions, st.maxDecisions, d.Round(time.Millisecond))
	keys := make([]string, 0, len(st.soft))
	for k := range st.soft {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := st.soft[k]
		t.Logf("soft finding in %d schedules: %s\n\te.g. -offq.replay='%s'", f.n, f.example, f.sched)
		if *ilSoftFail {
			t.Errorf("soft finding: %s", f.example)
		}
	}
}

// ilStrategyFor returns the strategy of the i-th schedule of a scenario: a uniform random
// walk, a sticky one, PCT with fair spinning, and strict PCT (which starves an actor until the
// others' bounded waits give up, as a process that is descheduled or killed would).
func ilStrategyFor(sc ilScenario, seed uint64, i int) (ilStrategy, int, string) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	length := 30*(sc.producers*sc.msgs+sc.prefill) + 40
	switch i % 4 {
	case 0:
		return &ilRandomWalk{rng: rng}, 24, "random"
	case 1:
		return &ilRandomWalk{rng: rng, sticky: 0.85}, 24, "sticky-random"
	case 2:
		return &ilPCT{rng: rng, depth: 2 + rng.IntN(3), length: length}, 24, "pct"
	default:
		return &ilPCT{rng: rng, depth: 1 + rng.IntN(4), length: length}, 0, "strict-pct"
	}
}

func ilBaseSeed() uint64 {
	if *modelSeed != 0 {
		return *modelSeed
	}
	return uint64(time.Now().UnixNano())
}

// TestInterleave runs every scenario under random and PCT schedules.
func TestInterleave(t *testing.T) {
	n := *ilSchedules
	if n <= 0 {
		n = ilDefaultSchedules
	}
	base := ilBaseSeed()
	t.Logf("base seed %d (-offq.seed), %d schedules per scenario (-offq.schedules)", base, n)
	total := 0
	start := time.Now()
	for _, sc := range ilScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			env := newILEnv(t)
			var st ilStats
			t0 := time.Now()
			for i := range n {
				seed := base + uint64(i)
				strat, fair, label := ilStrategyFor(sc, seed, i)
				res := env.run(sc, seed, strat, fair)
				st.add(res)
				if len(res.hard) > 0 {
					ilFail(t, res, fmt.Sprintf("%s (schedule %d)", label, i+1))
				}
			}
			total += st.runs
			st.report(t, sc.name, time.Since(t0))
		})
	}
	t.Logf("%d schedules in %v", total, time.Since(start).Round(time.Millisecond))
}

// TestInterleaveDFS searches every schedule of the smallest scenarios with at most
// -offq.dfsbound preemptions.
func TestInterleaveDFS(t *testing.T) {
	limit := *ilDFSMax
	if limit == 0 {
		limit = 6000
	}
	for _, sc := range ilDFSScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			env := newILEnv(t)
			d := &ilDFS{bound: *ilDFSBound}
			var st ilStats
			t0 := time.Now()
			complete := false
			for {
				env.restore()
				res := env.run(sc, 1, d, 24)
				st.add(res)
				if len(res.hard) > 0 {
					ilFail(t, res, fmt.Sprintf("exhaustive (schedule %d of the search)", st.runs))
				}
				if !d.next() {
					complete = true
					break
				}
				if limit > 0 && st.runs >= limit {
					break
				}
			}
			st.report(t, fmt.Sprintf("%s, preemption bound %d, search complete: %v", sc.name, d.bound, complete), time.Since(t0))
		})
	}
}

// TestInterleaveDFSDeterministic: every run of the exhaustive search starts from one state,
// so that the prefix it replays from the run before takes the same path. Without restore, the
// search with preemption bound 3 on dfs/oldest-consumer-closes panicked at its 21,699th
// schedule ("actor 1 not eligible on replay"): that run had begun at another ring position than
// the one it replayed. 30,000 schedules take about a second.
func TestInterleaveDFSDeterministic(t *testing.T) {
	i := slices.IndexFunc(ilDFSScenarios(), func(sc ilScenario) bool { return sc.name == "dfs/oldest-consumer-closes" })
	if i < 0 {
		t.Fatal("no scenario dfs/oldest-consumer-closes")
	}
	sc := ilDFSScenarios()[i]
	env := newILEnv(t)
	d := &ilDFS{bound: 3}
	for n := 0; n < 30000; n++ {
		env.restore()
		res := env.run(sc, 1, d, 24)
		if len(res.hard) > 0 {
			ilFail(t, res, fmt.Sprintf("exhaustive (schedule %d of the search)", n+1))
		}
		if !d.next() {
			break
		}
	}
}

// TestInterleaveReplay replays the schedule given with -offq.replay.
func TestInterleaveReplay(t *testing.T) {
	if *ilReplay == "" {
		t.Skip("give a schedule with -offq.replay")
	}
	sc, seed, fair, tr, err := ilParseReplay(*ilReplay)
	if err != nil {
		t.Fatal(err)
	}
	if *ilVerbose {
		ilTraceLog = func(s string) { t.Log(s) }
		defer func() { ilTraceLog = nil }()
	}
	res := ilReplayOnce(t, sc, seed, fair, tr)
	if res.diverged != "" {
		t.Logf("the replay diverged: %s", res.diverged)
	}
	for _, f := range res.soft {
		t.Logf("soft: %s", f)
	}
	if len(res.hard) > 0 {
		t.Fatalf("%s\nschedule (%d decisions): %s", strings.Join(res.hard, "\n"), res.steps, res.schedule())
	}
	t.Logf("no problem in %d decisions", res.steps)
}

// ilReplayOnce replays a schedule on a fresh region.
func ilReplayOnce(t testing.TB, sc ilScenario, seed uint64, fair int, tr []int8) *ilResult {
	env := newILEnv(t)
	rp := &ilReplayer{trace: tr}
	res := env.run(sc, seed, rp, fair)
	res.diverged = rp.diverged
	return res
}

// ilFail shrinks a failing schedule and fails the test with it.
func ilFail(t *testing.T, res *ilResult, label string) {
	t.Helper()
	t.Errorf("%s schedule of %s failed after %d decisions:\n%s\nschedule: -offq.replay='%s'",
		label, res.sc.name, res.steps, strings.Join(res.hard, "\n"), res.schedule())
	if min := ilShrink(t, res); min != nil {
		t.Errorf("shrunk to %d forced decisions:\n%s\nschedule: -offq.replay='%s'",
			len(min.trace), strings.Join(min.hard, "\n"), ilSchedule(min.sc, min.seed, min.fairSpin, min.trace))
	}
	t.FailNow()
}

// ilShrink looks for a shorter forced schedule (the default policy runs the rest) that fails
// in the same way: it drops whole stretches of one actor, halves them, and cuts the end.
func ilShrink(t testing.TB, res *ilResult) *ilResult {
	kind := ilNormalize(res.hard[0])
	fails := func(tr []int8) *ilResult {
		r := ilReplayOnce(t, res.sc, res.seed, res.fairSpin, tr)
		for _, h := range r.hard {
			if ilNormalize(h) == kind {
				r.trace = tr
				return r
			}
		}
		return nil
	}
	best := fails(res.trace)
	if best == nil {
		t.Logf("the failure does not reproduce on a fresh region")
		return nil
	}
	type seg struct {
		id int8
		n  int
	}
	segs := func(tr []int8) []seg {
		var out []seg
		for _, a := range tr {
			if len(out) > 0 && out[len(out)-1].id == a {
				out[len(out)-1].n++
			} else {
				out = append(out, seg{a, 1})
			}
		}
		return out
	}
	flat := func(ss []seg) []int8 {
		var out []int8
		for _, s := range ss {
			for range s.n {
				out = append(out, s.id)
			}
		}
		return out
	}
	for tries := 0; tries < 3000; {
		improved := false
		// Cut the end: the shortest prefix that still fails.
		lo, hi := 0, len(best.trace)
		for lo < hi {
			mid := (lo + hi) / 2
			tries++
			if r := fails(best.trace[:mid]); r != nil {
				best, hi, improved = r, mid, true
			} else {
				lo = mid + 1
			}
		}
		ss := segs(best.trace)
		for i := 0; i < len(ss) && tries < 3000; i++ {
			for _, n := range []int{0, ss[i].n / 2} {
				if n == ss[i].n {
					continue
				}
				c := slices.Clone(ss)
				c[i].n = n
				tries++
				if r := fails(flat(c)); r != nil {
					best, improved = r, true
					ss = segs(best.trace)
					break
				}
			}
		}
		if !improved {
			break
		}
	}
	return best
}

// ---- reproductions of the problems the checker found
//
// Each replays a short forced schedule (the rest runs by the default policy: the running actor
// goes on while it can) on a fresh region and fails while the problem is there. The schedules
// count decisions, that is step() calls, so they drive the interleaving described only with the
// step() placement of this commit; once inbox.go changes they may no longer reach it, and
// TestInterleave, which finds each of them within a few hundred random schedules, is the
// regression test.

func ilRepro(t *testing.T, schedule string) {
	t.Helper()
	sc, seed, fair, tr, err := ilParseReplay(schedule)
	if err != nil {
		t.Fatal(err)
	}
	res := ilReplayOnce(t, sc, seed, fair, tr)
	if len(res.hard) > 0 {
		t.Errorf("%s\nschedule (%d decisions): -offq.replay='%s'", strings.Join(res.hard, "\n"), res.steps, res.schedule())
	}
}

// TestInterleaveReproStaleTailForgedMarker: producer 1 read tail 1 and waited; meanwhile
// position 1 was filled and taken (the consumer's head move pending), positions 2 and 3 were
// filled, and a scribble wrote the empty marker of position 1 over position 3's message. Producer
// 1 found "empty for 1" in the cell, filled it and, its tail move failing with the head not yet
// past 1, kept it there: a message of position 1 in the cell position 3 owns. The consumer passed
// it as a wrong lap, took a later message of the same producer, and two laps on took this one
// as position 5 (the lap parity is one bit), out of order, with the head moved past the tail.
// A producer now reads the tail again after the cell, and retries once it has moved past its t.
// Found with a clock seed (base 1796614751873781773, schedule 125,662 of 150,000).
func TestInterleaveReproStaleTailForgedMarker(t *testing.T) {
	ilRepro(t, "oldest/scribble-own-empty-marker:1796614751873907434:24:3*1 0*2 1*8 0*2 2*17 0*12 2*10 0*3 3*2 0*1 1*5 2*1 1*1")
}

// TestInterleaveReproPhantomTail: a producer that read the tail cell while the consumer was
// taking the message of the previous lap (the cell held "claimed"), and read the head only
// after the consumer had finished that take and the next, concludes from head >= t that the
// claim was of position t itself, and moves the tail past position t, which nobody filled
// (Inbox.push, the claimed-marker case). The cell keeps its stale empty marker; the next
// producer at that cell takes it for a scribble: under DropNewest its push fails with
// ErrCorrupt and the inbox and region count corruption; under DropOldest it skips the
// position (counted as corrupt) and evicts the ring's only message.
//
// Producer 0 has filled the ring of capacity 2 (positions 0 and 1) before the run.
//
//	2*7   the consumer claims position 0 (cell 0 := claimed into held entry 0)
//	1*5   producer 1 reads tail 2 and cell 0 (claimed), stops before reading the head
//	2*14  the consumer finishes position 0 and takes position 1: head 2
//	1*6   producer 1 reads head 2 >= 2, moves the tail to 3 over empty position 2, and
//	      pushes its message at position 3
//	0*... producer 0 pushes at position 4 and finds cell 0 still "empty for 2"
func TestInterleaveReproPhantomTail(t *testing.T) {
	t.Run("drop-oldest", func(t *testing.T) { ilRepro(t, "repro/drop-oldest:1:24:2*7 1*5 2*14 1*6 0*26") })
	t.Run("drop-newest", func(t *testing.T) { ilRepro(t, "repro/drop-newest:1:24:2*7 1*5 2*14 1*6 0*6") })
}

// TestInterleaveReproHeadPastTail: a producer that read the handle of the previous lap in the
// tail cell (full ring), then a head one short of full, falls through to the scribble path;
// there it reads the head again, which meanwhile passed t, and t - head wraps around
// (uint64): the ring looks full of impossible values, so a DropNewest push fails with
// ErrCorrupt (and counts corruption) on a ring that is empty, and a DropOldest push evicts.
//
//	1*4   producer 1 reads tail 2 and cell 0: the handle of position 0 (ring full)
//	2*10  the consumer takes position 0: head 1
//	1*1   producer 1 reads head 1: t - head = 1 < capacity, not full; out of the switch
//	2*10  the consumer takes position 1: head 2
//	0*4   producer 0 fills position 2 (not yet the tail)
//	2*14  the consumer takes position 2: head 3, tail still 2
//	1*1   producer 1 reads head 3: 2 - 3 wraps, DropNewest: ErrCorrupt
func TestInterleaveReproHeadPastTail(t *testing.T) {
	ilRepro(t, "repro/drop-newest:1:24:1*4 2*10 1*1 2*10 0*4 2*14 1*1")
}

// TestInterleaveReproScribbleLosesNext: a scribble over an empty cell loses a message that
// was pushed after it, and leaks its reference. The scribbler writes a bad handle of the
// other lap's parity into the empty cell of position 4 (the tail); the consumer reads it at
// head 4; the producer repairs the cell and pushes positions 4 and 5; the consumer then reads
// tail 6 >= 4 + capacity and concludes that its stale read was the handle of position 6 with
// the head lagging (Inbox.take), moves the head past position 4 and later "repairs" the real
// handle there. Only the scribbled cell was damaged, yet another message is lost and its
// buffer keeps a reference no record names.
func TestInterleaveReproScribbleLosesNext(t *testing.T) {
	ilRepro(t, "oldest/scribble-wrong-lap-handle:1878:24:0*6 3*1 1*22 2*10 1*4 2*15 3*2 2*12 0*1")
}

// TestInterleaveReproWedged: the same wrap-around as TestInterleaveReproHeadPastTail, when the
// head is past a tail that lags for good (the producer that filled the position stopped between
// its two steps, as a killed one does) and the tail cell was scribbled: every push turns
// between the scribble path and an eviction that finds the ring empty until maxTurns (2^20
// turns), then fails with ErrCorrupt, and the next push does the same; nothing repairs it.
// (A decision bound of 200000 stands for "does not end".)
func TestInterleaveReproWedged(t *testing.T) {
	ilRepro(t, "oldest/scribble-claimed-other-generation:1795645970946823783:0:3*1 1*9 2*20 3*2 2*1")
}

// TestInterleaveReproScribbleStrands: a scribble over an empty cell strands a message pushed
// afterwards behind the head. The scribbler turns the cell's "empty for position 2" (written by
// the consumer's take of position 0) into "empty for position 4". Producer 0, pushing at
// position 2, reads head 1 (< 2) and decides the marker is a scribble to repair; the
// consumer at head 2 reads "empty for 2 + capacity", takes position 2 for taken and moves the
// head to 3; producer 0 then repairs the cell and fills position 2, behind the head. Nothing
// reads position 2 again: the message is lost although the scribble destroyed none.
func TestInterleaveReproScribbleStrands(t *testing.T) {
	ilRepro(t, "newest/scribble-empty-other-position:4482:24:0*8 3*1 0*2 1*9 2*9 3*2 1*4 2*1 0*5 2*1")
}

// A wrong-lap handle scribbled into the cell of a position that a producer has committed (its
// tail move pending) and a consumer has taken (its head move pending): a producer, or a taker
// skipping the damage, made the cell ready for that position again and filled it, and the
// consumer's head move left the message behind the head. Such a cell is now marked done.
func TestInterleaveReproWrongLapBehindHead(t *testing.T) {
	ilRepro(t, "oldest/scribble-wrong-lap-handle:43457:24:3*1 1*7 2*1 0*13 2*4 0*10 2*10 0*12 2*7 0*20 2*10 3*2 1*1")
	ilRepro(t, "oldest/handoff-scribble-wrong-lap-handle:84598:24:1*7 2*4 3*1 2*8 1*10 0*6 2*19 0*21 2*24 3*2 1*1")
	ilRepro(t, "oldest/handoff-scribble-wrong-lap-handle:76284:24:1*3 2*4 1*14 2*26 0*2 2*2 3*1 0*4 2*10 3*2 1*17 2*1")
}
