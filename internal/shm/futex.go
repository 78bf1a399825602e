package shm

import (
	"os"
	"sync/atomic"
	"time"
)

// A waiter word counts the waiters announced on one of an inbox's futex words (sleepers on
// wake, spaceWaiters on space): the low 32 bits of the inbox generation they announced in
// (bits 32-63) and their number (bits 0-31). OpenInbox starts each generation's words at
// zero. A waiter takes its announcement back only from the generation it made it in, and
// never below zero: a waiter whose thread runs again only after its inbox was closed and the
// entry reopened changes nothing in the new count.
func waiterWord(gen uint64) uint64 { return (gen & 0xffffffff) << 32 }

// waiters returns the number of waiters a waiter word counts.
func waiters(v uint64) uint32 { return uint32(v) }

// waitersOf returns the number of waiters a waiter word counts for generation gen (0 if the
// word is another generation's).
func waitersOf(v, gen uint64) uint32 {
	if v>>32 != gen&0xffffffff {
		return 0
	}
	return uint32(v)
}

// announce adds a waiter to w for generation gen. It fails if w counts another generation's
// waiters (the inbox was closed and its entry reopened), or is full.
func announce(w *atomic.Uint64, gen uint64) bool {
	for {
		v := w.Load()
		if v>>32 != gen&0xffffffff || uint32(v) == 1<<32-1 {
			return false
		}
		if w.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// retract takes back n waiters of generation gen from w: none if w counts another
// generation's, and never more than it counts.
func retract(w *atomic.Uint64, gen, n uint64) {
	for {
		v := w.Load()
		if v>>32 != gen&0xffffffff || uint32(v) == 0 {
			return
		}
		if w.CompareAndSwap(v, v-min(n, uint64(uint32(v)))) {
			return
		}
	}
}

// slotWaits is the number of wait records in a participant slot.
const slotWaits = 4

// A wait record in a participant slot says that the participant has count announcements in
// the space waiter word of inbox idx, generation gen: count<<48 | (gen & 0xffffffff)<<16 |
// idx. A producer records its announcement after making it and erases the record before
// taking it back, so a kill between the two leaves one waiter too many (spurious wake-ups,
// never a lost one); a reaper takes back what a dead participant's records say (see
// Region.undoWaits). A participant with more than slotWaits inboxes to wait on at once waits
// on the others without announcing itself, re-checking every pollSleep.
type waitRecord struct {
	slot *participantSlot // nil: no record (the waiter's participant is not known)
	key  uint64           // (gen & 0xffffffff)<<16 | idx
}

const (
	waitOne     = 1 << 48
	waitKeyMask = waitOne - 1
)

// pollSleep bounds one futex wait of a waiter that could not announce itself.
var pollSleep = time.Millisecond // a variable only so that tests can make a poll hang

// enter records one more announcement and returns the record it is in, or nil if every
// record is in use for another inbox.
func (w waitRecord) enter() *atomic.Uint64 { return w.enterIn(w.slot.waits[:]) }

// enterIn is enter on the records recs of the slot.
func (w waitRecord) enterIn(recs []atomic.Uint64) *atomic.Uint64 {
	for i := range recs {
		e := &recs[i]
		for {
			v := e.Load()
			if v == 0 || v&waitKeyMask != w.key || v>>48 == 1<<16-1 {
				break
			}
			if e.CompareAndSwap(v, v+waitOne) {
				return e
			}
		}
	}
	for i := range recs {
		e := &recs[i]
		if e.Load() == 0 && e.CompareAndSwap(0, w.key|waitOne) {
			return e
		}
	}
	return nil
}

// leaveWait erases one announcement from record e.
func leaveWait(e *atomic.Uint64) {
	for {
		v := e.Load()
		if v>>48 == 0 {
			return
		}
		n := v - waitOne
		if n>>48 == 0 {
			n = 0
		}
		if e.CompareAndSwap(v, n) {
			return
		}
	}
}

// ourPID is this process's pid, read once: spaceRecord runs on every DropOldest eviction,
// and os.Getpid is a system call. (A Go process does not fork without exec.)
var ourPID = uint32(os.Getpid())

// spaceRecord returns where a producer delivering from buffer s records its wait for room in
// inbox in: the slot of the participant the buffer is on loan to, if that participant is
// attached by this process (the pid it recorded is ours). Any other producer waits without a
// record.
func (in *Inbox) spaceRecord(s *slotHeader) waitRecord {
	if s == nil {
		return waitRecord{}
	}
	r := in.v.r
	owner := stateOwner(s.state.Load())
	if owner == 0 || owner > r.cfg.Participants {
		return waitRecord{}
	}
	slot := (*participantSlot)(r.at(r.participantOffset(owner - 1)))
	if slot.state.Load()&0xff != partAttached || slot.pid != ourPID {
		return waitRecord{}
	}
	return waitRecord{slot: slot, key: (in.gen&0xffffffff)<<16 | uint64(in.v.index)}
}

// slotEvicts is the number of eviction records in a participant slot.
const slotEvicts = 2

// An eviction record in a participant slot says that the participant is evicting count
// messages from inbox idx, generation gen (DropOldest), in the format of a wait record. An
// eviction takes the oldest message out of the ring and then counts it as dropped: a producer
// killed between the two would leave a message gone that no counter shows, a gap its
// subscriber cannot tell from a loss. So the producer records the eviction before taking and
// erases the record after counting, and a reaper counts what a dead participant's records say
// as dropped (Region.undoEvicts): a kill anywhere in between counts at most one eviction too
// many, never one too few. A participant with more than slotEvicts evictions in flight in
// different inboxes evicts without a record, and one kill at that instant can miss a count.
func (in *Inbox) evictRecord(s *slotHeader) *atomic.Uint64 {
	rec := in.spaceRecord(s)
	if rec.slot == nil {
		return nil
	}
	return rec.enterIn(rec.slot.evicts[:])
}

// undoEvicts counts the evictions that participant slot i's records say were in flight as
// dropped (the participant is dead: a reaper holds its slot lock) and erases the records.
func (r *Region) undoEvicts(i uint32) {
	s := (*participantSlot)(r.at(r.participantOffset(i)))
	for k := range s.evicts {
		v := s.evicts[k].Swap(0)
		idx := v & 0xffff
		if v>>48 == 0 || idx >= uint64(len(r.inboxes)) {
			continue
		}
		hd := r.inboxes[idx].hdr
		if st := hd.state.Load(); wordStatus(st) == inboxOpen && wordGen(st)&0xffffffff == v>>16&0xffffffff {
			hd.dropOldest.Add(v >> 48)
		}
	}
}

// undoWaits takes back the announcements that participant slot i's records say it made (the
// participant is dead: a reaper holds its slot lock) and erases the records.
func (r *Region) undoWaits(i uint32) {
	s := (*participantSlot)(r.at(r.participantOffset(i)))
	for k := range s.waits {
		v := s.waits[k].Swap(0)
		idx := v & 0xffff
		if v>>48 == 0 || idx >= uint64(len(r.inboxes)) {
			continue
		}
		retract(&r.inboxes[idx].hdr.spaceWaiters, v>>16&0xffffffff, v>>48)
	}
	// Its room bell, in every inbox: a wait may have set one without a record (a producer
	// whose loan names no participant of its process, a kill between setting the bit and
	// recording the wait), and a bit left set would ring the slot's next occupant on every
	// take from that inbox.
	if i < r.cfg.Participants {
		for k := range r.inboxes {
			if w, bit := r.roomBell(uint32(k), i); w.Load()&bit != 0 {
				w.And(^bit)
			}
		}
	}
}

// The inbox's wake-ups go through these three functions and nowhere else, so that how a sleeper
// is woken (the futex words today) is decided in one place.

// wakeConsumer wakes the inbox's consumer if one announced itself asleep: called after a
// message is committed (or a cell repaired) so that a sleeping Take finds it. A consumer
// asleep in the kernel itself is woken on the inbox's wake word, parked ones through the bell
// of the inbox's owner, after marking the inbox in the owner's rung set (see doorbell.go).
// Both words are rung the same way: at most one futex call per sleep.
func wakeConsumer(v *inboxView) {
	hd := v.hdr
	if waiters(hd.sleepers.Load()) != 0 {
		ring(&hd.wake)
	}
	if waiters(hd.parked.Load()) != 0 {
		v.ringOwner()
	}
}

// wakeProducers wakes producers announced asleep for room (Block policy): called after the
// head moves. It rings the bell of each participant with a producer waiting.
func wakeProducers(v *inboxView) {
	if waiters(v.hdr.spaceWaiters.Load()) != 0 {
		if testHookWakeProducers != nil {
			testHookWakeProducers()
		}
		v.ringSpaceBells()
	}
}

// testHookWakeProducers, if set, runs when a wake-up of producers waiting for room finds some.
var testHookWakeProducers func()

// wakeAll wakes every sleeper on the inbox whether announced or not: called when the inbox
// closes or is reclaimed, so that nobody sleeps on an entry that is gone.
func wakeAll(v *inboxView) {
	hd := v.hdr
	hd.wake.Store(bellAwake)
	futexWakeAll(&hd.wake)
	v.ringOwner()
	v.ringSpaceBells()
}
