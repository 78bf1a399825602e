package shm

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// topicEntry is the fixed part of one topic-table entry (320 bytes); the topic's history ring
// of HistoryDepth cells follows it.
//
//	off  size  field
//	0    8     state: 0 free, else claimer participant+1 <<16 | 1 (claiming), 2 (ready),
//	           3 (reclaimed: free for a new name, but lookups probe past it) or 4 (condemned:
//	           ready, being checked for users by ReclaimTopics of that participant)
//	8    8     FNV-1a 64 of the name
//	16   4     name length
//	20   4     history depth of this topic (<= HistoryDepth)
//	24   8     type fingerprint: 0 none recorded yet; below 2^16 a claim in progress by that
//	           participant index + 1; else the fingerprint
//	32   16    codec name, NUL-padded
//	48   8     generation, twice: g<<32 | g, bumped each time the audit reclaims the entry (a
//	           Topic value from before no longer names it); a word whose halves differ is damage
//	64   128   name
//	192  8     next sequence number (publishers take one each)
//	200  8     bytes published
//	208  8     history position (cells written so far)
//	216  40    type name, NUL-padded (truncated on a UTF-8 boundary), written with the codec
//	256  8     requests sent on the topic (request.go)
//	264  8     replies sent to its requests
//	272  8     requests that timed out
//	280  8     requests that found no responder
//	288  8     requests whose responder died before replying
//	296  8     queue-group drops: messages a dead queue-group member had not taken, released by
//	           the reaper (queuegroup.go)
//	304  8     the topic's slot ring: the handle of its buffer, 0 if none (slotring.go)
//	312  8     zero
type topicEntry struct {
	state        atomic.Uint64
	hash         uint64
	nameLen      uint32
	histDepth    uint32
	fingerprint  atomic.Uint64
	codec        [16]byte
	gen          atomic.Uint64
	_            [8]byte
	name         [128]byte
	seq          atomic.Uint64
	bytes        atomic.Uint64
	histPos      atomic.Uint64
	typeName     [40]byte
	requests     atomic.Uint64
	replies      atomic.Uint64
	reqTimeouts  atomic.Uint64
	reqNoResp    atomic.Uint64
	reqDied      atomic.Uint64
	groupDropped atomic.Uint64
	ring         atomic.Uint64
	_            [8]byte
}

// forget erases what the entry says of the topic it held and bumps its generation, so that no
// Topic value from before names it: the audit and ReclaimTopics call it on an entry they hold
// (claiming), before they make it reclaimed.
func (e *topicEntry) forget() {
	e.gen.Store(nextTopicGen(e.gen.Load()))
	e.hash = 0
	e.nameLen = 0
	e.histDepth = 0
	e.fingerprint.Store(0)
	e.codec = [16]byte{}
	e.name = [maxTopicName]byte{}
	e.seq.Store(0)
	e.bytes.Store(0)
	e.histPos.Store(0)
	e.typeName = [maxTypeName]byte{}
	e.ring.Store(0)
	for _, c := range []*atomic.Uint64{&e.requests, &e.replies, &e.reqTimeouts, &e.reqNoResp, &e.reqDied, &e.groupDropped} {
		c.Store(0)
	}
}

const (
	topicFree     = 0
	topicClaiming = 1
	topicReady    = 2
	// topicReclaimed is an entry the audit freed while some other topic's probe sequence
	// passes through it: a new name may take it, but a lookup does not stop at it.
	topicReclaimed = 3
	// topicCondemned is a ready entry that a ReclaimTopics call is checking for users: it is
	// used exactly like a ready one, and a user that pins it revives it (back to ready).
	topicCondemned = 4
	maxTopicName   = 128
	maxTypeName    = 40
)

// Topic is a checked handle on a topic-table entry.
type Topic struct {
	r     *Region
	index uint32
	e     *topicEntry
	hist  unsafe.Pointer
	depth uint64
	gen   uint64       // the entry's generation when it was looked up
	p     *Participant // who looked it up (nil from Region.Topic): claims are made in its name
}

// stale reports whether the entry t was looked up from has since been reclaimed by an audit.
// The generation word holds its 32-bit generation twice, so that a scribbled word (the
// corruption tests write random words anywhere) reads as damage, not as a reclaim, and does
// not stop a publisher.
func (t Topic) stale() bool {
	w := t.e.gen.Load()
	return w != t.gen && topicGenValid(w)
}

func topicGenValid(w uint64) bool { return uint32(w) == uint32(w>>32) }

// nextTopicGen returns the generation word after w (a damaged word restarts at 1).
func nextTopicGen(w uint64) uint64 {
	g := uint64(uint32(w)) + 1
	if !topicGenValid(w) {
		g = 1
	}
	g &= 0xffffffff
	return g<<32 | g
}

func (r *Region) topicEntry(i uint32) (*topicEntry, unsafe.Pointer) {
	stride := uint64(topicEntrySize) + 8*uint64(r.cfg.HistoryDepth)
	off := r.lay.sec.topics.off + uint64(i)*stride
	return (*topicEntry)(r.at(off)), r.at(off + topicEntrySize)
}

// topicHashBytes is topicHash of a name held in bytes.
func topicHashBytes(name []byte) uint64 { return topicHash(string(name)) }

// topicHash is FNV-1a 64, inline so that it allocates nothing.
func topicHash(name string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	return h
}

// LookupTopic finds the topic called name, or creates it with the given history depth when
// create is true. The name must already be valid (package topics checks it); it is at most 128
// bytes. The table is open-addressed by the name's hash. An entry is removed by the audit
// (see Region.Reap), when nobody is attached and the topic has no history and no buffer names
// it, and by ReclaimTopics, when besides nobody pins it and no subscription matches it; the
// entry's generation then changes, so a Topic value from before is refused by Send and
// PinTopic. A caller that may race with ReclaimTopics pins the topic before using it.
// It fails with ErrTableFull when the table is full and ErrNotFound when create is false and
// the topic does not exist. Lookups of an existing
// topic allocate nothing except the first time a name is seen by the caller's cache (bus
// keeps one).
func (p *Participant) LookupTopic(name string, create bool, history int) (_ Topic, err error) {
	defer unguard(guard(), &err)
	r := p.r
	if len(name) == 0 || len(name) > maxTopicName {
		return Topic{}, fmt.Errorf("topic name of %d bytes: want 1 to %d", len(name), maxTopicName)
	}
	if history < 0 || history > int(r.cfg.HistoryDepth) {
		return Topic{}, fmt.Errorf("topic %q: history %d: the region allows 0 to %d", name, history, r.cfg.HistoryDepth)
	}
	hash := topicHash(name)
	n := r.cfg.Topics
	start := uint32(hash % uint64(n))
retry:
	// reuse is the first reclaimed entry on the probe sequence: a new topic takes it rather
	// than the free entry that ends the sequence, once the whole sequence is known not to hold
	// the name.
	var reuse *topicEntry
	var reuseIdx uint32
	var reuseHist unsafe.Pointer
	var reuseSt uint64
	claim := func(e *topicEntry, hist unsafe.Pointer, i uint32, st uint64) (Topic, bool) {
		if !e.state.CompareAndSwap(st, uint64(p.owner)<<16|topicClaiming) {
			return Topic{}, false
		}
		if st&0xff == topicReclaimed {
			// A reclaimer that died between claiming and forgetting left the old topic's
			// generation, type, counters and sequence: a new name starts from none of them, and
			// a Topic value kept from the old one no longer names the entry.
			e.forget()
		}
		e.hash = hash
		e.nameLen = uint32(len(name))
		e.name = [128]byte{}
		copy(e.name[:], name)
		e.histDepth = uint32(history)
		gen := e.gen.Load()
		e.state.Store(uint64(p.owner)<<16 | topicReady)
		return Topic{r: r, index: i, e: e, hist: hist, depth: uint64(history), gen: gen, p: p}, true
	}
	for k := range n {
		i := start + k
		if i >= n {
			i -= n
		}
		e, hist := r.topicEntry(i)
		for {
			st := e.state.Load()
			switch st & 0xff {
			case topicFree:
				if !create {
					return Topic{}, fmt.Errorf("topic %q: %w", name, ErrNotFound)
				}
				if reuse != nil {
					if t, ok := claim(reuse, reuseHist, reuseIdx, reuseSt); ok {
						return t, nil
					}
					goto retry // the reclaimed entry was taken: it may have been by our name
				}
				if t, ok := claim(e, hist, i, st); ok {
					return t, nil
				}
				continue
			case topicReclaimed:
				if reuse == nil {
					reuse, reuseIdx, reuseHist, reuseSt = e, i, hist, st
				}
			case topicClaiming:
				// Another participant is writing this entry; it takes a few stores. If it
				// stays claiming, its claimer died mid-way (reaping frees it).
				if err := waitTopicClaim(r, e, st); err != nil {
					return Topic{}, fmt.Errorf("topic %q: %w", name, err)
				}
				continue
			case topicReady, topicCondemned:
				// The generation is read before the name and both are checked again after it,
				// as a sequence lock: a ReclaimTopics that frees the entry meanwhile (claims
				// it, bumps the generation, erases the name) makes us read it again, so a name
				// matched on its way out never comes back with the next topic's generation.
				gen := e.gen.Load()
				if e.hash == hash && int(e.nameLen) == len(name) && string(e.name[:len(name)]) == name {
					if e.state.Load() != st || e.gen.Load() != gen {
						continue
					}
					d := uint64(e.histDepth)
					if d > uint64(r.cfg.HistoryDepth) {
						r.hdr.corrupt.Add(1)
						d = 0
					}
					return Topic{r: r, index: i, e: e, hist: hist, depth: d, gen: gen, p: p}, nil
				}
			default:
				r.hdr.corrupt.Add(1) // scribbled state: skip the entry
			}
			break
		}
	}
	if create && reuse != nil {
		if t, ok := claim(reuse, reuseHist, reuseIdx, reuseSt); ok {
			return t, nil
		}
		goto retry
	}
	if !create {
		return Topic{}, fmt.Errorf("topic %q: %w", name, ErrNotFound)
	}
	return Topic{}, fmt.Errorf("topic %q: %w: all %d topics in use", name, ErrTableFull, n)
}

func waitTopicClaim(r *Region, e *topicEntry, st uint64) error {
	deadline := time.Now().Add(time.Second)
	for e.state.Load() == st {
		if time.Now().After(deadline) {
			owner := int(st>>16) - 1
			if alive, _ := r.Alive(owner); !alive {
				// The claimer died between claiming and publishing the entry: free it. It may
				// have been a reclaimed entry other names probe past, so it becomes one (the
				// next audit turns it back into a free entry if nothing probes past it).
				e.state.CompareAndSwap(st, topicReclaimed)
				return nil
			}
			return fmt.Errorf("%w: topic entry held by participant %d for over a second", ErrNotReady, owner)
		}
		runtime.Gosched()
	}
	return nil
}

// Topic returns the topic at table index i, if it is ready.
func (r *Region) Topic(i int) (Topic, error) {
	if i < 0 || i >= int(r.cfg.Topics) {
		return Topic{}, fmt.Errorf("%w: topic index %d out of range", ErrCorrupt, i)
	}
	e, hist := r.topicEntry(uint32(i))
	gen := e.gen.Load()
	if st := e.state.Load() & 0xff; st != topicReady && st != topicCondemned {
		return Topic{}, ErrNotFound
	}
	return Topic{r: r, index: uint32(i), e: e, hist: hist, depth: min(uint64(e.histDepth), uint64(r.cfg.HistoryDepth)), gen: gen}, nil
}

// Index returns the topic's table index.
func (t Topic) Index() int { return int(t.index) }

// Name returns the topic's name (allocates).
func (t Topic) Name() string {
	defer unguard(guard(), nil)
	return string(t.e.name[:min(t.e.nameLen, maxTopicName)])
}

// nextSeq takes the topic's next sequence number (starting at 1).
func (t Topic) nextSeq() uint64 { return t.e.seq.Add(1) }

// countBytes adds n bytes to the topic's published-bytes counter (none for n < 0: a message
// counted already). Send counts after its deliveries, off the path a subscriber waits on.
func (t Topic) countBytes(n int) {
	if n >= 0 {
		t.e.bytes.Add(uint64(n))
	}
}

// Published returns how many sequence numbers were taken: messages published on the topic.
func (t Topic) Published() uint64 {
	defer unguard(guard(), nil)
	return t.e.seq.Load()
}

// HistoryDepth returns how many past messages the topic keeps.
func (t Topic) HistoryDepth() int { return int(t.depth) }

// Fingerprint returns the type fingerprint and codec recorded on the topic (0 and "" if none,
// or if a claim is in progress).
func (t Topic) Fingerprint() (_ uint64, _ string) {
	defer unguard(guard(), nil)
	fp := t.settledFingerprint()
	if fp < fpClaimEnd {
		return 0, ""
	}
	n := 0
	for n < len(t.e.codec) && t.e.codec[n] != 0 {
		n++
	}
	if fp&^(1<<63) < fpClaimEnd {
		fp &^= 1 << 63 // a fingerprint SetFingerprint moved out of the claims' range
	}
	return fp, string(t.e.codec[:n])
}

// The fingerprint word is 0 (none recorded), a claim in progress, or the fingerprint. A claim
// is the claimer's participant index + 1 (below fpClaimEnd), so that a reaper, or a process
// waiting for the claim to finish, can tell that its claimer died and undo it.
const fpClaimEnd = 1 << 16

// SetFingerprint records fp, codec and typeName (the Go type's name, such as "main.Reading",
// truncated to 40 bytes on a UTF-8 boundary; "" for none) on the topic if none is recorded,
// and reports whether the topic's fingerprint is now fp. The first claimer wins; the codec and
// type names are written while claiming, before the fingerprint is published, so a reader
// never sees one without the others. A claim left by a participant that died is undone (by
// whoever waits on it, or by Reap). The claim is made in the name of the participant the topic
// was looked up by, else of any participant of this process attached to the region; with
// none, SetFingerprint records nothing and reports false.
//
// It fails with an error wrapping ErrCorrupt if the region's memory faults.
func (t Topic) SetFingerprint(fp uint64, codec, typeName string) (_ bool, err error) {
	if fp == 0 {
		return true, nil // untyped: records and checks nothing
	}
	defer unguard(guard(), &err)
	return t.setFingerprint(fp, codec, typeName), nil
}

func (t Topic) setFingerprint(fp uint64, codec, typeName string) bool {
	if fp < fpClaimEnd {
		fp |= 1 << 63 // reserved values; a hash lands on one with probability 2^-48
	}
	for {
		owner := t.claimer()
		if owner == 0 {
			return t.settledFingerprint() == fp
		}
		if t.e.fingerprint.CompareAndSwap(0, uint64(owner)) {
			if testHookFingerprintClaimed != nil {
				testHookFingerprintClaimed()
			}
			t.e.codec = [16]byte{}
			copy(t.e.codec[:], codec)
			t.e.typeName = [maxTypeName]byte{}
			copy(t.e.typeName[:], truncateUTF8(typeName, maxTypeName))
			if t.e.fingerprint.CompareAndSwap(uint64(owner), fp) {
				return true
			}
			continue // our participant detached while claiming, and its claim was undone
		}
		if v := t.settledFingerprint(); v != 0 {
			return v == fp
		}
	}
}

// TypeName returns the name of the Go type recorded on the topic with its fingerprint ("" if
// none, if a claim is in progress, or if the claimer recorded no name).
func (t Topic) TypeName() (_ string) {
	defer unguard(guard(), nil)
	return t.typeNameRead()
}

func (t Topic) typeNameRead() string {
	if t.settledFingerprint() < fpClaimEnd {
		return ""
	}
	n := 0
	for n < len(t.e.typeName) && t.e.typeName[n] != 0 {
		n++
	}
	return string(t.e.typeName[:n])
}

// claimer returns the participant (index + 1) in whose name this process claims the topic.
func (t Topic) claimer() uint32 {
	if t.p != nil && !t.p.gone.Load() {
		return t.p.owner
	}
	return t.r.anyOwner()
}

// testHookFingerprintClaimed, if set, runs between claiming the fingerprint word and
// publishing the fingerprint: a test kills the process there.
var testHookFingerprintClaimed func()

// settledFingerprint waits for a claim in progress to finish (it takes a few stores), and
// undoes it if its claimer is dead. It returns 0 after undoing a claim, and the claim itself
// if a live claimer holds it for more than a second (a stopped process).
func (t Topic) settledFingerprint() uint64 {
	var deadline time.Time
	for i := 0; ; i++ {
		v := t.e.fingerprint.Load()
		if v == 0 || v >= fpClaimEnd {
			return v
		}
		if i < 1<<10 {
			runtime.Gosched()
			continue
		}
		if alive, err := t.r.Alive(int(v) - 1); err != nil || !alive {
			// Its claimer died between claiming and publishing (or the word was scribbled).
			t.e.fingerprint.CompareAndSwap(v, 0)
			continue
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(time.Second)
		} else if time.Now().After(deadline) {
			return v
		}
		runtime.Gosched()
	}
}

// testHookRememberReserved, if set, runs in Remember between taking a history position and
// writing its cell.
var testHookRememberReserved func()

func (t Topic) histCell(pos uint64) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Add(t.hist, (pos%t.depth)*8))
}

// remember stores h, to which the caller gives one reference, as the topic's newest history
// entry, releasing the entry it displaces. A topic without history releases h at once. The
// buffer's header records the position it is stored at, so that HoldHistory can tell it from
// the message a full ring earlier that the cell holds until the store.
func (t Topic) remember(h Handle) {
	if t.depth == 0 {
		t.r.releaseDropped(h)
		return
	}
	pos := t.e.histPos.Add(1) - 1
	if p, s, _, err := t.r.decode(h); err == nil {
		p.trailer(s).histPos.Store(pos + 1) // the caller's reference keeps the slot h's
	}
	if testHookRememberReserved != nil {
		testHookRememberReserved()
	}
	if old := Handle(t.histCell(pos).Swap(uint64(h))); old != 0 {
		t.r.releaseDropped(old)
	}
}

// holdHistory takes a reference to each message in the topic's history, oldest first, for
// participant p, and calls fn with the held entry that records it (release it with
// p.Unhold(idx, h)). The entry is reserved and marked before the reference is taken, so there
// is no instant at which p holds a reference that no record names (see Region.Reap). Handles
// released while being read are skipped, and so is a cell whose Remember is under way (its
// position taken, its cell not yet written): it still holds the message from a full ring
// earlier, outside the window. It stops with ErrHeldFull when p's held list is full.
func (t Topic) holdHistory(p *Participant, fn func(idx int, h Handle)) error {
	if t.depth == 0 {
		return nil
	}
	end := t.e.histPos.Load()
	start := end - min(end, t.depth)
	for pos := start; pos < end; pos++ {
		h := Handle(t.histCell(pos).Load())
		if h == 0 || uint64(h)&^handleMask != 0 {
			continue
		}
		idx, err := p.reserve()
		if err != nil {
			return err
		}
		w := p.held.word(uint32(idx))
		w.Store(heldPending | uint64(h))
		if t.r.addRefsHandle(h, 1) != nil {
			w.Store(heldReserved)
			p.unreserve(idx)
			continue
		}
		w.Store(uint64(h))
		if b, err := t.r.buffer(h); err != nil || b.p.trailer(b.s).histPos.Load() != pos+1 {
			p.unhold(idx, h) // not the message of this position: gives our reference back
			continue
		}
		fn(idx, h)
	}
	return nil
}

// clearHistory releases every history entry (used when the last participant leaves a region
// it is about to remove, and by tests).
func (t Topic) clearHistory() {
	for i := range t.depth {
		if old := Handle(t.histCell(i).Swap(0)); old != 0 {
			t.r.releaseDropped(old)
		}
	}
}
