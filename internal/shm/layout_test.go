package shm

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"reflect"
	"testing"
	"unsafe"
)

// layoutRow is one row of a layout struct's offset table: the offset and size the comment (and
// docs/layout.md) give, against what the compiler laid out.
type layoutRow struct {
	name              string
	off, size         uintptr
	wantOff, wantSize uintptr
}

func layoutField(name string, off, size, wantOff, wantSize uintptr) layoutRow {
	return layoutRow{name: name, off: off, size: size, wantOff: wantOff, wantSize: wantSize}
}

func checkLayoutRows(t *testing.T, v any, size, wantSize uintptr, fields []layoutRow) {
	t.Helper()
	rt := reflect.TypeOf(v).Elem()
	typ := rt.Name()
	// Every named field is pinned: a field added without a row (and a line in layout.go's
	// table and docs/layout.md) fails here.
	listed := make(map[string]bool, len(fields))
	for _, fl := range fields {
		listed[fl.name] = true
	}
	for i := range rt.NumField() {
		if f := rt.Field(i); f.Name != "_" && !listed[f.Name] {
			t.Errorf("%s.%s (offset %d, %d bytes) has no row in the layout test", typ, f.Name, f.Offset, f.Type.Size())
		}
	}
	if size != wantSize {
		t.Errorf("unsafe.Sizeof(%s{}) = %d, layout.go and docs/layout.md say %d", typ, size, wantSize)
	}
	for _, fl := range fields {
		if fl.off != fl.wantOff {
			t.Errorf("%s.%s at offset %d, documented at %d", typ, fl.name, fl.off, fl.wantOff)
		}
		if fl.size != fl.wantSize {
			t.Errorf("%s.%s is %d bytes, documented as %d", typ, fl.name, fl.size, fl.wantSize)
		}
		if fl.off%8 != 0 && fl.size == 8 {
			t.Errorf("%s.%s: 8-byte field at offset %d is not 8-byte aligned", typ, fl.name, fl.off)
		}
	}
}

// TestLayoutHeader pins the offset table in header's comment.
func TestLayoutHeader(t *testing.T) {
	var h header
	checkLayoutRows(t, &h, unsafe.Sizeof(h), headerSize, []layoutRow{
		layoutField("magic", unsafe.Offsetof(h.magic), unsafe.Sizeof(h.magic), 0, 8),
		layoutField("version", unsafe.Offsetof(h.version), unsafe.Sizeof(h.version), 8, 4),
		layoutField("byteOrder", unsafe.Offsetof(h.byteOrder), unsafe.Sizeof(h.byteOrder), 12, 4),
		layoutField("state", unsafe.Offsetof(h.state), unsafe.Sizeof(h.state), 16, 4),
		layoutField("headerSize", unsafe.Offsetof(h.headerSize), unsafe.Sizeof(h.headerSize), 20, 4),
		layoutField("totalSize", unsafe.Offsetof(h.totalSize), unsafe.Sizeof(h.totalSize), 24, 8),
		layoutField("checksum", unsafe.Offsetof(h.checksum), unsafe.Sizeof(h.checksum), 32, 8),
		layoutField("created", unsafe.Offsetof(h.created), unsafe.Sizeof(h.created), 40, 8),
		layoutField("creatorPID", unsafe.Offsetof(h.creatorPID), unsafe.Sizeof(h.creatorPID), 48, 4),
		layoutField("cfg", unsafe.Offsetof(h.cfg), unsafe.Sizeof(h.cfg), 64, 96),
		layoutField("sec", unsafe.Offsetof(h.sec), unsafe.Sizeof(h.sec), 160, 288),
		layoutField("reclaims", unsafe.Offsetof(h.reclaims), unsafe.Sizeof(h.reclaims), 512, 8),
		layoutField("corrupt", unsafe.Offsetof(h.corrupt), unsafe.Sizeof(h.corrupt), 520, 8),
		layoutField("subGen", unsafe.Offsetof(h.subGen), unsafe.Sizeof(h.subGen), 528, 8),
		layoutField("unrecorded", unsafe.Offsetof(h.unrecorded), unsafe.Sizeof(h.unrecorded), 536, 8),
		layoutField("swept", unsafe.Offsetof(h.swept), unsafe.Sizeof(h.swept), 544, 8),
		layoutField("moves", unsafe.Offsetof(h.moves), unsafe.Sizeof(h.moves), 552, 8),
		layoutField("sweepReq", unsafe.Offsetof(h.sweepReq), unsafe.Sizeof(h.sweepReq), 896, 8),
		layoutField("lease", unsafe.Offsetof(h.lease), unsafe.Sizeof(h.lease), 904, 8),
		layoutField("cursor", unsafe.Offsetof(h.cursor), unsafe.Sizeof(h.cursor), 912, 8),
		layoutField("goal", unsafe.Offsetof(h.goal), unsafe.Sizeof(h.goal), 920, 8),
		layoutField("lent", unsafe.Offsetof(h.lent), unsafe.Sizeof(h.lent), 928, 24),
		layoutField("sweepSteps", unsafe.Offsetof(h.sweepSteps), unsafe.Sizeof(h.sweepSteps), 952, 8),
	})
	// The checksum covers exactly the config block and the section table (and the padding
	// after it); the live counters start where it ends.
	if checksumFrom != unsafe.Offsetof(h.cfg) {
		t.Errorf("checksumFrom = %d, config block at %d", checksumFrom, unsafe.Offsetof(h.cfg))
	}
	if end := unsafe.Offsetof(h.sec) + unsafe.Sizeof(h.sec); checksumTo < end {
		t.Errorf("checksumTo = %d, section table ends at %d", checksumTo, end)
	}
	if checksumTo != unsafe.Offsetof(h.reclaims) {
		t.Errorf("checksumTo = %d, counters start at %d", checksumTo, unsafe.Offsetof(h.reclaims))
	}
	var le [8]byte // as a little-endian machine stores it (a big-endian one: "1GERQFFO")
	binary.LittleEndian.PutUint64(le[:], magic)
	if string(le[:]) != "OFFQREG1" {
		t.Errorf("magic is %q in memory, documented as \"OFFQREG1\"", le[:])
	}
}

func TestLayoutDiskConfig(t *testing.T) {
	var d diskConfig
	checkLayoutRows(t, &d, unsafe.Sizeof(d), 96, []layoutRow{
		layoutField("numClasses", unsafe.Offsetof(d.numClasses), unsafe.Sizeof(d.numClasses), 0, 4),
		layoutField("inboxes", unsafe.Offsetof(d.inboxes), unsafe.Sizeof(d.inboxes), 4, 4),
		layoutField("inboxCap", unsafe.Offsetof(d.inboxCap), unsafe.Sizeof(d.inboxCap), 8, 4),
		layoutField("topics", unsafe.Offsetof(d.topics), unsafe.Sizeof(d.topics), 12, 4),
		layoutField("participants", unsafe.Offsetof(d.participants), unsafe.Sizeof(d.participants), 16, 4),
		layoutField("historyDepth", unsafe.Offsetof(d.historyDepth), unsafe.Sizeof(d.historyDepth), 20, 4),
		layoutField("held", unsafe.Offsetof(d.held), unsafe.Sizeof(d.held), 24, 4),
		layoutField("classes", unsafe.Offsetof(d.classes), unsafe.Sizeof(d.classes), 32, 64),
	})
	var c diskClass
	checkLayoutRows(t, &c, unsafe.Sizeof(c), 8, []layoutRow{
		layoutField("size", unsafe.Offsetof(c.size), unsafe.Sizeof(c.size), 0, 4),
		layoutField("count", unsafe.Offsetof(c.count), unsafe.Sizeof(c.count), 4, 4),
	})
}

func TestLayoutSectionTable(t *testing.T) {
	var s sections
	checkLayoutRows(t, &s, unsafe.Sizeof(s), 288, []layoutRow{
		layoutField("participants", unsafe.Offsetof(s.participants), unsafe.Sizeof(s.participants), 0, 16),
		layoutField("held", unsafe.Offsetof(s.held), unsafe.Sizeof(s.held), 16, 16),
		layoutField("topics", unsafe.Offsetof(s.topics), unsafe.Sizeof(s.topics), 32, 16),
		layoutField("inboxes", unsafe.Offsetof(s.inboxes), unsafe.Sizeof(s.inboxes), 48, 16),
		layoutField("patterns", unsafe.Offsetof(s.patterns), unsafe.Sizeof(s.patterns), 64, 16),
		layoutField("cells", unsafe.Offsetof(s.cells), unsafe.Sizeof(s.cells), 80, 16),
		layoutField("pools", unsafe.Offsetof(s.pools), unsafe.Sizeof(s.pools), 96, 128),
		layoutField("pins", unsafe.Offsetof(s.pins), unsafe.Sizeof(s.pins), 224, 16),
		layoutField("bells", unsafe.Offsetof(s.bells), unsafe.Sizeof(s.bells), 240, 16),
		layoutField("rung", unsafe.Offsetof(s.rung), unsafe.Sizeof(s.rung), 256, 16),
		layoutField("handoff", unsafe.Offsetof(s.handoff), unsafe.Sizeof(s.handoff), 272, 16),
	})
	var e section
	checkLayoutRows(t, &e, unsafe.Sizeof(e), 16, []layoutRow{
		layoutField("off", unsafe.Offsetof(e.off), unsafe.Sizeof(e.off), 0, 8),
		layoutField("size", unsafe.Offsetof(e.size), unsafe.Sizeof(e.size), 8, 8),
	})
}

func TestLayoutParticipantSlot(t *testing.T) {
	var p participantSlot
	checkLayoutRows(t, &p, unsafe.Sizeof(p), 256, []layoutRow{
		layoutField("state", unsafe.Offsetof(p.state), unsafe.Sizeof(p.state), 0, 8),
		layoutField("pid", unsafe.Offsetof(p.pid), unsafe.Sizeof(p.pid), 8, 4),
		layoutField("attached", unsafe.Offsetof(p.attached), unsafe.Sizeof(p.attached), 16, 8),
		layoutField("name", unsafe.Offsetof(p.name), unsafe.Sizeof(p.name), 24, 32),
		layoutField("role", unsafe.Offsetof(p.role), unsafe.Sizeof(p.role), 56, 4),
		layoutField("bridge", unsafe.Offsetof(p.bridge), unsafe.Sizeof(p.bridge), 64, 32),
		layoutField("waits", unsafe.Offsetof(p.waits), unsafe.Sizeof(p.waits), 96, 32),
		layoutField("bridge2", unsafe.Offsetof(p.bridge2), unsafe.Sizeof(p.bridge2), 128, 48),
		layoutField("evicts", unsafe.Offsetof(p.evicts), unsafe.Sizeof(p.evicts), 176, 16),
		layoutField("bridgeID", unsafe.Offsetof(p.bridgeID), unsafe.Sizeof(p.bridgeID), 192, 32),
		layoutField("bell", unsafe.Offsetof(p.bell), unsafe.Sizeof(p.bell), 224, 4),
		layoutField("rungSum", unsafe.Offsetof(p.rungSum), unsafe.Sizeof(p.rungSum), 232, 8),
	})
	if participantSlotSize != 256 {
		t.Errorf("participantSlotSize = %d", participantSlotSize)
	}
}

func TestLayoutInboxHeader(t *testing.T) {
	var h inboxHeader
	checkLayoutRows(t, &h, unsafe.Sizeof(h), 640, []layoutRow{
		layoutField("state", unsafe.Offsetof(h.state), unsafe.Sizeof(h.state), 0, 8),
		layoutField("capacity", unsafe.Offsetof(h.capacity), unsafe.Sizeof(h.capacity), 8, 4),
		layoutField("policy", unsafe.Offsetof(h.policy), unsafe.Sizeof(h.policy), 12, 4),
		layoutField("owner", unsafe.Offsetof(h.owner), unsafe.Sizeof(h.owner), 16, 4),
		layoutField("topic", unsafe.Offsetof(h.topic), unsafe.Sizeof(h.topic), 20, 4),
		layoutField("patternLen", unsafe.Offsetof(h.patternLen), unsafe.Sizeof(h.patternLen), 24, 4),
		layoutField("kind", unsafe.Offsetof(h.kind), unsafe.Sizeof(h.kind), 28, 4),
		layoutField("noted", unsafe.Offsetof(h.noted), unsafe.Sizeof(h.noted), 32, 8),
		layoutField("groupHash", unsafe.Offsetof(h.groupHash), unsafe.Sizeof(h.groupHash), 40, 8),
		layoutField("groupLen", unsafe.Offsetof(h.groupLen), unsafe.Sizeof(h.groupLen), 48, 8),
		layoutField("blockNanos", unsafe.Offsetof(h.blockNanos), unsafe.Sizeof(h.blockNanos), 56, 8),
		layoutField("tail", unsafe.Offsetof(h.tail), unsafe.Sizeof(h.tail), 64, 8),
		layoutField("head", unsafe.Offsetof(h.head), unsafe.Sizeof(h.head), 128, 8),
		layoutField("wake", unsafe.Offsetof(h.wake), unsafe.Sizeof(h.wake), 192, 4),
		layoutField("sleepers", unsafe.Offsetof(h.sleepers), unsafe.Sizeof(h.sleepers), 200, 8),
		layoutField("space", unsafe.Offsetof(h.space), unsafe.Sizeof(h.space), 256, 4),
		layoutField("spaceWaiters", unsafe.Offsetof(h.spaceWaiters), unsafe.Sizeof(h.spaceWaiters), 264, 8),
		layoutField("spaceBells", unsafe.Offsetof(h.spaceBells), unsafe.Sizeof(h.spaceBells), 272, 8),
		layoutField("parked", unsafe.Offsetof(h.parked), unsafe.Sizeof(h.parked), 280, 8),
		layoutField("dropOldest", unsafe.Offsetof(h.dropOldest), unsafe.Sizeof(h.dropOldest), 320, 8),
		layoutField("dropNewest", unsafe.Offsetof(h.dropNewest), unsafe.Sizeof(h.dropNewest), 328, 8),
		layoutField("dropTimeout", unsafe.Offsetof(h.dropTimeout), unsafe.Sizeof(h.dropTimeout), 336, 8),
		layoutField("corrupt", unsafe.Offsetof(h.corrupt), unsafe.Sizeof(h.corrupt), 344, 8),
		layoutField("base", unsafe.Offsetof(h.base), unsafe.Sizeof(h.base), 352, 8),
		layoutField("skipped", unsafe.Offsetof(h.skipped), unsafe.Sizeof(h.skipped), 360, 8),
		layoutField("awaiting", unsafe.Offsetof(h.awaiting), unsafe.Sizeof(h.awaiting), 368, 8),
		layoutField("ringLost", unsafe.Offsetof(h.ringLost), unsafe.Sizeof(h.ringLost), 376, 8),
		layoutField("ageCounts", unsafe.Offsetof(h.ageCounts), unsafe.Sizeof(h.ageCounts), 384, 200),
		layoutField("ageSum", unsafe.Offsetof(h.ageSum), unsafe.Sizeof(h.ageSum), 584, 8),
	})
	// Producers (tail), the consumer (head), sleepers (wake) and blocked producers (space)
	// each write their own cache line.
	lines := map[uintptr]string{}
	for name, off := range map[string]uintptr{
		"state": unsafe.Offsetof(h.state), "tail": unsafe.Offsetof(h.tail), "head": unsafe.Offsetof(h.head),
		"wake": unsafe.Offsetof(h.wake), "space": unsafe.Offsetof(h.space), "dropOldest": unsafe.Offsetof(h.dropOldest),
		"ageCounts": unsafe.Offsetof(h.ageCounts),
	} {
		if other, ok := lines[off/64]; ok {
			t.Errorf("inboxHeader.%s shares cache line %d with %s", name, off/64, other)
		}
		lines[off/64] = name
	}
	// The age histogram (written by the consumer at every take) starts on a line of its own
	// and no other field shares its lines.
	if first, last := unsafe.Offsetof(h.ageCounts)/64, (unsafe.Offsetof(h.ageSum)+7)/64; unsafe.Offsetof(h.ageCounts)%64 != 0 ||
		unsafe.Offsetof(h.skipped)/64 == first || last >= unsafe.Sizeof(h)/64 {
		t.Errorf("inboxHeader's age histogram (lines %d to %d) shares a line", first, last)
	}
	if inboxHeaderSize != 640 || patternSize != 128 {
		t.Errorf("inboxHeaderSize = %d, patternSize = %d", inboxHeaderSize, patternSize)
	}
}

func TestLayoutPoolHeader(t *testing.T) {
	var p poolHeader
	checkLayoutRows(t, &p, unsafe.Sizeof(p), 128+64*64, []layoutRow{
		layoutField("size", unsafe.Offsetof(p.size), unsafe.Sizeof(p.size), 0, 4),
		layoutField("count", unsafe.Offsetof(p.count), unsafe.Sizeof(p.count), 4, 4),
		layoutField("stride", unsafe.Offsetof(p.stride), unsafe.Sizeof(p.stride), 8, 4),
		layoutField("class", unsafe.Offsetof(p.class), unsafe.Sizeof(p.class), 12, 4),
		layoutField("slots", unsafe.Offsetof(p.slots), unsafe.Sizeof(p.slots), 16, 8),
		layoutField("highWater", unsafe.Offsetof(p.highWater), unsafe.Sizeof(p.highWater), 64, 8),
		layoutField("allocFails", unsafe.Offsetof(p.allocFails), unsafe.Sizeof(p.allocFails), 72, 8),
		layoutField("shards", unsafe.Offsetof(p.shards), unsafe.Sizeof(p.shards), 128, 64*64),
	})
	var s poolShard
	checkLayoutRows(t, &s, unsafe.Sizeof(s), 64, []layoutRow{
		layoutField("allocs", unsafe.Offsetof(s.allocs), unsafe.Sizeof(s.allocs), 0, 8),
		layoutField("frees", unsafe.Offsetof(s.frees), unsafe.Sizeof(s.frees), 8, 8),
	})
	if poolHeaderSize != 4224 || poolShards != 64 {
		t.Errorf("poolHeaderSize = %d, poolShards = %d", poolHeaderSize, poolShards)
	}
}

func TestLayoutSlotHeader(t *testing.T) {
	var s slotHeader
	checkLayoutRows(t, &s, unsafe.Sizeof(s), 32, []layoutRow{
		layoutField("state", unsafe.Offsetof(s.state), unsafe.Sizeof(s.state), 0, 8),
		layoutField("length", unsafe.Offsetof(s.length), unsafe.Sizeof(s.length), 8, 4),
		layoutField("topic", unsafe.Offsetof(s.topic), unsafe.Sizeof(s.topic), 12, 4),
		layoutField("seq", unsafe.Offsetof(s.seq), unsafe.Sizeof(s.seq), 16, 8),
		layoutField("stamp", unsafe.Offsetof(s.stamp), unsafe.Sizeof(s.stamp), 24, 8),
	})
	var tr slotTrailer
	checkLayoutRows(t, &tr, unsafe.Sizeof(tr), 32, []layoutRow{
		layoutField("histPos", unsafe.Offsetof(tr.histPos), unsafe.Sizeof(tr.histPos), 0, 8),
		layoutField("replyTo", unsafe.Offsetof(tr.replyTo), unsafe.Sizeof(tr.replyTo), 8, 8),
		layoutField("corr", unsafe.Offsetof(tr.corr), unsafe.Sizeof(tr.corr), 16, 8),
	})
	if slotHeaderSize != 32 || slotTrailerSize != 32 || slotOverhead != 64 {
		t.Errorf("slot header %d, trailer %d, overhead %d bytes", slotHeaderSize, slotTrailerSize, slotOverhead)
	}
	if MaxClassSize > lenMask {
		t.Errorf("MaxClassSize %d does not fit under the addressed bit", MaxClassSize)
	}
}

// TestLayoutSlotRing checks the parts of a slot ring's buffer against the table in
// slotring.go.
func TestLayoutSlotRing(t *testing.T) {
	var h ringHeader
	checkLayoutRows(t, &h, unsafe.Sizeof(h), 32, []layoutRow{
		layoutField("magic", unsafe.Offsetof(h.magic), unsafe.Sizeof(h.magic), 0, 4),
		layoutField("slots", unsafe.Offsetof(h.slots), unsafe.Sizeof(h.slots), 4, 4),
		layoutField("slotSize", unsafe.Offsetof(h.slotSize), unsafe.Sizeof(h.slotSize), 8, 4),
		layoutField("readers", unsafe.Offsetof(h.readers), unsafe.Sizeof(h.readers), 12, 4),
		layoutField("topic", unsafe.Offsetof(h.topic), unsafe.Sizeof(h.topic), 16, 4),
		layoutField("writer", unsafe.Offsetof(h.writer), unsafe.Sizeof(h.writer), 20, 4),
		layoutField("closed", unsafe.Offsetof(h.closed), unsafe.Sizeof(h.closed), 24, 8),
	})
	var w ringWriterLine
	checkLayoutRows(t, &w, unsafe.Sizeof(w), 64, []layoutRow{
		layoutField("published", unsafe.Offsetof(w.published), unsafe.Sizeof(w.published), 0, 8),
	})
	var e ringReaderEntry
	checkLayoutRows(t, &e, unsafe.Sizeof(e), 64, []layoutRow{
		layoutField("owner", unsafe.Offsetof(e.owner), unsafe.Sizeof(e.owner), 0, 8),
		layoutField("cursor", unsafe.Offsetof(e.cursor), unsafe.Sizeof(e.cursor), 8, 8),
	})
	var sl ringSlot
	checkLayoutRows(t, &sl, unsafe.Sizeof(sl), ringSlotHeader, []layoutRow{
		layoutField("seq", unsafe.Offsetof(sl.seq), unsafe.Sizeof(sl.seq), 0, 8),
		layoutField("length", unsafe.Offsetof(sl.length), unsafe.Sizeof(sl.length), 8, 4),
		layoutField("tag", unsafe.Offsetof(sl.tag), unsafe.Sizeof(sl.tag), 12, 4),
		layoutField("topicSeq", unsafe.Offsetof(sl.topicSeq), unsafe.Sizeof(sl.topicSeq), 16, 8),
		layoutField("stamp", unsafe.Offsetof(sl.stamp), unsafe.Sizeof(sl.stamp), 24, 8),
	})
	if ringWriterOff != 32 || ringReadersOff != 96 || (slotHeaderSize+ringReadersOff)%64 != 0 {
		t.Errorf("writer line at %d, readers at %d: not on line boundaries after a %d-byte slot header", ringWriterOff, ringReadersOff, slotHeaderSize)
	}
}

func TestLayoutTopicEntry(t *testing.T) {
	var e topicEntry
	checkLayoutRows(t, &e, unsafe.Sizeof(e), topicEntrySize, []layoutRow{
		layoutField("state", unsafe.Offsetof(e.state), unsafe.Sizeof(e.state), 0, 8),
		layoutField("hash", unsafe.Offsetof(e.hash), unsafe.Sizeof(e.hash), 8, 8),
		layoutField("nameLen", unsafe.Offsetof(e.nameLen), unsafe.Sizeof(e.nameLen), 16, 4),
		layoutField("histDepth", unsafe.Offsetof(e.histDepth), unsafe.Sizeof(e.histDepth), 20, 4),
		layoutField("fingerprint", unsafe.Offsetof(e.fingerprint), unsafe.Sizeof(e.fingerprint), 24, 8),
		layoutField("codec", unsafe.Offsetof(e.codec), unsafe.Sizeof(e.codec), 32, 16),
		layoutField("gen", unsafe.Offsetof(e.gen), unsafe.Sizeof(e.gen), 48, 8),
		layoutField("name", unsafe.Offsetof(e.name), unsafe.Sizeof(e.name), 64, 128),
		layoutField("seq", unsafe.Offsetof(e.seq), unsafe.Sizeof(e.seq), 192, 8),
		layoutField("bytes", unsafe.Offsetof(e.bytes), unsafe.Sizeof(e.bytes), 200, 8),
		layoutField("histPos", unsafe.Offsetof(e.histPos), unsafe.Sizeof(e.histPos), 208, 8),
		layoutField("typeName", unsafe.Offsetof(e.typeName), unsafe.Sizeof(e.typeName), 216, 40),
		layoutField("requests", unsafe.Offsetof(e.requests), unsafe.Sizeof(e.requests), 256, 8),
		layoutField("replies", unsafe.Offsetof(e.replies), unsafe.Sizeof(e.replies), 264, 8),
		layoutField("reqTimeouts", unsafe.Offsetof(e.reqTimeouts), unsafe.Sizeof(e.reqTimeouts), 272, 8),
		layoutField("reqNoResp", unsafe.Offsetof(e.reqNoResp), unsafe.Sizeof(e.reqNoResp), 280, 8),
		layoutField("reqDied", unsafe.Offsetof(e.reqDied), unsafe.Sizeof(e.reqDied), 288, 8),
		layoutField("groupDropped", unsafe.Offsetof(e.groupDropped), unsafe.Sizeof(e.groupDropped), 296, 8),
		layoutField("ring", unsafe.Offsetof(e.ring), unsafe.Sizeof(e.ring), 304, 8),
	})
	if topicEntrySize != 320 {
		t.Errorf("topicEntrySize = %d", topicEntrySize)
	}
}

// TestLayoutWordEncodings pins the bit layouts of the handle, the slot state word, the ring
// cell and the inbox and participant state words that docs/layout.md describes.
func TestLayoutWordEncodings(t *testing.T) {
	// Handle: slot index in bits 0-19, class in 20-22, generation in 23-61, bits 62 and 63 zero.
	h := makeHandle(5, 0xa_bcde, 0x55_1234_5678)
	if uint64(h) != 0x55_1234_5678<<23|5<<20|0xa_bcde || h.class() != 5 || h.index() != 0xa_bcde || h.gen() != 0x55_1234_5678 {
		t.Errorf("makeHandle: %#x (class %d index %#x gen %#x)", uint64(h), h.class(), h.index(), h.gen())
	}
	if h.slot() != 5<<20|0xa_bcde {
		t.Errorf("slot of %#x: %#x", uint64(h), h.slot())
	}
	if h := makeHandle(8|5, 1<<20|3, 1<<39|7); h.class() != 5 || h.index() != 3 || h.gen() != 7 || uint64(h)>>62 != 0 {
		t.Errorf("makeHandle does not mask its fields: %#x", uint64(h))
	}
	if h := makeHandle(7, 1<<20-1, 1<<39-1); uint64(h) != 1<<62-1 {
		t.Errorf("the largest handle is %#x, want 62 bits set", uint64(h))
	}
	if handleMask != 1<<62-1 || handleIdxBits != 20 || handleClassBits != 3 || genBits != 39 {
		t.Errorf("handle constants: mask %#x, index bits %d, class bits %d, gen bits %d",
			uint64(handleMask), handleIdxBits, handleClassBits, genBits)
	}
	// Every slot a configuration can have has a handle.
	if MaxClassCount > 1<<handleIdxBits || MaxClasses > 1<<handleClassBits {
		t.Errorf("%d classes of %d slots do not fit the handle", MaxClasses, MaxClassCount)
	}
	// Generation zero is never allocated (so no handle is zero), and the generation wraps to 1.
	if nextGen(0) != 1 || nextGen(genMask) != 1 || nextGen(41) != 42 {
		t.Errorf("nextGen: %d %d %d", nextGen(0), nextGen(genMask), nextGen(41))
	}

	// Slot state: refs in bits 0-12, owner in 13-24, generation in 25-63.
	v := uint64(0x55_1234_5678)<<25 | uint64(0xabc)<<13 | 0x1007
	if stateRefs(v) != 0x1007 || stateOwner(v) != 0xabc || stateGen(v) != 0x55_1234_5678 {
		t.Errorf("slot state %#x: refs %d owner %#x gen %#x", v, stateRefs(v), stateOwner(v), stateGen(v))
	}
	if refsMask != 0x1fff || ownerShift != 13 || genShift != 25 || uint64(ownerMask) != 0xfff<<13 || maxRefs != 8191 {
		t.Error("slot state constants changed")
	}
	if MaxParticipants > 1<<ownerBits-1 { // the last participant's owner field is its index + 1 = MaxParticipants
		t.Errorf("participant %d does not fit the owner field", MaxParticipants)
	}

	// Ring cell: bit 63 marker, bit 62 lap parity (handle) or reserved (marker),
	// marker generation in bits 48-61, position in bits 0-47.
	in := Inbox{gen: 0x77_0000_1abc, tag: 0x1abc << 48, cap: 8, mask: 7, shift: 3}
	if got := in.empty(0x1234_5678_9abc); got != 1<<63|0x1abc<<48|0x1234_5678_9abc {
		t.Errorf("empty marker %#x", got)
	}
	if in.empty(1<<48|9) != in.empty(9) {
		t.Error("empty marker does not keep only 48 bits of position")
	}
	if in.parity(7) != 0 || in.parity(8) != 1<<62 || in.parity(16) != 0 || in.parity(31) != 1<<62 {
		t.Error("lap parity is not bit 62 = (pos / capacity) & 1")
	}
	if markBit != 1<<63 || parityBit != 1<<62 || posMask != 1<<48-1 || cellGenMask != 1<<14-1 || inboxGenMask != 1<<40-1 {
		t.Error("cell constants changed")
	}

	// Inbox and participant states.
	if inboxFree != 0 || inboxOpening != 1 || inboxOpen != 2 || inboxClosing != 3 || partFree != 0 || partAttached != 1 {
		t.Error("state values changed")
	}
	if id := makeInboxID(5, 0xab_1234_5678); id.Index() != 5 || uint64(id)>>16 != 0xab_1234_5678 {
		t.Errorf("InboxID %#x", uint64(id))
	}
	// Inbox state word: generation (bits 24-63), owner + 1 (8-23), status (0-7).
	if st := inboxWord(inboxOpen, 0xab_1234_5678, 4097); st != 0xab_1234_5678<<24|4097<<8|2 ||
		wordGen(st) != 0xab_1234_5678 || wordOwner(st) != 4097 || wordStatus(st) != inboxOpen {
		t.Errorf("inbox state word %#x", st)
	}
	if DropOldest != 0 || DropNewest != 1 || Block != 2 {
		t.Error("policy values stored in inbox headers changed")
	}
	if stateInit != 0 || stateReady != 1 || topicFree != 0 || topicClaiming != 1 || topicReady != 2 || topicReclaimed != 3 {
		t.Error("region or topic state values changed")
	}
	// A held-list word is 0, a handle, or the reserved mark, which no handle can equal.
	if heldReserved != 1<<63 || heldReserved&handleMask != 0 {
		t.Errorf("heldReserved = %#x", uint64(heldReserved))
	}
}

// layoutConfigs returns the default configuration, the smallest one, and random valid ones.
func layoutConfigs(seed uint64, n int) []Config {
	cfgs := []Config{DefaultConfig(), {
		Classes: []Class{{Size: 64, Count: 1}}, Inboxes: 1, InboxCapacity: 2,
		Topics: 1, Participants: 1, HistoryDepth: 0, Held: 1,
	}}
	rng := rand.New(rand.NewPCG(seed, 1))
	for range n {
		c := Config{
			Inboxes:       1 + rng.Uint32N(100),
			InboxCapacity: 2 << rng.IntN(12),
			Topics:        1 + rng.Uint32N(300),
			Participants:  1 + rng.Uint32N(200), // past 64: the bells section
			HistoryDepth:  rng.Uint32N(20),
			Held:          1 + rng.Uint32N(300),
		}
		size := Size(0)
		for range 1 + rng.IntN(MaxClasses) {
			size += Size(64 * (1 + rng.IntN(100)))
			c.Classes = append(c.Classes, Class{Size: size, Count: 1 + rng.Uint32N(50)})
		}
		cfgs = append(cfgs, c)
	}
	return cfgs
}

// TestLayoutSections checks that computeLayout places every section on a 64-byte boundary,
// in the documented order, without gaps or overlaps, each large enough for its contents.
func TestLayoutSections(t *testing.T) {
	const seed = 20261125
	for ci, c := range layoutConfigs(seed, 200) {
		if err := c.Validate(); err != nil {
			t.Fatalf("config %d (seed %d) invalid: %v", ci, seed, err)
		}
		l := computeLayout(c)
		type want struct {
			name string
			s    section
			need uint64
		}
		secs := []want{
			{"participants", l.sec.participants, uint64(c.Participants) * 256},
			{"held", l.sec.held, uint64(c.Participants) * ((uint64(c.Held) + 7) / 8) * 64}, // a line per 8 entries, each list on lines of its own
			{"pins", l.sec.pins, uint64(c.Participants) * ((uint64(c.Topics) + 63) / 64) * 8},
			{"rung", l.sec.rung, uint64(c.Participants) * ((uint64(c.Inboxes) + 63) / 64) * 8},
			{"handoff", l.sec.handoff, uint64(c.Participants) * 64},
			{"topics", l.sec.topics, uint64(c.Topics) * (320 + 8*uint64(c.HistoryDepth))},
			{"inboxes", l.sec.inboxes, uint64(c.Inboxes) * 640},
			{"patterns", l.sec.patterns, uint64(c.Inboxes) * 128},
			{"bells", l.sec.bells, uint64(c.Inboxes) * ((uint64(c.Participants)+63)/64 - 1) * 8},
			{"cells", l.sec.cells, uint64(c.Inboxes) * uint64(c.InboxCapacity) * 8},
		}
		for i, cl := range c.Classes {
			secs = append(secs, want{"pool", l.sec.pools[i], 4224 + uint64(cl.Count)*(64+uint64(cl.Size))})
		}
		end := uint64(headerSize)
		for _, s := range secs {
			switch {
			case s.s.off%64 != 0 || s.s.size%64 != 0:
				t.Fatalf("config %d: section %s at %d size %d is not 64-byte aligned", ci, s.name, s.s.off, s.s.size)
			case s.s.off != end:
				t.Fatalf("config %d: section %s at %d, previous section ends at %d", ci, s.name, s.s.off, end)
			case s.s.size < s.need || s.s.size >= s.need+64:
				t.Fatalf("config %d: section %s is %d bytes for %d bytes of contents", ci, s.name, s.s.size, s.need)
			}
			end = s.s.off + s.s.size
		}
		for i := len(c.Classes); i < MaxClasses; i++ {
			if l.sec.pools[i] != (section{}) {
				t.Fatalf("config %d: unused pool section %d is %+v", ci, i, l.sec.pools[i])
			}
		}
		if l.total != end {
			t.Fatalf("config %d: total %d, sections end at %d", ci, l.total, end)
		}
	}
}

// TestLayoutRealRegion checks the byte map against the file a real Create writes, and that
// every slot starts on a 64-byte line with its payload 32 bytes into it and its trailer after.
func TestLayoutRealRegion(t *testing.T) {
	cfg := Config{
		Classes:       []Class{{Size: 64, Count: 3}, {Size: 192, Count: 2}, {Size: 4096, Count: 3}},
		Inboxes:       3,
		InboxCapacity: 4,
		Topics:        2,
		Participants:  3,
		HistoryDepth:  1,
		Held:          5,
	}
	dir := t.TempDir()
	r, err := Create("layout", Options{Dir: dir, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := os.ReadFile(r.Path())
	if err != nil {
		t.Fatal(err)
	}
	le := binary.NativeEndian
	lay := computeLayout(cfg)
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"magic", le.Uint64(b[0:]), magic},
		{"version", uint64(le.Uint32(b[8:])), layoutVersion},
		{"byte order", uint64(le.Uint32(b[12:])), 0x0a0b0c0d},
		{"state", uint64(le.Uint32(b[16:])), stateReady},
		{"header size", uint64(le.Uint32(b[20:])), 1024},
		{"total size", le.Uint64(b[24:]), uint64(len(b))},
		{"checksum", le.Uint64(b[32:]), headerChecksum(b)},
		{"creator pid", uint64(le.Uint32(b[48:])), uint64(os.Getpid())},
		{"classes", uint64(le.Uint32(b[64:])), 3},
		{"inboxes", uint64(le.Uint32(b[68:])), 3},
		{"inbox capacity", uint64(le.Uint32(b[72:])), 4},
		{"topics", uint64(le.Uint32(b[76:])), 2},
		{"participants", uint64(le.Uint32(b[80:])), 3},
		{"history depth", uint64(le.Uint32(b[84:])), 1},
		{"held", uint64(le.Uint32(b[88:])), 5},
		{"class 1 size", uint64(le.Uint32(b[96+8:])), 192},
		{"class 1 count", uint64(le.Uint32(b[96+12:])), 2},
		{"participants offset", le.Uint64(b[160:]), lay.sec.participants.off},
		{"held offset", le.Uint64(b[176:]), lay.sec.held.off},
		{"topics offset", le.Uint64(b[192:]), lay.sec.topics.off},
		{"inboxes offset", le.Uint64(b[208:]), lay.sec.inboxes.off},
		{"patterns offset", le.Uint64(b[224:]), lay.sec.patterns.off},
		{"cells offset", le.Uint64(b[240:]), lay.sec.cells.off},
		{"cells size", le.Uint64(b[248:]), lay.sec.cells.size},
		{"pins offset", le.Uint64(b[384:]), lay.sec.pins.off},
		{"pins size", le.Uint64(b[392:]), lay.sec.pins.size},
		{"bells offset", le.Uint64(b[400:]), lay.sec.bells.off},
		{"bells size", le.Uint64(b[408:]), lay.sec.bells.size},
		{"rung offset", le.Uint64(b[416:]), lay.sec.rung.off},
		{"rung size", le.Uint64(b[424:]), lay.sec.rung.size},
		{"handoff offset", le.Uint64(b[432:]), lay.sec.handoff.off},
		{"handoff size", le.Uint64(b[440:]), lay.sec.handoff.size},
		{"pool 2 offset", le.Uint64(b[256+32:]), lay.sec.pools[2].off},
		{"pool 2 size", le.Uint64(b[256+40:]), lay.sec.pools[2].size},
		{"pool 3 offset", le.Uint64(b[256+48:]), 0},
		{"pool 1 header: size", uint64(le.Uint32(b[lay.sec.pools[1].off:])), 192},
		{"pool 1 header: count", uint64(le.Uint32(b[lay.sec.pools[1].off+4:])), 2},
		{"pool 1 header: stride", uint64(le.Uint32(b[lay.sec.pools[1].off+8:])), 64 + 192},
		{"pool 1 header: class", uint64(le.Uint32(b[lay.sec.pools[1].off+12:])), 1},
		{"pool 1 header: slot 0", le.Uint64(b[lay.sec.pools[1].off+16:]), lay.sec.pools[1].off + 4224},
	} {
		if c.got != c.want {
			t.Errorf("file bytes: %s = %d (%#x), want %d (%#x)", c.name, c.got, c.got, c.want, c.want)
		}
	}

	p, err := r.Attach("layout")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Detach()
	var held []Handle
	for _, n := range []int{1, 64, 65, 100, 192, 193, 4096} {
		buf, err := p.alloc(n)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, buf.Handle())
		bh := buf.Handle()
		off := lay.sec.pools[bh.class()].off + 4224 + uint64(bh.index())*uint64(64+buf.Cap())
		data := uintptr(unsafe.Pointer(unsafe.SliceData(buf.Bytes())))
		if off%64 != 0 || (data-uintptr(r.base))%64 != 32 || data%64 != 32 {
			t.Errorf("Alloc(%d): slot header at %#x, payload at %#x: want the header on a line and the payload in its second half", n, off, data-uintptr(r.base))
		}
		if data-uintptr(r.base) != uintptr(off)+32 {
			t.Errorf("Alloc(%d): payload %#x does not follow its 32-byte slot header at %#x", n, data-uintptr(r.base), off)
		}
		if tr := uintptr(unsafe.Pointer(buf.p.trailer(buf.s))) - uintptr(r.base); tr != uintptr(off)+32+uintptr(buf.Cap()) || tr+32 != uintptr(off)+64+uintptr(buf.Cap()) {
			t.Errorf("Alloc(%d): trailer at %#x; want right after the payload, ending the slot", n, tr)
		}
		ps := lay.sec.pools[buf.Class()]
		if off < ps.off+4224 || off+64+uint64(buf.Cap()) > ps.off+ps.size {
			t.Errorf("Alloc(%d): slot %#x+%d outside pool section %+v", n, off, 64+buf.Cap(), ps)
		}
	}
	for _, h := range held {
		if err := p.unloan(h); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSlotAddressedBit: the length word's addressed bit is all that makes a message a request
// or a reply. SetMeta (every send) clears it, so a buffer reused after a request reads as
// plain whatever its trailer still holds; the bit never leaks into the length; and a bit set
// by a scribble reads the trailer, which is inside the slot, and nothing past it.
func TestSlotAddressedBit(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	b, err := p.alloc(8)
	if err != nil {
		t.Fatal(err)
	}
	b.SetMeta(Meta{Len: 8, Topic: 1, Seq: 1})
	b.setAddress(InboxID(5<<16|3), 77)
	if to, corr := b.address(); to != InboxID(5<<16|3) || corr != 77 || b.Len() != 8 || b.Meta().Len != 8 {
		t.Fatalf("request: address %v %d, length %d / %d; want 327683 77, 8", to, corr, b.Len(), b.Meta().Len)
	}
	b.SetMeta(Meta{Len: 16, Topic: 1, Seq: 2}) // the buffer's next message, a plain one
	if to, corr := b.address(); to != 0 || corr != 0 || b.Len() != 16 {
		t.Fatalf("plain message after a request: address %v %d, length %d; want 0 0, 16", to, corr, b.Len())
	}
	b.s.length = lenAddressed | lenMask // scribbled: every bit set
	if b.Len() != b.Cap() || b.Meta().Len != uint32(b.Cap()) {
		t.Fatalf("scribbled length reads %d / %d; want the class size %d", b.Len(), b.Meta().Len, b.Cap())
	}
	tr := uintptr(unsafe.Pointer(b.p.trailer(b.s)))
	if start := uintptr(unsafe.Pointer(b.s)); tr+uintptr(slotTrailerSize) != start+uintptr(b.p.stride) {
		t.Fatalf("trailer ends at +%d; want the slot's end, +%d", tr+uintptr(slotTrailerSize)-start, b.p.stride)
	}
	if err := p.unloan(b.Handle()); err != nil {
		t.Fatal(err)
	}
}
