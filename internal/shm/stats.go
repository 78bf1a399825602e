package shm

import (
	"encoding/binary"
	"io"
	"os"
	"sort"
	"time"
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
}

// TopicStats returns every topic in the table. It reads shared memory only. It fails with an
// error wrapping ErrCorrupt if the region's memory faults (its file was truncated).
func (r *Region) TopicStats() (_ []TopicStats, err error) {
	if !r.enterRead() {
		return nil, nil
	}
	defer r.exitRead()
	defer unguard(guard(), &err)
	return r.topicStats(), nil
}

func (r *Region) topicStats() []TopicStats {
	var out []TopicStats
	for i := range int(r.cfg.Topics) {
		t, err := r.topic(i)
		if err != nil {
			continue
		}
		fp, codec := t.fingerprint()
		out = append(out, TopicStats{
			Index: i, Name: t.name(), Published: t.e.seq.Load(), Bytes: t.e.bytes.Load(),
			HistoryDepth: t.HistoryDepth(), Codec: codec, Fingerprint: fp,
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
	SweepOff     bool
	Participants []ParticipantInfo
	Pools        []PoolStats
	Inboxes      []InboxStats // with OwnerName filled in
	Topics       []TopicStats
}

// Corrupt returns how many bad words (impossible ring cells, bad handles, scribbled counters)
// processes have found in the region and dropped or repaired since it was created: the total
// in Stats, read alone (one load) for a caller that polls it. Zero after Close. It fails with
// an error wrapping ErrCorrupt if the region's memory faults (its file was truncated).
func (r *Region) Corrupt() (_ uint64, err error) {
	if !r.enterRead() {
		return 0, nil
	}
	defer r.exitRead()
	defer unguard(guard(), &err)
	return r.hdr.corrupt.Load(), nil
}

// Stats returns a snapshot of the region's counters. It needs no participant, and works on a
// region opened with Options.ReadOnly. After Close it returns only the name and path. Like
// every Stats-family method (PoolStats, InboxStats, TopicStats, Participants), it is safe to
// call concurrently with Close. It fails with an error wrapping ErrCorrupt if the region's
// memory faults (its file was truncated, or its pages cannot be backed).
func (r *Region) Stats() (_ Stats, err error) {
	if !r.enterRead() {
		return Stats{Name: r.name, Path: r.path}, nil
	}
	defer r.exitRead()
	defer unguard(guard(), &err)
	s := Stats{
		Name: r.name, Path: r.path, Size: len(r.mem), Created: time.Unix(0, r.hdr.created),
		Config: r.Config(), Reclaims: r.hdr.reclaims.Load(), Corrupt: r.hdr.corrupt.Load(),
		Swept: r.hdr.swept.Load(), SweepOff: r.hdr.unrecorded.Load() != 0,
		Participants: r.participants(), Pools: r.poolStats(), Inboxes: r.inboxStats(), Topics: r.topicStats(),
	}
	names := make(map[int]string, len(s.Participants))
	for _, p := range s.Participants {
		names[p.Index] = p.Name
	}
	for i := range s.Inboxes {
		s.Inboxes[i].OwnerName = names[s.Inboxes[i].Owner]
	}
	return s, nil
}

// List returns the names of the offq regions in dir (files that start with a region's magic
// number), sorted. Files being created (".NAME.init-...") and other files are left out.
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
		f, err := os.Open(Path(dir, e.Name()))
		if err != nil {
			continue
		}
		var b [8]byte
		_, err = io.ReadFull(f, b[:])
		f.Close()
		if err == nil && binary.LittleEndian.Uint64(b[:]) == magic {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}
