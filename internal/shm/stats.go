package shm

import (
	"encoding/binary"
	"io"
	"os"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// TopicStats is a snapshot of one topic's counters.
type TopicStats struct {
	Index        int
	Name         string
	Published    uint64 // messages published (sequence numbers taken)
	Bytes        uint64 // payload bytes published
	HistoryDepth int
	Codec        string // codec recorded by the first typed publisher or subscriber, if any
	Fingerprint  uint64 // type fingerprint recorded with it (0: none)
	TypeName     string // the Go type's name recorded with it ("main.Reading"; "" if none)
	// Publishers is how many participants pin the topic (see Participant.PinTopic): with
	// package bus, the processes that have a Publisher of it open.
	Publishers int
	Requests   RequestStats
	// Ring describes the topic's slot ring, if it has one (nil otherwise).
	Ring *RingStats
	// InUse is, per size class (indexed as Stats.Pools), how many buffers hold a message of
	// the topic: queued in inboxes, held by subscribers or kept in its history (loans are
	// counted on their participant). Filled in by Stats (a walk of every slot), nil from
	// TopicStats.
	InUse []int
}

// RingStats describe a topic's slot ring (slotring.go).
type RingStats struct {
	Slots     int    // slots in the ring
	SlotBytes int    // room for a message in a slot: the size asked for, rounded up to fill 64-byte lines with the slot's header; not the writer's limit, which the ring does not record
	Published uint64 // messages the ring's writer committed
	Writer    int    // the writer's participant index
	Closed    bool   // the writer closed it; it stays until its readers have read it
	// Readers are the reader entries of live readers: the subscriber's participant and inbox
	// (-1: none, a reader of the protocol's own API) and how many messages it has not read.
	// An entry left by a reader that died (its participant is not alive, or the inbox it
	// names is not open with that participant as its owner) is not listed, nor one that an
	// inbox's earlier consumer of the same participant slot left behind its live one (see
	// Region.ringDepth).
	Readers []RingReaderStats
}

// RingReaderStats is one reader entry of a slot ring.
type RingReaderStats struct {
	Participant int
	Inbox       int
	Behind      int
}

// ringStats reads the ring topic t's entry names, if it is one.
func (r *Region) ringStats(t Topic) *RingStats {
	h := t.e.ring.Load()
	if h == 0 {
		return nil
	}
	g, err := r.viewRing(Handle(h), t.index)
	if err != nil || !g.alive() {
		return nil
	}
	pub := g.w.published.Load()
	rs := &RingStats{Slots: int(g.slots), SlotBytes: int(g.payload), Published: shown(pub),
		Writer: int(g.hd.writer) - 1, Closed: g.hd.closed.Load() != 0}
	alive := make(map[uint32]bool)
	at := make(map[uint64]int) // an inbox's entry (owner word) → its index in rs.Readers
	for k := range g.readers {
		e := g.reader(k)
		o := e.owner.Load()
		if o == 0 || !r.liveRingReader(o, alive) {
			continue
		}
		c := e.cursor.Load()
		behind := 0
		if pub+1 > c {
			behind = int(min(pub+1-c, g.slots))
		}
		if o>>32 != 0 {
			if j, ok := at[o]; ok {
				rs.Readers[j].Behind = min(rs.Readers[j].Behind, behind) // the live one is the furthest
				continue
			}
			at[o] = len(rs.Readers)
		}
		rs.Readers = append(rs.Readers, RingReaderStats{Participant: int(uint32(o)) - 1, Inbox: int(o>>32) - 1, Behind: behind})
	}
	return rs
}

// liveRingReader reports whether a ring's reader entry with owner word o (inbox index + 1 <<
// 32 | participant index + 1) is a live reader's: its participant is alive and, if it names
// an inbox, that inbox is open with the participant as its owner. An entry fails this once
// its reader died (until a reaper clears it, or for ever if none does); alive caches the
// participants' liveness for one walk.
func (r *Region) liveRingReader(o uint64, alive map[uint32]bool) bool {
	p, in := uint32(o), o>>32
	if p == 0 || p > r.cfg.Participants {
		return false
	}
	if in != 0 {
		if in > uint64(r.cfg.Inboxes) {
			return false
		}
		st := r.inboxes[in-1].hdr.state.Load()
		if wordStatus(st) != inboxOpen || wordOwner(st) != p {
			return false
		}
	}
	a, ok := alive[p]
	if !ok {
		a, _ = r.Alive(int(p - 1))
		alive[p] = a
	}
	return a
}

// TopicStats returns every topic in the table. It reads shared memory only.
func (r *Region) TopicStats() (_ []TopicStats) {
	defer unguard(guard(), nil) // a fault (the file truncated) returns the zero value
	return r.topicStats()
}

func (r *Region) topicStats() []TopicStats {
	if !r.enterRead() {
		return nil
	}
	defer r.exitRead()
	var out []TopicStats
	pins := r.pinners()
	for i := range int(r.cfg.Topics) {
		t, err := r.Topic(i)
		if err != nil {
			continue
		}
		fp, codec := t.Fingerprint()
		out = append(out, TopicStats{
			Index: i, Name: t.Name(), Published: shown(t.e.seq.Load()), Bytes: shown(t.e.bytes.Load()),
			HistoryDepth: t.HistoryDepth(), Codec: codec, Fingerprint: fp, TypeName: t.typeNameRead(),
			Publishers: pins[i],
			Requests:   t.e.requestStats(),
			Ring:       r.ringStats(t),
		})
	}
	return out
}

// Stats is a snapshot of everything a region counts, for metrics and tools. Counters are read
// one at a time while the region is live, so they may disagree by the operations under way.
type Stats struct {
	Name     string
	Path     string
	Size     int
	Created  time.Time
	Config   Config
	Reclaims uint64 // participants reclaimed after dying
	Corrupt  uint64 // bad words found in the region and dropped
	Swept    uint64 // orphaned buffers (held by nobody after a kill) freed by reapers' sweeps
	// SweepOff is set when a process took messages without recording them (Inbox.TryPop or
	// Pop): reapers do not sweep for orphaned buffers until the next audit.
	SweepOff bool
	// Sweep counts the sweeps made on request (see Region.RequestSweep).
	Sweep        SweepStats
	Participants []ParticipantInfo
	Pools        []PoolStats
	Inboxes      []InboxStats // with OwnerName filled in
	Topics       []TopicStats
}

// Corrupt returns how many bad words (impossible ring cells, bad handles, scribbled counters)
// processes have found in the region and dropped or repaired since it was created: the total
// in Stats, read alone (one load) for a caller that polls it. Zero after Close.
func (r *Region) Corrupt() (_ uint64) {
	defer unguard(guard(), nil) // a fault (the file truncated) returns the zero value
	if !r.enterRead() {
		return 0
	}
	defer r.exitRead()
	return shown(r.hdr.corrupt.Load())
}

// maxShown is the largest counter value a stats reader shows: counters live in the region,
// where a faulty process can scribble on them, and a value past it (2^53-1, the largest a
// float64 holds exactly, and more than a counter reaches in centuries) is such a scribble.
const maxShown = 1<<53 - 1

// shown clamps a counter read from the region to maxShown (see docs/operations.md).
func shown(v uint64) uint64 { return min(v, maxShown) }

// Stats returns a snapshot of the region's counters. It needs no participant, and works on a
// region opened with Options.ReadOnly. After Close it returns only the name and path. Like
// every Stats-family method (PoolStats, InboxStats, TopicStats, Participants), it is safe to
// call concurrently with Close.
func (r *Region) Stats() (_ Stats) {
	defer unguard(guard(), nil) // a fault (the file truncated) returns the zero value
	return r.stats()
}

func (r *Region) stats() Stats {
	if !r.enterRead() {
		return Stats{Name: r.name, Path: r.path}
	}
	defer r.exitRead()
	s := Stats{
		Name: r.name, Path: r.path, Size: len(r.mem), Created: time.Unix(0, r.hdr.created),
		Config: r.Config(), Reclaims: shown(r.hdr.reclaims.Load()), Corrupt: shown(r.hdr.corrupt.Load()),
		Swept: shown(r.hdr.swept.Load()), SweepOff: r.hdr.unrecorded.Load() != 0, Sweep: r.sweepStats(),
		Participants: r.participants(), Pools: r.poolStats(), Inboxes: r.inboxStats(), Topics: r.topicStats(),
	}
	names := make(map[int]string, len(s.Participants))
	for _, p := range s.Participants {
		names[p.Index] = p.Name
	}
	for i := range s.Inboxes {
		s.Inboxes[i].OwnerName = names[s.Inboxes[i].Owner]
	}
	r.usage(&s)
	return s
}

// usage fills in who holds the pool: per topic and class, the buffers holding a message of
// the topic (from the topic index in each slot header with references), and per participant
// and class, its loans (the owner in the slot's state word) and the messages it received and
// has not released (its held list's words that name a handle). It reads every slot header
// below the pools' lent marks and every held word once, at stats time: nothing on the data path counts. Counts are of words
// read one at a time while the region is live, so they may disagree by the operations under
// way.
func (r *Region) usage(s *Stats) {
	nc := len(r.pools)
	topicAt := make(map[uint32]int, len(s.Topics)) // topic table index → index in s.Topics
	for i := range s.Topics {
		topicAt[uint32(s.Topics[i].Index)] = i
		s.Topics[i].InUse = make([]int, nc)
	}
	partAt := make(map[uint32]int, len(s.Participants)) // owner (index + 1) → index in s.Participants
	for i := range s.Participants {
		partAt[uint32(s.Participants[i].Index)+1] = i
		s.Participants[i].Held = make([]int, nc)
		s.Participants[i].Loaned = make([]int, nc)
	}
	for c := range r.pools {
		p := &r.pools[c]
		for j := range p.lentMark() { // past the mark, nothing was ever lent
			sl := p.slot(j)
			v := sl.state.Load()
			if stateRefs(v) == 0 {
				continue
			}
			if o := stateOwner(v); o != 0 {
				if k, ok := partAt[o]; ok {
					s.Participants[k].Loaned[c]++
				}
				continue // on loan: its header is last message's, or being written
			}
			if k, ok := topicAt[sl.topic]; ok {
				s.Topics[k].InUse[c]++
			}
		}
	}
	for k := range s.Participants {
		idx := uint32(s.Participants[k].Index)
		for e := range r.cfg.Held {
			w := r.heldWordAt(idx, e).Load()
			if w == 0 || w&(heldReserved|heldPending) != 0 {
				continue
			}
			if c := Handle(w).class(); int(c) < nc {
				s.Participants[k].Held[c]++
			}
		}
	}
}

// List returns the names of the offq regions in dir, sorted: the regular files that start
// with a region's magic number, and those whose magic is damaged but whose byte-order mark and
// header size are in place (a region whose first bytes were overwritten, which Open refuses
// as corrupt, but which is still an offq region to list and to remove). Files being created
// (".NAME.init-...") and other files are left out. Nothing in dir is opened in a way that can
// block: a FIFO or device is skipped.
func List(dir string) ([]string, error) {
	if dir == "" {
		dir = DefaultDir
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !e.Type().IsRegular() || ValidateName(e.Name()) != nil {
			continue
		}
		f, err := openFile(Path(dir, e.Name()), unix.O_RDONLY, 0)
		if err != nil {
			continue
		}
		var b [24]byte
		n, _ := io.ReadFull(f, b[:])
		f.Close()
		if looksLikeRegion(b[:n]) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// Snapshot is Stats under the fault guard: a region whose file was truncated gives an error
// wrapping ErrCorrupt, not SIGBUS.
func (r *Region) Snapshot() (s Stats, err error) {
	defer unguard(guard(), &err)
	return r.stats(), nil
}

// looksLikeRegion reports whether b, the first bytes of a file, are those of an offq region:
// its magic number, or (the magic overwritten) its byte-order mark and header size.
func looksLikeRegion(b []byte) bool {
	if len(b) >= 8 && binary.NativeEndian.Uint64(b) == magic {
		return true
	}
	return len(b) >= 24 && binary.NativeEndian.Uint32(b[12:]) == byteOrderMark &&
		binary.NativeEndian.Uint32(b[20:]) == headerSize
}
