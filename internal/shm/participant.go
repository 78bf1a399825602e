package shm

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Participant slot states (low byte of participantSlot.state; the generation is above it).
const (
	partFree     = 0
	partAttached = 1
)

// Participant is one attachment of a process to a region: it owns loans and inboxes, and
// holds a kernel lock on its slot of the participant table for as long as it lives. When the
// process dies, however it dies, the kernel drops the lock, which is how others learn that
// the participant is gone: there are no heartbeats and no pids involved.
//
// A Participant is safe for concurrent use by multiple goroutines.
type Participant struct {
	r     *Region
	idx   uint32
	owner uint32 // idx + 1, as recorded in slot and inbox owner fields
	slot  *participantSlot
	// lockfd is an open file description of its own, so that its lock is not shared with the
	// region's descriptor. It is a raw descriptor, not an *os.File, whose finalizer would
	// close it (and so drop the lock, and with it the process's claim to be alive) if the
	// Participant became garbage while attached: it is closed by Detach and nothing else.
	lockfd int
	lkoff  int64
	held   *heldList
	gone   atomic.Bool
	// pinMu guards pins: per topic index, how many PinTopic calls of this participant hold
	// the topic; its bit in the pins section is set while the count is above zero.
	pinMu sync.Mutex
	pins  []uint32
	disp  dispatcher    // this participant's waiters and the leader that sleeps on its bell
	turn  atomic.Uint32 // where TakeAny starts looking
	// loaned is set by the participant's first loan: Detach looks for loans to end (a walk of
	// the slots ever lent) only if there may be some.
	loaned atomic.Bool
	// handoffHint is the hand-off word this process's last send took (see takeHandoff).
	handoffHint atomic.Uint32
}

func (r *Region) participantOffset(i uint32) uint64 {
	return r.lay.sec.participants.off + uint64(i)*uint64(participantSlotSize)
}

// Attach joins the region as a new participant named name (truncated to 32 bytes; for tools).
// It fails with ErrTableFull when every slot is held by a live participant or awaits reaping.
func (r *Region) Attach(name string) (*Participant, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return nil, &Error{Op: "attach", Name: r.name, Err: ErrClosed}
	}
	if r.readOnly {
		return nil, &Error{Op: "attach", Name: r.name, Err: fmt.Errorf("%w: region opened read-only", ErrPermission)}
	}
	lf, err := reopenFD(r.f)
	if err != nil {
		return nil, &Error{Op: "attach", Name: r.name, Err: err}
	}
	// Every participant holds a shared lock on the presence byte for its life; an audit
	// (see Reap) holds it exclusively for the few milliseconds it runs, only when nobody is
	// attached. Wait that out.
	for deadline := time.Now().Add(5 * time.Second); ; {
		got, err := lockFDShared(lf, r.path, presenceByte)
		if err != nil {
			closeLockFD(lf)
			return nil, &Error{Op: "attach", Name: r.name, Err: err}
		}
		if got {
			break
		}
		if time.Now().After(deadline) {
			closeLockFD(lf)
			return nil, &Error{Op: "attach", Name: r.name, Err: fmt.Errorf("%w: an audit of the region did not finish", ErrNotReady)}
		}
		time.Sleep(100 * time.Microsecond)
	}
	p, err := r.claimSlot(lf, name)
	if err != nil {
		// A fault after the slot was claimed leaves it attached to a lock nobody holds once
		// lf is closed: the next reaper reclaims it.
		closeLockFD(lf)
		return nil, &Error{Op: "attach", Name: r.name, Err: err}
	}
	return p, nil
}

// claimSlot takes the first participant slot whose lock lf gets, under the fault guard. The
// caller holds r.mu and closes lf if it fails.
func (r *Region) claimSlot(lf int, name string) (_ *Participant, err error) {
	defer unguard(guard(), &err)
	for i := range r.cfg.Participants {
		off := int64(r.participantOffset(i))
		got, err := lockFD(lf, r.path, off)
		if err != nil {
			return nil, err
		}
		if !got {
			continue // a live participant holds it
		}
		// The lock is ours, so no live process can be using this slot. If the slot says
		// attached, its holder died: reclaim what it left, then take the slot.
		s := (*participantSlot)(r.at(uint64(off)))
		if s.state.Load()&0xff == partAttached {
			r.reapSlot(i)
		}
		v := s.state.Load()
		if v&0xff != partFree || !s.state.CompareAndSwap(v, (v>>8+1)<<8|partAttached) {
			ofdUnlockFD(lf, off)
			continue
		}
		s.role.Store(0)
		for k := range s.bridge {
			s.bridge[k].Store(0)
		}
		for k := range s.bridge2 {
			s.bridge2[k].Store(0)
		}
		for k := range s.evicts {
			s.evicts[k].Store(0)
		}
		s.bridgeID = [32]byte{}
		s.bell.Store(bellAwake)
		s.pid = uint32(os.Getpid())
		s.attached = time.Now().UnixNano()
		s.name = [32]byte{}
		copy(s.name[:], truncateUTF8(name, len(s.name)))
		held := r.newHeldList(i)
		r.clearPins(i)    // a reaper or Detach cleared it; a scribble may not have been
		r.clearHandoff(i) // likewise: a word left set would stay taken
		r.attached++
		r.owners = append(r.owners, i+1)
		p := &Participant{r: r, idx: i, owner: i + 1, slot: s, lockfd: lf, lkoff: off, held: held,
			pins: make([]uint32, r.cfg.Topics)}
		p.disp.p = p
		r.parts = append(r.parts, p)
		return p, nil
	}
	return nil, fmt.Errorf("%w: all %d participant slots in use", ErrTableFull, r.cfg.Participants)
}

// Index returns the participant's slot index.
func (p *Participant) Index() int { return int(p.idx) }

// region returns the region p is attached to.
func (p *Participant) region() *Region { return p.r }

// Detach closes every inbox p still has open (releasing what is queued in them, and failing
// producers that wait on them with ErrClosed), releases every message p still holds and ends
// every loan it still has, frees the participant's slot and drops its lock. Nobody else
// would: a reaper reclaims only the inboxes of participants whose slots are still attached.
// Stop p's consumers before calling it. Detach is idempotent.
func (p *Participant) Detach() (err error) {
	if p.gone.Swap(true) {
		return nil
	}
	defer func() {
		// Even if the region faulted under us, the participant is gone from this process: drop
		// the lock (a reaper then finds the slot, if the region is still readable) and let the
		// region close.
		err = errors.Join(err, closeLockFD(p.lockfd))
		p.r.mu.Lock()
		p.r.attached--
		p.r.owners = slices.DeleteFunc(p.r.owners, func(o uint32) bool { return o == p.owner })
		p.r.parts = slices.DeleteFunc(p.r.parts, func(o *Participant) bool { return o == p })
		p.r.mu.Unlock()
	}()
	defer unguard(guard(), &err)
	p.closeInboxes()
	p.disp.stop()
	p.releaseAllHeld()
	if p.loaned.Load() {
		p.r.endLoans(p.owner)
		p.r.clearHandoff(p.idx) // zero unless a send ran during Detach
	}
	p.pinMu.Lock() // gone is set: no PinTopic sets a bit after this
	p.r.clearPins(p.idx)
	p.pinMu.Unlock()
	p.r.undoCondemned(p.owner)
	v := p.slot.state.Load()
	p.slot.state.Store(v &^ 0xff)
	return nil
}

// anyOwner returns the index + 1 of a participant of this process attached to r, or 0.
func (r *Region) anyOwner() uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.owners) == 0 {
		return 0
	}
	return r.owners[0]
}

// closeInboxes closes the inboxes p owns that are open.
func (p *Participant) closeInboxes() {
	r := p.r
	for j := range r.inboxes {
		v := &r.inboxes[j]
		st := v.hdr.state.Load()
		if wordOwner(st) != p.owner || wordStatus(st) != inboxOpen {
			continue
		}
		c := v.hdr.capacity
		if c < 2 || c > r.cfg.InboxCapacity || c&(c-1) != 0 {
			c = r.cfg.InboxCapacity // scribbled: drain the whole ring
		}
		in := v.inbox(wordGen(st), c, Overflow(v.hdr.policy), 0)
		in.close()
	}
}

// alloc loans a buffer of at least n bytes from the smallest size class that has one free.
// The buffer carries one reference, the loan, recorded in the buffer's own state word as
// belonging to p; it ends with Unloan (after pushing the handle, or to abandon the buffer).
// alloc never blocks and allocates no memory; it fails with a *PoolError wrapping
// ErrPoolExhausted or ErrTooLarge.
func (p *Participant) alloc(n int) (Buffer, error) {
	if !p.loaned.Load() {
		p.loaned.Store(true) // before the loan exists, so that Detach never misses it
	}
	return p.r.alloc(p.owner, n)
}

// unloan ends p's loan of the buffer h: the loan's reference is dropped, and if no inbox took
// a reference the buffer returns to its pool.
func (p *Participant) unloan(h Handle) error { return p.r.unloan(p.owner, h) }

// Alive reports whether participant slot i is held by a live process. It reads the kernel's
// lock table, not shared memory, and may be called without attaching.
func (r *Region) Alive(i int) (bool, error) {
	if i < 0 || i >= int(r.cfg.Participants) {
		return false, fmt.Errorf("participant %d out of range", i)
	}
	return ofdLocked(r.f, int64(r.participantOffset(uint32(i))))
}

// ParticipantInfo describes one slot of the participant table.
type ParticipantInfo struct {
	Index    int
	Name     string
	PID      int
	Attached time.Time
	Alive    bool         // the slot's lock is held: its process is running
	Bridge   *BridgeStats // set when the participant is a NATS bridge
	// Held is, per size class (indexed as Stats.Pools), how many messages the participant
	// received and has not released; Loaned, how many buffers it has on loan (lent, not yet
	// sent or discarded). Filled in by Stats, nil from Participants.
	Held, Loaned []int
}

// BridgeStats are the counters a NATS bridge keeps in its participant slot, so that any
// process reading the region (offq exporter, offq stat) sees them.
type BridgeStats struct {
	ID                                       string // the bridge's instance id (recorded by the first SetBridgeStats; at most 32 bytes)
	Forwarded, Imported, Dropped, Reconnects uint64
	Disconnects, Mismatched, Looped, Gaps    uint64
	Pending                                  uint64 // messages waiting in the NATS reconnect buffer
	Connected                                bool   // the NATS connection is up
}

// setBridgeStats marks p as a NATS bridge and records its counters in its slot. The id is
// written by the first call only, before the slot says it is a bridge.
func (p *Participant) setBridgeStats(s BridgeStats) {
	p.slot.bridge[0].Store(s.Forwarded)
	p.slot.bridge[1].Store(s.Imported)
	p.slot.bridge[2].Store(s.Dropped)
	p.slot.bridge[3].Store(s.Reconnects)
	p.slot.bridge2[0].Store(s.Disconnects)
	p.slot.bridge2[1].Store(s.Mismatched)
	p.slot.bridge2[2].Store(s.Looped)
	p.slot.bridge2[3].Store(s.Gaps)
	p.slot.bridge2[4].Store(s.Pending)
	var c uint64
	if s.Connected {
		c = 1
	}
	p.slot.bridge2[5].Store(c)
	if p.slot.role.Load() != 1 {
		p.slot.bridgeID = [32]byte{}
		copy(p.slot.bridgeID[:], truncateUTF8(s.ID, len(p.slot.bridgeID)))
		p.slot.role.Store(1)
	}
}

// Participants lists the slots that are attached, live or dead.
func (r *Region) Participants() (_ []ParticipantInfo) {
	defer unguard(guard(), nil) // a fault (the file truncated) returns the zero value
	return r.participants()
}

func (r *Region) participants() []ParticipantInfo {
	if !r.enterRead() {
		return nil
	}
	defer r.exitRead()
	var out []ParticipantInfo
	for i := range r.cfg.Participants {
		s := (*participantSlot)(r.at(r.participantOffset(i)))
		if s.state.Load()&0xff != partAttached {
			continue
		}
		alive, _ := r.Alive(int(i))
		n := 0
		for n < len(s.name) && s.name[n] != 0 {
			n++
		}
		info := ParticipantInfo{Index: int(i), Name: string(s.name[:n]), PID: int(s.pid),
			Attached: time.Unix(0, s.attached), Alive: alive}
		if s.role.Load() == 1 {
			id := 0
			for id < len(s.bridgeID) && s.bridgeID[id] != 0 {
				id++
			}
			info.Bridge = &BridgeStats{ID: string(s.bridgeID[:id]), Forwarded: s.bridge[0].Load(), Imported: s.bridge[1].Load(),
				Dropped: s.bridge[2].Load(), Reconnects: s.bridge[3].Load(),
				Disconnects: s.bridge2[0].Load(), Mismatched: s.bridge2[1].Load(), Looped: s.bridge2[2].Load(),
				Gaps: s.bridge2[3].Load(), Pending: s.bridge2[4].Load(), Connected: s.bridge2[5].Load() == 1}
		}
		out = append(out, info)
	}
	return out
}

// truncateUTF8 cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
