package shm

import (
	"errors"
	"fmt"
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// Pins and reclaiming topics while others are attached (see docs/architecture.md, "Freeing
// topics").
//
// A participant that uses a topic entry (a publisher for its life, a subscriber while it sets
// up) pins it: it sets bit i of its row of the pins section, then re-reads the entry. A
// reclaimer condemns an entry (ready -> condemned, a compare-and-swap), then reads every
// participant's bit for it. Both are sequentially consistent atomics, so one of the two sees
// the other: the pinner sees the condemned state and revives the entry (condemned -> ready),
// which makes the reclaimer's condemned -> claiming swap fail, or the reclaimer sees the bit
// and keeps the entry. A pinner that comes after the entry was reclaimed (its state no longer
// ready or condemned, or its generation moved) takes its bit back and fails with
// ErrTopicReclaimed.

// pinWord returns word k of participant i's row of the pins section.
func (r *Region) pinWord(i uint32, k uint64) *atomic.Uint64 {
	return (*atomic.Uint64)(r.at(r.lay.sec.pins.off + (uint64(i)*pinWords(r.cfg.Topics)+k)*8))
}

// clearPins clears participant i's row (its Detach, or a reaper once it died).
func (r *Region) clearPins(i uint32) {
	for k := range pinWords(r.cfg.Topics) {
		r.pinWord(i, k).Store(0)
	}
}

// Pinners returns, per topic index, how many participants pin the topic: the publishers of
// package bus (each process's Publishers of a topic share one pin), and subscribers setting up.
// It reads shared memory only.
func (r *Region) Pinners() (_ []int) {
	defer unguard(guard(), nil)
	if !r.enterRead() {
		return nil
	}
	defer r.exitRead()
	return r.pinners()
}

func (r *Region) pinners() []int {
	out := make([]int, r.cfg.Topics)
	for q := range r.cfg.Participants {
		for k := range pinWords(r.cfg.Topics) {
			w := r.pinWord(q, k).Load()
			for w != 0 {
				b := uint64(bits.TrailingZeros64(w))
				w &^= 1 << b
				if i := k*64 + b; i < uint64(len(out)) { // bits past Topics: a scribble
					out[i]++
				}
			}
		}
	}
	return out
}

// PinTopic records that p uses t: while the pin is held, ReclaimTopics does not free t's
// entry, so t stays the topic it was looked up as. Pins are counted per topic in the process:
// the shared bit is set by the first PinTopic and cleared by the matching last UnpinTopic.
// PinTopic fails with ErrTopicReclaimed if t's entry was reclaimed since t was looked up (look
// the name up again), and with ErrClosed if p is detached. It allocates nothing.
func (p *Participant) PinTopic(t Topic) (err error) {
	if t.r != p.r || t.index >= p.r.cfg.Topics {
		return errors.New("shm: PinTopic: a topic of another region, or no topic")
	}
	defer unguard(guard(), &err)
	p.pinMu.Lock()
	defer p.pinMu.Unlock()
	if p.gone.Load() {
		return ErrClosed
	}
	i := t.index
	w := p.r.pinWord(p.idx, uint64(i/64))
	bit := uint64(1) << (i % 64)
	if p.pins[i] == 0 {
		w.Or(bit)
	}
	for {
		st := t.e.state.Load()
		if (st&0xff == topicReady || st&0xff == topicCondemned) && !t.stale() {
			if st&0xff == topicCondemned && !t.e.state.CompareAndSwap(st, st&^0xff|topicReady) {
				continue // the reclaimer decided first: see what it decided
			}
			p.pins[i]++
			return nil
		}
		if p.pins[i] == 0 {
			w.And(^bit)
		}
		return ErrTopicReclaimed
	}
}

// UnpinTopic drops a pin PinTopic took. It does nothing once p is detached (Detach cleared
// its pins) or if t is not pinned.
func (p *Participant) UnpinTopic(t Topic) {
	if t.r != p.r || t.index >= p.r.cfg.Topics {
		return
	}
	defer unguard(guard(), nil)
	p.pinMu.Lock()
	defer p.pinMu.Unlock()
	i := t.index
	if p.gone.Load() || p.pins[i] == 0 {
		return
	}
	p.pins[i]--
	if p.pins[i] == 0 {
		p.r.pinWord(p.idx, uint64(i/64)).And(^(uint64(1) << (i % 64)))
	}
}

// testHookReclaimCondemned, if set, runs in ReclaimTopics after it condemned the candidates
// and before it reads the pins: a test kills the reclaimer there, or pins a topic.
var testHookReclaimCondemned func()

// testHookReclaimClaimed, if set, runs in ReclaimTopics after it claimed an entry to free and
// before it bumped the entry's generation: a test kills the reclaimer there.
var testHookReclaimClaimed func()

// ReclaimTopics frees every topic entry that nothing uses, while other processes may be
// attached: no participant pins it, its history is empty, no open subscription's pattern
// matches its name, and no allocated buffer (other than a loan) names it. It returns how many
// it freed. A freed entry gets a new generation (a Topic value from before is refused by Send
// and PinTopic with ErrTopicReclaimed) and becomes reclaimed: a new name may take it, and the
// next audit makes it free if no other topic's probe sequence crosses it.
//
// Topic values used without a pin are not protected: a process that publishes while others
// may reclaim must pin the topic first (package bus does, for every Publisher). Reclaiming is
// done by p, in whose name the entries are condemned and claimed, so that a reaper can undo
// what a reclaimer killed half-way left. It reads every buffer's header once: call it on
// demand (a full table, an operator's reap), not on a timer. match reports whether a
// subscription pattern matches a topic name: the caller's publish path's matcher (package
// topics'), which this package does not know.
func (r *Region) ReclaimTopics(p *Participant, match func(pattern, name string) bool) (n int, err error) {
	if p == nil || p.r != r {
		return 0, &Error{Op: "reclaim topics", Name: r.name, Err: fmt.Errorf("%w: participant of another region", ErrPermission)}
	}
	if p.gone.Load() || r.closed.Load() {
		return 0, &Error{Op: "reclaim topics", Name: r.name, Err: ErrClosed}
	}
	defer unguard(guard(), &err)
	r.reclaimMu.Lock()
	defer r.reclaimMu.Unlock()
	nt := r.cfg.Topics
	condemned := uint64(p.owner)<<16 | topicCondemned
	// 1. Condemn every ready entry. From here a pinner revives what it uses.
	cand := make(map[uint32]bool)
	for i := range nt {
		e, _ := r.topicEntry(i)
		if st := e.state.Load(); st&0xff == topicReady && e.state.CompareAndSwap(st, condemned) {
			cand[i] = true
		}
	}
	if len(cand) == 0 {
		return 0, nil
	}
	if testHookReclaimCondemned != nil {
		testHookReclaimCondemned()
	}
	// 2. Pins, read after condemning (the Dekker pair with PinTopic), and before the buffers:
	// a publisher unpins only after its last Send ended, so its messages are in buffers by then.
	for i, c := range r.pinners() {
		if c > 0 {
			delete(cand, uint32(i))
		}
	}
	// 3. Histories: every cell, whatever the topic's depth.
	for i := range cand {
		_, cells := r.topicEntry(i)
		for k := range uint64(r.cfg.HistoryDepth) {
			if (*atomic.Uint64)(unsafe.Add(cells, k*8)).Load() != 0 {
				delete(cand, i)
				break
			}
		}
	}
	// 4. Open subscriptions whose pattern matches the name, with the publish path's matcher.
	if len(cand) > 0 {
		subs := r.subscriptions(nil)
		for i := range cand {
			e, _ := r.topicEntry(i)
			name := string(e.name[:min(e.nameLen, maxTopicName)])
			for _, s := range subs {
				if match(s.Pattern, name) {
					delete(cand, i)
					break
				}
			}
		}
	}
	// 5. Messages: allocated buffers not on loan whose header names the topic (a loan's header
	// is being written by a publisher, which pins its topic).
	for c := range r.pools {
		if len(cand) == 0 {
			break
		}
		pl := &r.pools[c]
		for j := range pl.count {
			s := pl.slot(j)
			v := s.state.Load()
			if stateRefs(v) == 0 || stateOwner(v) != 0 {
				continue
			}
			delete(cand, s.topic)
		}
	}
	// 6. Decide: free the unused, revive the rest.
	for i := range nt {
		e, _ := r.topicEntry(i)
		if !cand[i] {
			e.state.CompareAndSwap(condemned, condemned&^0xff|topicReady)
			continue
		}
		if !e.state.CompareAndSwap(condemned, uint64(p.owner)<<16|topicClaiming) {
			continue // a pinner revived it
		}
		if testHookReclaimClaimed != nil {
			testHookReclaimClaimed()
		}
		e.forget()
		e.state.Store(topicReclaimed)
		n++
	}
	return n, nil
}

// undoCondemned revives the entries participant owner (index + 1) condemned and did not
// decide on: it detached, or died, in the middle of a ReclaimTopics.
func (r *Region) undoCondemned(owner uint32) {
	for t := range r.cfg.Topics {
		e, _ := r.topicEntry(t)
		if st := e.state.Load(); st&0xff == topicCondemned && uint32(st>>16) == owner {
			e.state.CompareAndSwap(st, st&^0xff|topicReady)
		}
	}
}
