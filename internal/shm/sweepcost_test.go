package shm

// Tests of the requested sweep (sweeplease.go): it does not run unasked, one process sweeps at
// a time, a killed sweeper's progress is resumed, and what a killed process leaked is freed
// without anyone calling Reap.

import (
	"context"
	"strconv"
	"testing"

	"github.com/offq/offq/internal/peer"
)

// sweepCostConfig has more slots than a test's sweep step, so that a pass takes several steps.
func sweepCostConfig() Config {
	c := mpConfig()
	c.Classes = []Class{{Size: 256, Count: 512}, {Size: 4 << 10, Count: 64}}
	return c
}

// smallSweepSteps makes requested sweeps read n slots per step for the rest of the test.
func smallSweepSteps(t *testing.T, n uint64) {
	t.Helper()
	was := sweepStep
	sweepStep = n
	t.Cleanup(func() { sweepStep = was })
}

// countSteps records the position of every step of a requested sweep for the rest of the
// test, and runs also (if set) at each.
func countSteps(t *testing.T, also func(pos uint64)) *[]uint64 {
	t.Helper()
	var steps []uint64
	testHookSweepStep = func(pos uint64) {
		steps = append(steps, pos)
		if also != nil {
			also(pos)
		}
	}
	t.Cleanup(func() { testHookSweepStep = nil })
	return &steps
}

// makeOrphan leaves a buffer with one reference that no record names, as a process killed
// between adding a reference and recording it does, and returns it. The buffer is the pool's
// slot at, so that its position in a pass is known.
func makeOrphan(t *testing.T, r *Region, p *Participant, at int) Handle {
	t.Helper()
	var keep []Handle
	var h Handle
	for range at + 1 {
		b, err := p.alloc(8)
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, b.Handle())
		h = b.Handle()
	}
	if h.index() != uint32(at) {
		t.Fatalf("allocated slot %d, want %d", h.index(), at)
	}
	for _, k := range keep[:at] {
		if err := p.unloan(k); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.addRefsHandle(h, 1); err != nil {
		t.Fatal(err)
	}
	if err := p.unloan(h); err != nil {
		t.Fatal(err)
	}
	return h
}

func refsOf(t *testing.T, r *Region, h Handle) int {
	t.Helper()
	_, s, _, err := r.decode(h)
	if err != nil {
		t.Fatal(err)
	}
	v := s.state.Load()
	if stateGen(v) != h.gen() {
		return 0
	}
	return int(stateRefs(v))
}

// TestSweepNotWithoutRequest: with an orphan in the region, Maintain neither sweeps nor reads
// a slot until a sweep is requested; then one Maintain makes the two passes that free it.
func TestSweepNotWithoutRequest(t *testing.T) {
	smallSweepSteps(t, 100)
	steps := countSteps(t, nil)
	r := newUnitRegion(t, sweepCostConfig())
	p := attachUnit(t, r, "p")
	orphan := makeOrphan(t, r, p, 5)
	for range 5 {
		rep, err := r.Maintain()
		if err != nil {
			t.Fatal(err)
		}
		if rep != (ReapReport{}) {
			t.Fatalf("Maintain without a request: %+v, want nothing done", rep)
		}
	}
	if len(*steps) != 0 || r.SweepStats() != (SweepStats{Holder: -1}) {
		t.Fatalf("Maintain without a request swept: steps at %v, %+v", *steps, r.SweepStats())
	}
	if n := refsOf(t, r, orphan); n != 1 {
		t.Fatalf("orphan has %d references before any sweep, want 1", n)
	}

	if err := r.RequestSweep(); err != nil {
		t.Fatal(err)
	}
	if st := r.SweepStats(); st.Requests != 1 || !st.Pending {
		t.Fatalf("after RequestSweep: %+v, want one request pending", st)
	}
	rep, err := r.Maintain()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Swept != 1 || refsOf(t, r, orphan) != 0 {
		t.Fatalf("Maintain after a request: %+v, orphan refs %d; want it swept", rep, refsOf(t, r, orphan))
	}
	// Two passes of ceil(576/100) = 6 steps: the first sees the orphan, the second confirms it.
	st := r.SweepStats()
	if st.Passes != 2 || st.Steps != 12 || st.Pending || st.Holder != -1 || len(*steps) != 12 {
		t.Fatalf("after the sweep: %+v, %d steps; want 2 passes of 6 steps, nothing pending, no holder", st, len(*steps))
	}
	for i, pos := range *steps {
		if want := uint64(i%6) * 100; pos != want {
			t.Fatalf("step %d at position %d, want %d", i, pos, want)
		}
	}
	// Done: the next Maintain sweeps nothing.
	if rep, err := r.Maintain(); err != nil || rep != (ReapReport{}) || len(*steps) != 12 {
		t.Fatalf("Maintain after the sweep: %+v %v, %d steps", rep, err, len(*steps))
	}
	if n := r.CountAllocated(); n[0]+n[1] != 0 {
		t.Fatalf("%v buffers allocated at the end", n)
	}
}

// TestSweepLeaseOneAtATime: while one process sweeps (holds the lease), another's Maintain,
// with the same request pending, makes no step; once the first is done, the lease is free.
func TestSweepLeaseOneAtATime(t *testing.T) {
	smallSweepSteps(t, 64)
	r1 := newUnitRegion(t, sweepCostConfig())
	p1 := attachUnit(t, r1, "first")
	// A second mapping with its own participant: to the lease, another process.
	r2, err := Open(r1.Name(), Options{Dir: dirOf(r1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	p2 := attachUnit(t, r2, "second")
	orphan := makeOrphan(t, r1, p1, 3)

	var inStep bool
	var during []SweepStats
	var others []ReapReport
	steps := countSteps(t, func(pos uint64) {
		if inStep {
			t.Errorf("a step at %d began inside another process's step", pos)
			return
		}
		inStep = true
		defer func() { inStep = false }()
		during = append(during, r2.SweepStats())
		rep, err := r2.Maintain() // the other process's periodic work, during the first's sweep
		if err != nil {
			t.Error(err)
		}
		others = append(others, rep)
	})
	if err := r2.RequestSweep(); err != nil {
		t.Fatal(err)
	}
	rep, err := r1.Maintain()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Swept != 1 || refsOf(t, r1, orphan) != 0 {
		t.Fatalf("sweep: %+v; want the orphan freed", rep)
	}
	// 576 slots in steps of 64: 9 steps a pass, two passes, all made by the first.
	if len(*steps) != 18 {
		t.Fatalf("%d steps, want 18", len(*steps))
	}
	for i, st := range during {
		if st.Holder != p1.Index() || !st.Pending {
			t.Fatalf("during step %d the second process saw %+v, want the lease held by participant %d", i, st, p1.Index())
		}
		if others[i] != (ReapReport{}) {
			t.Fatalf("the second process's Maintain during step %d did %+v, want nothing", i, others[i])
		}
	}
	if st := r2.SweepStats(); st.Holder != -1 || st.Pending {
		t.Fatalf("after the sweep: %+v, want the lease free and nothing pending", st)
	}
	_ = p2
}

func dirOf(r *Region) string {
	p := r.Path()
	return p[:len(p)-len(r.Name())-1]
}

// Environment of the sweeper role.
const (
	envSweepStep = "OFFQ_TEST_SWEEP_STEP" // sweepStep in the child
	envSweepStop = "OFFQ_TEST_SWEEP_STOP" // the position at which the child stops and waits to be killed
)

// roleSweeper attaches to the region, and sweeps on the pending request with small steps;
// at position OFFQ_TEST_SWEEP_STOP it says "stopped" and waits to be killed, holding the
// lease.
func roleSweeper(c *peer.Child) error {
	r, _, err := attachFromEnv("sweeper")
	if err != nil {
		return err
	}
	step, err := envUint(envSweepStep)
	if err != nil {
		return err
	}
	stop, err := envUint(envSweepStop)
	if err != nil {
		return err
	}
	sweepStep = step
	testHookSweepStep = func(pos uint64) {
		if pos == stop {
			c.Send("stopped %d", pos)
			<-c.Context().Done() // killed before this
			select {}
		}
	}
	if _, err := r.Maintain(); err != nil {
		return err
	}
	c.Send("finished without stopping")
	return nil
}

// TestSweepResumesAfterHolderKilled: a process sweeping on request is killed mid-pass,
// holding the lease. The next Maintain elsewhere takes the lease (its holder is dead),
// resumes at the cursor the dead one left, and makes the passes that free the orphan.
func TestSweepResumesAfterHolderKilled(t *testing.T) {
	const step, stop = 64, 192
	smallSweepSteps(t, step)
	dir := t.TempDir()
	r, err := Create("resume", Options{Dir: dir, Config: sweepCostConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := attachUnit(t, r, "parent")
	orphan := makeOrphan(t, r, p, 400) // past the position where the sweeper stops
	if err := r.RequestSweep(); err != nil {
		t.Fatal(err)
	}
	sw := peer.Start(t, "sweeper", envs(envDir, dir, envRegion, "resume", envSweepStep, step, envSweepStop, stop)...)
	line, err := sw.Expect("stopped ", procTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if pos, _ := strconv.Atoi(line); pos != stop {
		t.Fatalf("sweeper stopped at %q, want %d", line, stop)
	}
	holder := r.SweepStats().Holder
	if holder < 0 || holder == p.Index() {
		t.Fatalf("lease holder %d while the sweeper holds it", holder)
	}
	if c := r.hdr.cursor.Load(); c != stop {
		t.Fatalf("cursor %#x when the sweeper stopped, want pass 0 position %d", c, stop)
	}
	sw.Kill()
	sw.Wait(procTimeout)

	steps := countSteps(t, nil)
	rep, err := r.Maintain()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Participants != 1 || rep.Swept != 1 || refsOf(t, r, orphan) != 0 {
		t.Fatalf("Maintain after the kill: %+v, orphan refs %d; want the sweeper reaped and the orphan swept", rep, refsOf(t, r, orphan))
	}
	if len(*steps) == 0 || (*steps)[0] != stop {
		t.Fatalf("the sweep resumed at %v, want %d", *steps, stop)
	}
	// The rest of pass 0 (6 steps), then two passes of its own (9 steps each).
	if n := len(*steps); n != 6+18 {
		t.Fatalf("%d steps after the takeover, want 24", n)
	}
	if st := r.SweepStats(); st.Pending || st.Holder != -1 || st.Passes != 3 {
		t.Fatalf("after the sweep: %+v, want 3 passes, nothing pending, the lease free", st)
	}
	if n := r.CountAllocated(); n[0]+n[1] != 0 {
		t.Fatalf("%v buffers allocated at the end", n)
	}
}

// roleLeaker attaches, takes a buffer on loan and adds a reference to it that it never
// records (as a publisher killed between the two does), then waits to be killed.
func roleLeaker(c *peer.Child) error {
	r, p, err := attachFromEnv("leaker")
	if err != nil {
		return err
	}
	b, err := p.alloc(8)
	if err != nil {
		return err
	}
	if err := r.addRefsHandle(b.Handle(), 1); err != nil {
		return err
	}
	c.Send("leaked %d", uint64(b.Handle()))
	<-c.Context().Done() // killed before this
	return nil
}

// TestSweepFreesLeakOfKilledProcess: a process killed with a reference it had not recorded
// leaks a buffer. Nobody calls Reap: the periodic Maintain of a live process reaps the dead
// one (ending its loan), which requests a sweep, which frees the buffer.
func TestSweepFreesLeakOfKilledProcess(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("leak", Options{Dir: dir, Config: sweepCostConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	attachUnit(t, r, "parent")
	lk := peer.Start(t, "leaker", envs(envDir, dir, envRegion, "leak")...)
	line, err := lk.Expect("leaked ", procTimeout)
	if err != nil {
		t.Fatal(err)
	}
	hv, _ := strconv.ParseUint(line, 10, 64)
	h := Handle(hv)
	if n := refsOf(t, r, h); n != 2 {
		t.Fatalf("leaked buffer has %d references, want 2 (the loan and the unrecorded one)", n)
	}
	lk.Kill()
	lk.Wait(procTimeout)

	rep, err := r.Maintain()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Participants != 1 || rep.Loans != 1 || rep.Swept != 1 || rep.Audited {
		t.Fatalf("Maintain after the kill: %+v; want the leaker reaped, its loan ended and the leak swept", rep)
	}
	if n := refsOf(t, r, h); n != 0 {
		t.Fatalf("leaked buffer still has %d references", n)
	}
	if st := r.SweepStats(); st.Requests != 1 || st.Pending {
		t.Fatalf("%+v: want the one request the reap made, served", st)
	}
	if n := r.CountAllocated(); n[0]+n[1] != 0 {
		t.Fatalf("%v buffers allocated at the end", n)
	}
	for _, ps := range r.PoolStats() {
		if ps.InUse != 0 {
			t.Fatalf("pool %d: InUse %d at the end", ps.Class, ps.InUse)
		}
	}
}

// TestMaintainAloneAuditsWithoutReadingSlots: a lone Maintain (nobody attached) audits the
// tables; it reads the slots only when the pools' counters disagree with the histories.
func TestMaintainAloneAuditsWithoutReadingSlots(t *testing.T) {
	r := newUnitRegion(t, sweepCostConfig())
	rep, err := r.Maintain()
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Audited || rep.Recounted {
		t.Fatalf("lone Maintain on a clean region: %+v, want audited, not recounted", rep)
	}
	// A reference recorded nowhere, left behind by a participant that then detached: the
	// counters say one buffer is allocated, and no history keeps one.
	p := attachUnit(t, r, "p")
	b, err := p.alloc(8)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.addRefsHandle(b.Handle(), 1); err != nil {
		t.Fatal(err)
	}
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	rep, err = r.Maintain()
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Recounted || rep.Repaired != 1 {
		t.Fatalf("lone Maintain with a leak: %+v, want the slots recounted and the leak repaired", rep)
	}
	if n := r.CountAllocated(); n[0]+n[1] != 0 {
		t.Fatalf("%v buffers allocated at the end", n)
	}
}

// BenchmarkRequestedSweep: what a requested sweep costs per slot, all slots lent, with one
// queued message (a candidate every pass, so that every step after the first pass also reads
// every record): a RequestSweep and the Maintain that makes its two passes, per iteration.
func BenchmarkRequestedSweep(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Classes = []Class{{Size: 256, Count: 1 << 16}}
	r, err := Create("unit", Options{Dir: b.TempDir(), Config: cfg})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	p, err := r.Attach("holder")
	if err != nil {
		b.Fatal(err)
	}
	defer p.Detach()
	in, err := p.OpenInbox(InboxConfig{})
	if err != nil {
		b.Fatal(err)
	}
	buf, err := p.alloc(8)
	if err != nil {
		b.Fatal(err)
	}
	if err := in.deliverBuffer(context.Background(), buf); err != nil {
		b.Fatal(err)
	}
	p.unloan(buf.Handle())
	r.pools[0].markLent(cfg.Classes[0].Count - 1) // as on a bus whose publishers walked the pool
	for b.Loop() {
		if err := r.RequestSweep(); err != nil {
			b.Fatal(err)
		}
		if rep, err := r.Maintain(); err != nil || rep.Swept != 0 {
			b.Fatal(rep, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*cfg.Classes[0].Count), "ns/slot")
}

// TestSweepDoesNotChaseNewRequests: requests made while a sweep runs (other processes finding
// the pools exhausted) do not keep the sweeping call, which may be a Loan's, going: it makes
// the passes owed when it started, and leaves the rest to the next call.
func TestSweepDoesNotChaseNewRequests(t *testing.T) {
	r := newUnitRegion(t, sweepCostConfig())
	attachUnit(t, r, "p")       // participants sweep
	const limit = 1000          // a sweep that chases the requests stops here, when they stop
	steps := countSteps(t, nil) // its hook is replaced: ours requests again at each step
	testHookSweepStep = func(pos uint64) {
		*steps = append(*steps, pos)
		if len(*steps) < limit {
			r.RequestSweep()
		}
	}
	if err := r.RequestSweep(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Maintain(); err != nil {
		t.Fatal(err)
	}
	// One step a pass on this region: the goal when the sweep started is at most 3 passes on.
	if n := len(*steps); n > 3*int((r.totalSlots+sweepStep-1)/sweepStep) {
		t.Fatalf("one Maintain made %d steps while requests kept coming, want the passes owed when it started", n)
	}
	if st := r.SweepStats(); !st.Pending {
		t.Fatalf("after the sweep: %+v, want the requests made during it still pending", st)
	}
}

// TestSweepPassCounterWraps: the pass number is 32 bits; a region that has made 2^32 - 1
// requested passes (its pools keep running short) sweeps on through the wrap as before: the
// goal past it is not taken for a scribble (counted as damage and cut back).
func TestSweepPassCounterWraps(t *testing.T) {
	r := newUnitRegion(t, sweepCostConfig())
	attachUnit(t, r, "p")
	last := uint64(1<<32 - 1)
	r.hdr.cursor.Store(last << 32)
	r.hdr.goal.Store(last)
	corrupt := r.hdr.corrupt.Load()
	if err := r.RequestSweep(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Maintain(); err != nil {
		t.Fatal(err)
	}
	if n := r.hdr.corrupt.Load() - corrupt; n != 0 {
		t.Fatalf("%d corrupt words counted across the pass counter's wrap, want 0", n)
	}
	if st := r.SweepStats(); st.Pending || st.Passes != 1 {
		t.Fatalf("after the sweep across the wrap: %+v, want the two passes done (pass 1) and none pending", st)
	}
}
