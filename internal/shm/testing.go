package shm

// OrphanForTest leaves one buffer of at least n bytes holding a reference that no record in
// the region names, as a process killed between the two atomic operations of one reference
// move would (see docs/architecture.md, "What a kill can still leave, and the sweep"). It is
// for tests in other packages that check what reapers do about it (offq reap's sweep); nothing
// else may call it.
func (p *Participant) OrphanForTest(n int) (err error) {
	defer unguard(guard(), &err)
	b, err := p.alloc(n)
	if err != nil {
		return err
	}
	if err := p.r.addRefs(b.s, b.h, 1); err != nil {
		return err
	}
	return p.r.unloan(p.owner, b.h)
}

// ScribbleStateForTest overwrites the state word of inbox in with v, as a faulty or hostile
// process writing into the region would. For tests in other packages of how a consumer meets
// a damaged queue; nothing else may call it.
func ScribbleStateForTest(in *Inbox, v uint64) { in.v.hdr.state.Store(v) }

// SampleEveryAgeForTest makes every take count its message's age in the inbox's histogram,
// until the returned function restores sampling (AgeSample). Tests that use it must not run
// in parallel with others that take.
func SampleEveryAgeForTest() (restore func()) {
	old := ageMask
	ageMask = 0
	return func() { ageMask = old }
}
