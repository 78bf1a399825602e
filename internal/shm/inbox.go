package shm

import (
	"fmt"
	"math/bits"
	"sync/atomic"
	"time"
	"unsafe"
)

// Overflow says what a producer does when an inbox is full.
type Overflow uint32

const (
	// DropOldest: the producer evicts the oldest message, releases it, and pushes. Counted as
	// dropped, reason "oldest". The default: real-time data wants the newest value.
	DropOldest Overflow = iota
	// DropNewest: the push fails with ErrFull; counted as dropped, reason "newest".
	DropNewest
	// Block: the producer waits for room until its context is done or the inbox's block
	// limit passes, then fails with ErrTimeout; counted as dropped, reason "timeout".
	Block
)

func (p Overflow) String() string {
	switch p {
	case DropOldest:
		return "drop-oldest"
	case DropNewest:
		return "drop-newest"
	case Block:
		return "block"
	}
	return fmt.Sprintf("Policy(%d)", uint32(p))
}

// Inbox states (low byte of inboxHeader.state; the owner and a 40-bit generation are above it).
const (
	inboxFree    = 0
	inboxOpening = 1
	inboxOpen    = 2
	inboxClosing = 3
	inboxGenMask = 1<<40 - 1
)

// inboxWord builds an inbox state word: status (bits 0-7), the owning participant + 1 (8-23)
// and the generation (24-63). The owner is in the state word, not only in a field beside it, so
// that an inbox claimed by a process that then died is attributed to that process by the
// same compare-and-swap that claimed it. The generation is 40 bits wide so that an Inbox or
// InboxID kept while its entry is closed and reopened never names a later generation: at a
// million reopenings a second it would take twelve days to come round.
func inboxWord(status, gen uint64, owner uint32) uint64 {
	return (gen&inboxGenMask)<<24 | uint64(owner&0xffff)<<8 | status
}

func wordStatus(st uint64) uint64 { return st & 0xff }
func wordGen(st uint64) uint64    { return st >> 24 & inboxGenMask }
func wordOwner(st uint64) uint32  { return uint32(st>>8) & 0xffff }

// InboxID names an inbox across processes: table index (bits 0-15) and generation (16-55).
type InboxID uint64

// Index returns the inbox's table index.
func (id InboxID) Index() int { return int(id & 0xffff) }

func makeInboxID(idx uint32, gen uint64) InboxID {
	return InboxID((gen&inboxGenMask)<<16 | uint64(idx&0xffff))
}

// inboxView is this process's fixed view of one inbox-table entry.
type inboxView struct {
	r     *Region
	index uint32
	hdr   *inboxHeader
	cells unsafe.Pointer
}

// Inbox is a checked handle on an open inbox ring: a small value, cheap to copy and to keep
// per destination. Push may be called from any process and goroutine; Pop and Wait are for the
// inbox's consumer (its owner), though concurrent calls are safe.
type Inbox struct {
	v      *inboxView
	gen    uint64 // the entry's generation (40 bits)
	tag    uint64 // its low 14 bits, where ring cells keep them (bits 48-61)
	mask   uint64
	cap    uint64
	shift  uint
	policy Overflow
	block  time.Duration
	group  bool       // a queue-group member (kind 2) when the Inbox was made
	ring   *InboxRing // the consumer's side of a slot ring it reads (see InboxConfig.RingOf), or nil
}

// InboxConfig says how a new inbox behaves.
type InboxConfig struct {
	// Capacity is a power of two no larger than the region's InboxCapacity; 0 means the
	// region's InboxCapacity.
	Capacity int
	// Overflow is what producers do when the inbox is full.
	Overflow Overflow
	// BlockLimit bounds a producer's wait under Block (0: only the producer's context bounds it).
	BlockLimit time.Duration
	// Pattern is the subscription pattern publishers match topics against (up to 128 bytes,
	// with the group's name).
	Pattern string
	// Group, if set, makes the inbox a member of the queue group of that name: a publisher
	// delivers each message to one member of each group whose pattern matches (see
	// queuegroup.go). The name is kept after the pattern, in its 128 bytes.
	Group string
	// Reply makes the inbox a reply inbox (kind 1): no pattern, no publisher matches it;
	// responders push replies into it by its InboxID (see request.go).
	Reply bool
	// RingOf, for a DropOldest inbox in no group whose Pattern is this topic's name, makes the
	// inbox read the topic's slot ring whenever it has one with more slots than the inbox has
	// cells (inboxring.go). Ignored otherwise.
	RingOf *Topic
}

// Inbox kinds (inboxHeader.kind).
const (
	kindPlain = 0
	kindReply = 1
	kindGroup = 2
)

// OpenInbox claims a free inbox for p. It fails with ErrTableFull when none is free.
func (p *Participant) OpenInbox(c InboxConfig) (_ Inbox, err error) {
	defer unguard(guard(), &err)
	r := p.r
	capacity := uint64(c.Capacity)
	if capacity == 0 {
		capacity = uint64(r.cfg.InboxCapacity)
	}
	if capacity < 2 || capacity > uint64(r.cfg.InboxCapacity) || bits.OnesCount64(capacity) != 1 {
		return Inbox{}, fmt.Errorf("inbox capacity %d: want a power of two from 2 to %d", c.Capacity, r.cfg.InboxCapacity)
	}
	if len(c.Pattern)+len(c.Group) > patternSize {
		return Inbox{}, fmt.Errorf("inbox pattern and group of %d bytes: the limit is %d", len(c.Pattern)+len(c.Group), patternSize)
	}
	if c.Reply && (c.Pattern != "" || c.Group != "") {
		return Inbox{}, fmt.Errorf("a reply inbox has no pattern or group")
	}
	if c.Overflow > Block {
		return Inbox{}, fmt.Errorf("inbox policy %v: unknown", c.Overflow)
	}
	for i := range r.inboxes {
		v := &r.inboxes[i]
		step()
		st := v.hdr.state.Load()
		if wordStatus(st) != inboxFree {
			continue
		}
		gen := (wordGen(st) + 1) & inboxGenMask
		if !v.hdr.state.CompareAndSwap(st, inboxWord(inboxOpening, gen, p.owner)) {
			continue
		}
		h := v.hdr
		h.capacity = uint32(capacity)
		h.policy = uint32(c.Overflow)
		h.owner = p.owner
		h.topic = 0
		var ring *InboxRing
		if c.RingOf != nil && c.Overflow == DropOldest && c.Group == "" && !c.Reply && c.RingOf.r == r {
			ring = p.newInboxRing(*c.RingOf, capacity, uint32(i))
			h.topic = c.RingOf.index + 1
		}
		h.blockNanos = int64(c.BlockLimit)
		pat := r.pattern(uint32(i))
		*pat = [patternSize]byte{}
		copy(pat[:], c.Pattern)
		copy(pat[len(c.Pattern):], c.Group)
		h.patternLen = uint32(len(c.Pattern))
		h.kind, h.groupHash, h.groupLen = kindPlain, 0, 0
		switch {
		case c.Reply:
			h.kind = kindReply
		case c.Group != "":
			h.kind, h.groupHash, h.groupLen = kindGroup, topicHash(c.Group), uint64(len(c.Group))
		}
		h.awaiting.Store(0)
		h.sleepers.Store(waiterWord(gen))
		h.spaceWaiters.Store(waiterWord(gen))
		h.spaceBells.Store(0)
		for k := range highBellWords(r.cfg.Participants) {
			r.highBellWord(uint32(i), k).Store(0)
		}
		h.parked.Store(waiterWord(gen))
		h.wake.Store(bellAwake)
		h.dropOldest.Store(0)
		h.dropNewest.Store(0)
		h.dropTimeout.Store(0)
		h.corrupt.Store(0)
		h.skipped.Store(0)
		h.ringLost.Store(0)
		h.noted.Store(0)
		for i := range h.ageCounts {
			h.ageCounts[i].Store(0)
		}
		h.ageSum.Store(0)
		in := v.inbox(gen, uint32(capacity), c.Overflow, c.BlockLimit)
		in.group = h.kind == kindGroup
		in.ring = ring
		// Positions continue from where the previous user of this entry stopped, so that no
		// position is ever reused for another generation.
		step()
		t := h.tail.Load()
		for pos := t; pos < t+capacity; pos++ {
			step()
			in.cell(pos).Store(in.empty(pos))
		}
		step()
		h.head.Store(t)
		h.base = t
		step()
		h.state.Store(inboxWord(inboxOpen, gen, p.owner))
		r.hdr.subGen.Add(1)
		return in, nil
	}
	return Inbox{}, &Error{Op: "open inbox", Name: r.name, Err: fmt.Errorf("%w: all %d inboxes in use", ErrTableFull, len(r.inboxes))}
}

func (v *inboxView) inbox(gen uint64, capacity uint32, policy Overflow, block time.Duration) Inbox {
	return Inbox{v: v, gen: gen, tag: gen & cellGenMask << 48, mask: uint64(capacity) - 1, cap: uint64(capacity),
		shift: uint(bits.TrailingZeros32(capacity)), policy: policy, block: block}
}

// inbox returns a handle on the open inbox id, checking that the entry is open with the same
// generation and that its recorded capacity and policy are valid. It allocates nothing.
func (r *Region) inbox(id InboxID) (Inbox, error) {
	idx := uint32(id) & 0xffff
	if idx >= uint32(len(r.inboxes)) {
		return Inbox{}, fmt.Errorf("%w: inbox index %d out of range", ErrCorrupt, idx)
	}
	v := &r.inboxes[idx]
	st := v.hdr.state.Load()
	gen := uint64(id>>16) & inboxGenMask
	if wordStatus(st) != inboxOpen || wordGen(st) != gen {
		return Inbox{}, ErrClosed
	}
	c := v.hdr.capacity
	if c < 2 || c > r.cfg.InboxCapacity || c&(c-1) != 0 || v.hdr.policy > uint32(Block) {
		v.countDamage(damageKey(3, uint64(c), uint64(v.hdr.policy))) // every publisher meets it: count it once
		return Inbox{}, fmt.Errorf("%w: inbox %d: capacity %d, policy %d", ErrCorrupt, idx, c, v.hdr.policy)
	}
	in := v.inbox(gen, c, Overflow(v.hdr.policy), time.Duration(max(v.hdr.blockNanos, 0)))
	in.group = v.hdr.kind == kindGroup
	return in, nil
}

// ID returns the inbox's cross-process name.
func (in *Inbox) ID() InboxID { return makeInboxID(in.v.index, in.gen) }

// Capacity returns the ring's capacity.
func (in *Inbox) Capacity() int { return int(in.cap) }

// Overflow returns the inbox's overflow policy.
func (in *Inbox) Overflow() Overflow { return in.policy }

// Len returns the number of messages waiting (a snapshot), in the inbox and, for an inbox that
// reads a slot ring, in the ring.
func (in *Inbox) Len() int {
	defer unguard(guard(), nil) // a fault (the file truncated) reads as empty
	n := in.length()
	if in.ring != nil {
		n += in.ring.backlog()
	}
	return n
}

func (in *Inbox) length() int {
	t, h := in.v.hdr.tail.Load(), in.v.hdr.head.Load()
	if t <= h {
		return 0
	}
	return int(min(t-h, in.cap))
}

// isOpen reports whether the inbox entry is still open with this Inbox's generation.
func (in *Inbox) isOpen() bool {
	st := in.v.hdr.state.Load()
	return wordStatus(st) == inboxOpen && wordGen(st) == in.gen
}

// close closes an inbox owned by p: producers that still hold it get ErrClosed from then on,
// and every message left in it is released. close is idempotent for a given Inbox value.
func (in *Inbox) close() error {
	hd := in.v.hdr
	step()
	st := hd.state.Load()
	if wordStatus(st) != inboxOpen || wordGen(st) != in.gen || !hd.state.CompareAndSwap(st, inboxWord(inboxClosing, in.gen, wordOwner(st))) {
		return nil
	}
	in.drainClosed()
	// Wake anyone still waiting on the words, then free the entry (the generation stays).
	wakeAll(in.v)
	step()
	hd.state.Store(inboxWord(inboxFree, in.gen, 0))
	in.v.r.hdr.subGen.Add(1)
	return nil
}

// drainClosed turns every cell into an empty marker of the next generation, which no producer
// of this generation will fill, releasing the handles it finds; afterwards the ring is inert.
func (in *Inbox) drainClosed() { in.drainCount() }

// drainCount is drainClosed, reporting how many handles it released.
func (in *Inbox) drainCount() int {
	n := 0
	hd := in.v.hdr
	group := hd.kind == kindGroup
	next := (in.gen + 1) & cellGenMask
	poison := func(pos uint64) uint64 { return markBit | next<<48 | pos&posMask }
	for i := uint64(0); i < in.cap; i++ {
		c := (*atomic.Uint64)(unsafe.Add(in.v.cells, i*8))
		for {
			step()
			v := c.Load()
			if v&markBit != 0 && v&parityBit == 0 && cellGen(v) == next {
				break
			}
			step()
			if !c.CompareAndSwap(v, poison(i)) {
				continue
			}
			if v&markBit == 0 {
				if group {
					in.v.r.countGroupDrop(Handle(v &^ parityBit))
				}
				step()
				in.v.r.releaseDropped(Handle(v &^ parityBit))
				n++
			}
			break
		}
	}
	// Move the tail past everything that was ever filled, and the head to it.
	step()
	t := max(hd.tail.Load(), hd.head.Load()) + in.cap
	step()
	hd.tail.Store(t)
	step()
	hd.head.Store(t)
	return n
}

// InboxStats is a snapshot of one inbox's counters.
type InboxStats struct {
	ID          InboxID
	Owner       int    // participant index
	OwnerName   string // participant name (filled in by Region.Stats)
	Pattern     string
	Overflow    Overflow
	Capacity    int
	Depth       int
	Pushed      uint64 // messages accepted (tail position since the ring was opened)
	Popped      uint64 // messages taken by the consumer from its queue (not from a slot ring)
	DropOldest  uint64 // evicted from the queue, plus messages of a slot ring the consumer missed (lapped)
	DropNewest  uint64
	DropTimeout uint64
	Corrupt     uint64
	Reply       bool   // a requester's reply inbox (request.go)
	Group       string // the queue group the inbox is a member of ("" if none)
	Sleeping    bool   // a consumer is asleep on the wake word
	// RingDepth is how many messages of its topic's slot ring the consumer has not read yet
	// (Depth counts the queue only: Pushed, Popped and Depth keep their identity); Ring says
	// it reads one.
	RingDepth int
	Ring      bool
	Blocked   int // producers asleep waiting for room (Block policy): publishers this subscriber holds back
	// AgeBuckets is the age histogram of a sample of the messages taken, from the queue or
	// from a slot ring (one in AgeSample;
	// the age is the time of the take minus the publish stamp): AgeBuckets[i] counts those older than bucket i-1's bound and at most
	// AgeBucketBound(i) (not cumulative); the last bucket has no bound. AgeSumNanos is the
	// sum of their ages.
	AgeBuckets  []uint64
	AgeSumNanos uint64
}

// InboxStats returns the counters of every open inbox. It reads shared memory only.
func (r *Region) InboxStats() (_ []InboxStats) {
	defer unguard(guard(), nil) // a fault (the file truncated) returns the zero value
	return r.inboxStats()
}

func (r *Region) inboxStats() []InboxStats {
	if !r.enterRead() {
		return nil
	}
	defer r.exitRead()
	var out []InboxStats
	for i := range r.inboxes {
		h := r.inboxes[i].hdr
		st := h.state.Load()
		if wordStatus(st) != inboxOpen {
			continue
		}
		t, hd := h.tail.Load(), h.head.Load()
		depth := uint64(0)
		if t > hd {
			depth = min(t-hd, uint64(h.capacity))
		}
		pushed := t - min(h.base, t)
		taken := hd - min(h.base, hd)
		s := InboxStats{
			Pushed: shown(pushed), Popped: shown(taken - min(taken, shown(h.dropOldest.Load())+shown(h.skipped.Load()))),
			ID: makeInboxID(uint32(i), wordGen(st)), Owner: int(wordOwner(st)) - 1,
			Pattern: r.patternString(uint32(i)), Reply: h.kind == kindReply, Group: r.groupString(uint32(i)), Overflow: Overflow(h.policy), Capacity: int(h.capacity),
			Depth: int(depth), DropOldest: shown(shown(h.dropOldest.Load()) + shown(h.ringLost.Load())), DropNewest: shown(h.dropNewest.Load()),
			DropTimeout: shown(h.dropTimeout.Load()), Corrupt: shown(h.corrupt.Load()), Sleeping: waitersOf(h.sleepers.Load(), wordGen(st))+waitersOf(h.parked.Load(), wordGen(st)) != 0,
			Blocked:    int(waitersOf(h.spaceWaiters.Load(), wordGen(st))),
			AgeBuckets: make([]uint64, ageBuckets), AgeSumNanos: shown(h.ageSum.Load()),
		}
		for b := range s.AgeBuckets {
			s.AgeBuckets[b] = shown(h.ageCounts[b].Load())
		}
		if h.topic != 0 {
			s.Ring, s.RingDepth = r.ringDepth(h.topic-1, uint32(i), wordOwner(st))
		}
		out = append(out, s)
	}
	return out
}

func (r *Region) pattern(i uint32) *[patternSize]byte {
	return (*[patternSize]byte)(r.at(r.lay.sec.patterns.off + uint64(i)*patternSize))
}

// groupString returns the queue group inbox i is a member of ("" if none).
func (r *Region) groupString(i uint32) string {
	h := r.inboxes[i].hdr
	if h.kind != kindGroup {
		return ""
	}
	from := min(int(h.patternLen), patternSize)
	n := min(int(min(h.groupLen, patternSize)), patternSize-from)
	return string(r.pattern(i)[from : from+n])
}

func (r *Region) patternString(i uint32) string {
	n := min(int(r.inboxes[i].hdr.patternLen), patternSize)
	return string(r.pattern(i)[:n])
}

// SubscriptionGen returns the region's subscription generation, which every OpenInbox and
// Inbox.Close bumps after the change is visible. A publisher that caches the inboxes matching
// its topic rebuilds the cache when the generation moves: one shared, rarely written word read
// per publish.
func (r *Region) SubscriptionGen() uint64 { return r.hdr.subGen.Load() }

// Subscription is an open inbox and the pattern it subscribes to.
type Subscription struct {
	ID      InboxID
	Pattern string
	Group   string // the queue group the inbox is a member of ("" if none)
}

// subscriptions appends every open inbox and its pattern to dst and returns it. A pattern
// that a faulty process made too long is cut to the room it has.
func (r *Region) subscriptions(dst []Subscription) []Subscription {
	for i := range r.inboxes {
		st := r.inboxes[i].hdr.state.Load()
		if wordStatus(st) != inboxOpen {
			continue
		}
		dst = append(dst, Subscription{ID: makeInboxID(uint32(i), wordGen(st)), Pattern: r.patternString(uint32(i)), Group: r.groupString(uint32(i))})
	}
	return dst
}
