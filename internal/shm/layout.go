package shm

import (
	"encoding/binary"
	"hash/fnv"
	"sync/atomic"
	"unsafe"
)

// The region's byte map. docs/layout.md repeats it and layout_test.go pins every offset below
// against unsafe.Offsetof and unsafe.Sizeof, so the three cannot drift apart.
//
// A region is one file, mapped MAP_SHARED by every participant. Every section starts on a
// 64-byte boundary; every offset is from the start of the file.
//
//	section        size                                   holds
//	header         1024                                   identity, config, section table, region counters
//	participants   Participants x 256                     one slot per attached participant
//	held           Participants x roundUp(Held, 8) x 8    each participant's held list (on lines of its own): handles taken, not released
//	pins           Participants x ceil(Topics/64) x 8     each participant's pinned topics: bit i = it uses topic i
//	rung           Participants x ceil(Inboxes/64) x 8    each participant's rung inboxes: bit i = inbox i became ready for one of its waiters
//	handoff        Participants x 64                      each participant's hand-off words: handles its sends are handing from a loan to a ring cell (handoff.go)
//	topics         Topics x (320 + 8 x HistoryDepth)      topic table (reserved for the topic layer)
//	inboxes        Inboxes x 640                          ring headers: config, tail, head, wake words, counters, age histogram
//	patterns       Inboxes x 128                          each inbox's subscription pattern, NUL-padded
//	bells          Inboxes x (ceil(Participants/64)-1) x 8  each inbox's room bells of participants 64 and up: bit i of word k = participant 64(k+1)+i waits for room
//	cells          Inboxes x InboxCapacity x 8            ring cells, one 64-bit word each
//	pool[i]        4224 + Count x (64 + Size)             pool counters, then slots: 32-byte header + payload + 32-byte trailer
//
// Every number the layout depends on is in the header's config block, and every section offset
// is recomputed from it and compared on attach, so a process never trusts an offset it did not
// derive itself.

const (
	magic         = 0x31474552_5146464f // "OFFQREG1" little-endian
	layoutVersion = 11                  // 2: handles name class and slot index with a 39-bit generation; inbox state word with a 40-bit generation; 3: 256-byte participant slots (bridge id and more bridge counters); 4: the type's name in the topic entry; 5: the topic entry's generation, and reclaimed entries; 6: 640-byte inbox headers with a message age histogram; 7: eviction records in the participant slot; the pins section and condemned topic entries; the doorbell (the participant's bell, the inbox's spaceBells and parked words); the requested sweep's header words and lent marks; 8: 32-byte slot headers sharing the payload's first line, and a slot trailer (history position, reply address) after the payload; 9: the rung section and the slot's rung summary, and the bells section (room bells of participants 64 and up); 10: the hand-off section; 11: the topic entry's slot ring word
	byteOrderMark = 0x0a0b0c0d
	headerSize    = 1024
	checksumFrom  = 64  // checksum covers [checksumFrom, checksumTo)
	checksumTo    = 512 // bytes past checksumTo are live counters
)

// Region states, in header.state.
const (
	stateInit  = 0
	stateReady = 1
)

// header is the first 1024 bytes of a region.
//
//	off  size  field
//	0    8     magic "OFFQREG1"
//	8    4     layout version
//	12   4     byte-order mark 0x0a0b0c0d
//	16   4     state: 0 initialising, 1 ready (stored last, with a release store)
//	20   4     header size (1024)
//	24   8     total size of the region in bytes
//	32   8     FNV-1a 64 of bytes [64, 512): the config block and section table
//	40   8     creation time, Unix nanoseconds
//	48   4     creator's pid (informational only)
//	64   96    config block (diskConfig)
//	160  288   section table (sections; pins, at 384, was added in version 7; bells at 400 and
//	           rung at 416 in version 9; handoff at 432 in version 10)
//	512  8     reclaims: participants reclaimed after dying
//	520  8     corrupt: bad words found in the region and dropped
//	528  8     subscriptions generation: bumped on every subscribe and unsubscribe
//	536  8     unrecorded: non-zero once a process took a message without recording it
//	           (Inbox.TryPop or Pop), which turns the orphan sweep off until the next audit
//	544  8     swept: buffers the orphan sweep found held by nobody and freed
//	552  8     moves: bumped before each reference added to a buffer not on loan (a reference
//	           about to move from a held entry or a history cell to another record); a sweep
//	           that sees it change frees nothing
//	896  8     sweep requests: bumped by every request for a sweep (a death seen, a pool short,
//	           RequestSweep)
//	904  8     sweep lease: (holder participant + 1)<<48 | expiry, CLOCK_MONOTONIC milliseconds;
//	           0: nobody sweeps (see sweeplease.go)
//	912  8     sweep cursor: passes completed<<32 | next slot position of the pass under way
//	920  8     sweep goal: the pass count the sweep runs to (passes completed < goal: work to do)
//	928  24    lent marks: per pool, 1 + the highest slot index ever handed out, rounded up to
//	           lentBlock (21 bits each, pools 3k..3k+2 in word k): slots at or past it are free
//	           and were never lent, and no scan reads them
//	952  8     sweep steps: incremental sweep steps run (each reads up to sweepStep slots)
type header struct {
	magic      uint64
	version    uint32
	byteOrder  uint32
	state      atomic.Uint32
	headerSize uint32
	totalSize  uint64
	checksum   uint64
	created    int64
	creatorPID uint32
	_          [12]byte
	cfg        diskConfig
	sec        sections
	_          [64]byte
	reclaims   atomic.Uint64
	corrupt    atomic.Uint64
	subGen     atomic.Uint64
	unrecorded atomic.Uint64
	swept      atomic.Uint64
	moves      atomic.Uint64
	_          [336]byte
	sweepReq   atomic.Uint64
	lease      atomic.Uint64
	cursor     atomic.Uint64
	goal       atomic.Uint64
	lent       [lentWords]atomic.Uint64
	sweepSteps atomic.Uint64
	_          [64]byte
}

// diskConfig is Config as stored at header offset 64.
//
//	off  size  field
//	0    4     number of size classes
//	4    4     inboxes
//	8    4     inbox capacity
//	12   4     topics
//	16   4     participants
//	20   4     history depth
//	24   4     held: entries in each participant's held list
//	32   64    classes: 8 x {size uint32, count uint32}
type diskConfig struct {
	numClasses   uint32
	inboxes      uint32
	inboxCap     uint32
	topics       uint32
	participants uint32
	historyDepth uint32
	held         uint32
	_            uint32
	classes      [MaxClasses]diskClass
}

type diskClass struct{ size, count uint32 }

// section is one entry of the section table: offset and size in bytes.
type section struct{ off, size uint64 }

// sections is the section table at header offset 160.
type sections struct {
	participants section
	held         section
	topics       section
	inboxes      section
	patterns     section
	cells        section
	pools        [MaxClasses]section
	pins         section // placed after held in the file; last here so older offsets stay
	bells        section // placed after patterns in the file
	rung         section // placed after pins in the file
	handoff      section // placed after rung in the file
}

// participantSlot is one entry of the participants table (256 bytes). The participant holds an
// open-file-description lock on the slot's first byte for as long as it is attached.
//
//	off  size  field
//	0    8     state: 0 free, else generation<<8 | 1 (attached)
//	8    4     pid (informational: pids are reused and differ across namespaces)
//	16   8     attach time, Unix nanoseconds
//	24   32    name, NUL-padded
//	56   4     role: 0 plain, 1 NATS bridge (its counters below are kept up to date)
//	64   32    bridge counters: forwarded, imported, dropped, reconnects
//	96   32    waits: 4 records of waits announced in inboxes' space waiter words, each
//	           count<<48 | (generation & 0xffffffff)<<16 | inbox index (0: none); a reaper
//	           takes a dead participant's announcements back (see wait.go)
//	128  48    more bridge words: disconnects, mismatched, looped, gaps, pending (messages
//	           in the NATS reconnect buffer), connected (0/1)
//	176  16    evicts: 2 records of evictions in flight (DropOldest), each count<<48 |
//	           (generation & 0xffffffff)<<16 | inbox index; a reaper counts a dead
//	           participant's as dropped (see evictRecord)
//	192  32    bridge id, NUL-padded (written once, before role becomes 1)
//	224  4     bell: the process's doorbell, a futex word: 1 while the participant's leader
//	           sleeps on it (or is about to), else 0; a waker that swaps 1 for 0 calls
//	           FUTEX_WAKE (see doorbell.go)
//	228  4     zero
//	232  8     rung summary: bit k set when word k of the participant's row of the rung
//	           section may have bits set (a waker sets the row's bit, then this one; the
//	           leader swaps this to zero, then the words it names; see doorbell.go)
//	240  16    zero
type participantSlot struct {
	state    atomic.Uint64
	pid      uint32
	_        uint32
	attached int64
	name     [32]byte
	role     atomic.Uint32
	_        uint32
	bridge   [4]atomic.Uint64
	waits    [slotWaits]atomic.Uint64
	bridge2  [6]atomic.Uint64
	evicts   [slotEvicts]atomic.Uint64
	bridgeID [32]byte
	bell     atomic.Uint32
	_        uint32
	rungSum  atomic.Uint64
	_        [16]byte
}

// pinWords is the number of 64-bit words in one participant's row of the pins section.
func pinWords(topics uint32) uint64 { return (uint64(topics) + 63) / 64 }

// patternSize is the room for one inbox's subscription pattern.
const patternSize = 128

// topicEntrySize is the fixed part of a topic entry; its history ring follows it.
const topicEntrySize = 320

// inboxHeader is one entry of the inbox table (640 bytes, ten cache lines, so that producers,
// the consumer and sleepers never write the same line on the fast path; the age histogram,
// written by the consumer once per message taken, has lines of its own).
//
//	off  size  field
//	0    8     state: generation<<24 | (owner+1)<<8 | status (0 free, 1 opening, 2 open, 3 closing)
//	8    4     capacity (power of two, <= InboxCapacity)
//	12   4     overflow policy
//	16   4     owner participant index + 1
//	20   4     topic index + 1 whose slot ring the consumer reads (0: none; inboxring.go)
//	24   4     pattern length (the pattern is in the patterns section)
//	28   4     kind: 0 plain subscription, 1 reply inbox, 2 queue-group member (see request.go)
//	32   8     noted: the last damage counted that stays where it was found (see countDamage)
//	40   8     queue group: FNV-1a 64 of the group name (kind 2)
//	48   8     queue group: length of the name, which follows the pattern in the patterns section
//	56   8     longest a producer blocks on a full inbox (Block policy), nanoseconds; 0: no limit
//	64   8     tail: next position to fill (written by producers)
//	128  8     head: next position to take (written by the consumer and by evicting producers)
//	192  4     wake: the futex word the consumer sleeping in the kernel itself sleeps on (at most
//	           one per inbox, see dispatcher.direct): 1 while it sleeps or is about to, else 0
//	200  8     sleepers: consumers announced asleep on wake (waiter word: generation<<32 | count)
//	256  4     space: unused since layout 7 (producers wait on their participant's bell)
//	264  8     spaceWaiters: producers announced waiting for room (waiter word)
//	272  8     spaceBells: bit i set while participant i (i < 64) has producers waiting for
//	           room; the consumer rings their bells when the head moves (see doorbell.go);
//	           participants 64 and up have their bits in the inbox's row of the bells section
//	280  8     parked: consumers waiting parked on the owner's bell (waiter word)
//	320  8     dropped, oldest evicted by producers (DropOldest)
//	328  8     dropped, newest refused (DropNewest)
//	336  8     dropped, block deadline passed (Block)
//	344  8     corrupt cells dropped
//	352  8     base: the ring's first position in this generation (pushed = tail - base)
//	360  8     skipped: positions the consumer skipped because a scribble destroyed their message
//	368  8     awaiting (kind 1): corr<<16 | responder participant+1: the request this reply inbox
//	           waits for and who took it (0 in the low 16 bits: nobody yet)
//	376  8     ring lost: messages of its topic's slot ring the consumer missed, lapped (counted
//	           as dropped oldest by readers of the stats; zero in regions whose consumers
//	           predate it, which counted them in dropped oldest at 320)
//	384  200   age histogram: 25 counters, bucket i the messages taken whose age (take time -
//	           publish stamp) was at most 1 µs << i (i < 24), bucket 24 the rest; consumer-written
//	584  8     age sum: the ages of the messages counted in the histogram, nanoseconds
type inboxHeader struct {
	state        atomic.Uint64
	capacity     uint32
	policy       uint32
	owner        uint32
	topic        uint32
	patternLen   uint32
	kind         uint32
	noted        atomic.Uint64
	groupHash    uint64
	groupLen     uint64
	blockNanos   int64
	tail         atomic.Uint64
	_            [56]byte
	head         atomic.Uint64
	_            [56]byte
	wake         atomic.Uint32
	_            uint32
	sleepers     atomic.Uint64
	_            [48]byte
	space        atomic.Uint32
	_            uint32
	spaceWaiters atomic.Uint64
	spaceBells   atomic.Uint64
	parked       atomic.Uint64
	_            [32]byte
	dropOldest   atomic.Uint64
	dropNewest   atomic.Uint64
	dropTimeout  atomic.Uint64
	corrupt      atomic.Uint64
	base         uint64
	skipped      atomic.Uint64
	awaiting     atomic.Uint64
	ringLost     atomic.Uint64
	ageCounts    [ageBuckets]atomic.Uint64
	ageSum       atomic.Uint64
	_            [48]byte
}

// poolHeader starts each pool section (128 bytes, then poolShards shard lines). Its
// descriptive fields are for tools only; processes use the values derived from the validated
// config.
//
//	off  size  field
//	0    4     payload size of a slot
//	4    4     slot count
//	8    4     stride: 64 + size (32-byte header, payload, 32-byte trailer)
//	12   4     class index
//	16   8     region offset of slot 0
//	64   8     high water: the most buffers seen in use at once (sampled; exact at exhaustion)
//	72   8     allocation failures
//	128  64x64 shards: {allocations, frees} per shard, one cache line each
//
// Buffers in use = the sum over shards of allocations - frees. Each process counts in the shard
// of its pid modulo poolShards, so a publisher in one process and a subscriber in another never
// write the same counter line: a single shared in-use word would bounce between their cores
// twice per message.
type poolHeader struct {
	size       uint32
	count      uint32
	stride     uint32
	class      uint32
	slots      uint64
	_          [40]byte
	highWater  atomic.Int64
	allocFails atomic.Uint64
	_          [48]byte
	shards     [poolShards]poolShard
}

// poolShards is the number of counter shards per pool.
const poolShards = 64

// poolShard is one process's (or a few processes') counters of a pool, on a line of its own.
type poolShard struct {
	allocs atomic.Uint64
	frees  atomic.Uint64
	_      [48]byte
}

// slotHeader precedes each buffer's payload: 32 bytes, so that the header and the payload's
// first 32 bytes share one cache line and a small message crosses to its subscriber in one line
// transfer, not two (docs/performance.md, "One line for the header and the first bytes").
//
//	off  size  field
//	0    8     state: refs (bits 0-12) | owner participant+1 (13-24) | generation (25-63)
//	8    4     payload length (bits 0-30) | lenAddressed (bit 31): the trailer's reply address and correlation id are this message's
//	12   4     topic index
//	16   8     sequence number
//	24   8     publish time: CLOCK_MONOTONIC nanoseconds (see Now)
//
// The payload follows at offset 32, 32 bytes past a 64-byte boundary (Go needs at most 8).
type slotHeader struct {
	state  atomic.Uint64
	length uint32
	topic  uint32
	seq    uint64
	stamp  int64
}

// slotTrailer follows each buffer's payload (32 bytes): what only histories and requests use,
// kept off the line a plain message's subscriber reads.
//
//	off  size  field
//	0    8     history position + 1 at which Topic.Remember last stored the buffer (0: never)
//	8    8     replyTo: the InboxID of the requester's reply inbox (0: not a request)
//	16   8     corr: the request's correlation id (a reply carries its request's)
//
// replyTo and corr are the message's only while its header's lenAddressed bit is set: a plain
// Send clears the bit and leaves the trailer alone, so a reused buffer's stale address is never
// read as the new message's.
type slotTrailer struct {
	histPos atomic.Uint64
	replyTo uint64
	corr    uint64
	_       [8]byte
}

// lenAddressed is the slot header's length bit saying that the trailer's replyTo and corr are
// the message's (payload lengths are at most MaxClassSize, 2^30).
const (
	lenAddressed = 1 << 31
	lenMask      = lenAddressed - 1
)

const (
	participantSlotSize = int(unsafe.Sizeof(participantSlot{}))
	inboxHeaderSize     = int(unsafe.Sizeof(inboxHeader{}))
	poolHeaderSize      = int(unsafe.Sizeof(poolHeader{}))
	slotHeaderSize      = int(unsafe.Sizeof(slotHeader{}))
	slotTrailerSize     = int(unsafe.Sizeof(slotTrailer{}))
	slotOverhead        = slotHeaderSize + slotTrailerSize // 64: a slot's stride is 64 + Size, so every slot starts on a line
)

// layout is the section table computed from a Config.
type layout struct {
	sec   sections
	total uint64
}

func align64(n uint64) uint64 { return (n + 63) &^ 63 }

// computeLayout derives every section's offset and size from c. It is the only place that
// decides where things are; Create writes its result and Open compares against it.
func computeLayout(c Config) layout {
	var l layout
	off := uint64(headerSize)
	place := func(s *section, size uint64) {
		s.off, s.size = off, align64(size)
		off += s.size
	}
	place(&l.sec.participants, uint64(c.Participants)*uint64(participantSlotSize))
	place(&l.sec.held, uint64(c.Participants)*heldStride(c.Held)*8)
	place(&l.sec.pins, uint64(c.Participants)*pinWords(c.Topics)*8)
	place(&l.sec.rung, uint64(c.Participants)*rungWords(c.Inboxes)*8)
	place(&l.sec.handoff, uint64(c.Participants)*handoffWords*8)
	place(&l.sec.topics, uint64(c.Topics)*(topicEntrySize+8*uint64(c.HistoryDepth)))
	place(&l.sec.inboxes, uint64(c.Inboxes)*uint64(inboxHeaderSize))
	place(&l.sec.patterns, uint64(c.Inboxes)*patternSize)
	place(&l.sec.bells, uint64(c.Inboxes)*highBellWords(c.Participants)*8)
	place(&l.sec.cells, uint64(c.Inboxes)*uint64(c.InboxCapacity)*8)
	for i, cl := range c.Classes {
		if i >= MaxClasses {
			break
		}
		place(&l.sec.pools[i], uint64(poolHeaderSize)+uint64(cl.Count)*(uint64(slotOverhead)+uint64(cl.Size)))
	}
	l.total = off
	return l
}

func (h *header) setConfig(c Config) {
	h.cfg = diskConfig{
		numClasses:   uint32(len(c.Classes)),
		inboxes:      c.Inboxes,
		inboxCap:     c.InboxCapacity,
		topics:       c.Topics,
		participants: c.Participants,
		historyDepth: c.HistoryDepth,
		held:         c.Held,
	}
	for i, cl := range c.Classes {
		h.cfg.classes[i] = diskClass{size: uint32(cl.Size), count: cl.Count}
	}
}

// config decodes the config block. The result is untrusted until validated.
func (d *diskConfig) config() Config {
	n := min(d.numClasses, MaxClasses)
	c := Config{
		Classes:       make([]Class, n),
		Inboxes:       d.inboxes,
		InboxCapacity: d.inboxCap,
		Topics:        d.topics,
		Participants:  d.participants,
		HistoryDepth:  d.historyDepth,
		Held:          d.held,
	}
	for i := range c.Classes {
		c.Classes[i] = Class{Size: Size(d.classes[i].size), Count: d.classes[i].count}
	}
	if d.numClasses > MaxClasses || d.numClasses == 0 {
		c.Classes = nil // fails Validate
	}
	return c
}

// headerChecksum is FNV-1a 64 over the config block and section table.
func headerChecksum(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b[checksumFrom:checksumTo])
	var le [8]byte
	binary.LittleEndian.PutUint64(le[:], layoutVersion)
	h.Write(le[:])
	return h.Sum64()
}
