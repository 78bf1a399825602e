package shm

// OrphanForTest leaves one buffer of at least n bytes holding a reference that no record in
// the region names, as a process killed between the two atomic operations of one reference
// move would (see docs/architecture.md, "What a kill can still leave, and the sweep"). It is
// for tests in other packages that check what reapers do about it (offq reap's sweep); nothing
// else may call it.
func (p *Participant) OrphanForTest(n int) (err error) {
	defer unguard(guard(), &err)
	b, err := p.r.alloc(p.owner, n)
	if err != nil {
		return err
	}
	if err := p.r.addRefs(b.s, b.h, 1); err != nil {
		return err
	}
	return p.r.unloan(p.owner, b.h)
}
