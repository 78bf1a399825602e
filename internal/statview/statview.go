// Package statview is what offq stat and offq top show: a report of the buses in a directory,
// built from the counters transport.Stats reads (topics, inboxes, pools, participants and NATS
// bridges), its JSON form (offq stat --json), its tables, and the rates between two reports
// (offq top). It also holds the formatting helpers the commands share: byte sizes and owners.
package statview

import (
	"fmt"
	"io"
	"math"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/offq/offq/topics"
	"github.com/offq/offq/transport"
)

// Report is what offq stat prints, and its JSON form.
type Report struct {
	Dir   string    `json:"dir"`
	Time  time.Time `json:"time"`
	Buses []Bus     `json:"buses"`
}

// Bus is one bus of a report: its region, counters, participants, topics, inboxes and pools.
type Bus struct {
	Name         string        `json:"name"`
	Path         string        `json:"path"`
	OwnerUID     uint32        `json:"owner_uid"`
	Owner        string        `json:"owner,omitempty"` // the user's name, if it has one
	SizeBytes    int           `json:"size_bytes"`
	Created      time.Time     `json:"created"`
	Reclaims     uint64        `json:"reclaims"`
	CorruptWords uint64        `json:"corrupt_words"`
	Swept        uint64        `json:"swept"`          // orphaned buffers freed by reapers' sweeps
	SweepOff     bool          `json:"sweep_off"`      // a process took messages unrecorded: no sweeping until an audit
	SweepReqs    uint64        `json:"sweep_requests"` // sweeps requested: deaths seen, pools found exhausted, offq reap
	SweepPasses  uint64        `json:"sweep_passes"`   // passes over the lent slots made on request
	SweepPending bool          `json:"sweep_pending"`  // a requested sweep has passes left to make
	Participants []Participant `json:"participants"`
	Topics       []Topic       `json:"topics"`
	Inboxes      []Inbox       `json:"inboxes"`
	Pools        []Pool        `json:"pools"`
}

// Participant is a process attached to a bus.
type Participant struct {
	Index    int       `json:"index"`
	Name     string    `json:"name"`
	PID      int       `json:"pid"`
	Attached time.Time `json:"attached"`
	Alive    bool      `json:"alive"`
	Bridge   *Bridge   `json:"bridge,omitempty"` // set for a NATS bridge
}

// Bridge is a NATS bridge's counters, as it keeps them in its participant slot.
type Bridge struct {
	ID          string `json:"id"`
	Connected   bool   `json:"connected"`
	Forwarded   uint64 `json:"forwarded"`
	Imported    uint64 `json:"imported"`
	Dropped     uint64 `json:"dropped"`
	Pending     uint64 `json:"pending"`
	Gaps        uint64 `json:"gaps"`
	Mismatched  uint64 `json:"mismatched"`
	Looped      uint64 `json:"looped"`
	Disconnects uint64 `json:"disconnects"`
	Reconnects  uint64 `json:"reconnects"`
}

// Topic is a topic's counters, and the subscriptions matching it.
type Topic struct {
	Name         string `json:"name"`
	Published    uint64 `json:"published"`
	Bytes        uint64 `json:"bytes"`
	Publishers   int    `json:"publishers"` // participants that pin the topic: processes with a Publisher of it
	Subscribers  int    `json:"subscribers"`
	HistoryDepth int    `json:"history_depth"`
	Codec        string `json:"codec,omitempty"`       // recorded by the first typed publisher or subscriber
	TypeName     string `json:"type,omitempty"`        // the Go type recorded with the codec
	Fingerprint  string `json:"fingerprint,omitempty"` // the type's fingerprint, hex
	// Requests are the topic's request/reply counters (nil when all are zero).
	Requests *Requests `json:"requests,omitempty"`
	// Ring is the topic's slot ring, if a publisher has one (bus.WithSlotRing).
	Ring *Ring `json:"slot_ring,omitempty"`
}

// Ring is a topic's slot ring: its shape, what it published and how far behind each
// subscriber reading it is.
type Ring struct {
	Slots int `json:"slots"`
	// SlotBytes is a slot's room for a message (SLOT ROOM): the size given to
	// bus.WithSlotRing rounded up so that a slot, with its 32-byte header, fills whole 64-byte
	// lines (WithSlotRing(8, 40): 96). It is not the publisher's message limit, the size it
	// gave, which the region does not record: that may be less.
	SlotBytes int          `json:"slot_bytes"`
	Published uint64       `json:"published"`
	Writer    int          `json:"writer"` // the publisher's participant index
	Closed    bool         `json:"closed,omitempty"`
	Readers   []RingReader `json:"readers"`
}

// RingReader is one subscriber reading a slot ring.
type RingReader struct {
	Participant int `json:"participant"`
	Inbox       int `json:"inbox"` // -1: a reader of the transport's own API
	Behind      int `json:"behind"`
}

// Requests are a topic's request/reply and queue-group counters.
type Requests struct {
	Requests      uint64 `json:"requests"`
	Replies       uint64 `json:"replies"`
	TimedOut      uint64 `json:"timed_out"`
	NoResponders  uint64 `json:"no_responders"`
	ResponderDied uint64 `json:"responder_died"`
	GroupDropped  uint64 `json:"queue_group_dropped"`
}

// typeColumn is what the TYPE column shows of a topic: its codec and type, or "-".
func (t Topic) typeColumn() string {
	switch {
	case t.Codec == "":
		return "-"
	case t.TypeName == "":
		return safe(t.Codec)
	}
	return safe(t.Codec) + " " + safe(t.TypeName)
}

// Inbox is one subscription's queue and its counters.
type Inbox struct {
	id         transport.InboxID // index and generation: a new subscription in the slot has another
	Inbox      int               `json:"inbox"`
	Subscriber string            `json:"subscriber"`
	Pattern    string            `json:"pattern"`
	Group      string            `json:"queue_group,omitempty"` // the queue group it is a member of
	Reply      bool              `json:"reply,omitempty"`       // a requester's reply inbox
	Overflow   string            `json:"overflow"`
	Depth      int               `json:"depth"`
	Capacity   int               `json:"capacity"`
	Delivered  uint64            `json:"delivered"`
	Received   uint64            `json:"received"`
	Dropped    Drops             `json:"dropped"`
	// RingBehind is how many messages of its topic's slot ring the subscriber has not read
	// (not in Depth, which is its queue's).
	RingBehind int `json:"ring_behind,omitempty"`
}

// patternColumn is what the PATTERN column shows of an inbox: its pattern, with its queue
// group, or "(reply)" for a requester's reply inbox.
func (in Inbox) patternColumn() string {
	switch {
	case in.Reply:
		return "(reply)"
	case in.Group != "":
		return safe(in.Pattern) + " [" + safe(in.Group) + "]"
	}
	return safe(in.Pattern)
}

// Drops are an inbox's lost messages, by reason.
type Drops struct {
	Oldest  uint64 `json:"oldest"`
	Newest  uint64 `json:"newest"`
	Timeout uint64 `json:"timeout"`
	Corrupt uint64 `json:"corrupt"`
}

func (d Drops) total() uint64 { return d.Oldest + d.Newest + d.Timeout + d.Corrupt }

// Pool is one size class of a bus's buffers.
type Pool struct {
	Class         int    `json:"class"`
	Size          int    `json:"size"`
	Buffers       int    `json:"buffers"`
	InUse         int64  `json:"in_use"`
	LowWater      int64  `json:"low_water"`
	AllocFailures uint64 `json:"alloc_failures"`
}

// FromStats builds a report's bus from the counters read from its region; the owner is left
// for the caller to fill in.
func FromStats(s transport.Stats) Bus {
	b := Bus{Name: s.Name, Path: s.Path, SizeBytes: s.Size, Created: s.Created, Reclaims: s.Reclaims,
		CorruptWords: s.Corrupt, Swept: s.Swept, SweepOff: s.SweepOff,
		SweepReqs: s.Sweep.Requests, SweepPasses: s.Sweep.Passes, SweepPending: s.Sweep.Pending, Participants: []Participant{}, Topics: []Topic{}, Inboxes: []Inbox{}, Pools: []Pool{}}
	for _, p := range s.Participants {
		sp := Participant{Index: p.Index, Name: p.Name, PID: p.PID, Attached: p.Attached, Alive: p.Alive}
		if br := p.Bridge; br != nil {
			sp.Bridge = &Bridge{ID: br.ID, Connected: br.Connected, Forwarded: br.Forwarded, Imported: br.Imported,
				Dropped: br.Dropped, Pending: br.Pending, Gaps: br.Gaps, Mismatched: br.Mismatched, Looped: br.Looped,
				Disconnects: br.Disconnects, Reconnects: br.Reconnects}
		}
		b.Participants = append(b.Participants, sp)
	}
	for _, t := range s.Topics {
		n := 0
		for _, in := range s.Inboxes {
			if topics.ValidatePattern(in.Pattern) == nil && topics.Match(in.Pattern, t.Name) {
				n++
			}
		}
		tp := Topic{Name: t.Name, Published: t.Published, Bytes: t.Bytes, Publishers: t.Publishers, Subscribers: n, HistoryDepth: t.HistoryDepth,
			Codec: t.Codec, TypeName: t.TypeName}
		if t.Fingerprint != 0 {
			tp.Fingerprint = fmt.Sprintf("%016x", t.Fingerprint)
		}
		if rs := t.Ring; rs != nil {
			tp.Ring = &Ring{Slots: rs.Slots, SlotBytes: rs.SlotBytes, Published: rs.Published, Writer: rs.Writer, Closed: rs.Closed, Readers: []RingReader{}}
			for _, rd := range rs.Readers {
				tp.Ring.Readers = append(tp.Ring.Readers, RingReader{Participant: rd.Participant, Inbox: rd.Inbox, Behind: rd.Behind})
			}
		}
		if rq := t.Requests; rq != (transport.RequestStats{}) {
			tp.Requests = &Requests{Requests: rq.Requests, Replies: rq.Replies, TimedOut: rq.TimedOut,
				NoResponders: rq.NoResponders, ResponderDied: rq.ResponderDied, GroupDropped: rq.GroupDropped}
		}
		b.Topics = append(b.Topics, tp)
	}
	for _, in := range s.Inboxes {
		b.Inboxes = append(b.Inboxes, Inbox{id: in.ID, Inbox: in.ID.Index(), Subscriber: in.OwnerName, Pattern: in.Pattern, Group: in.Group, Reply: in.Reply,
			Overflow: in.Overflow.String(), Depth: in.Depth, Capacity: in.Capacity, Delivered: in.Pushed, Received: in.Popped,
			Dropped: Drops{Oldest: in.DropOldest, Newest: in.DropNewest, Timeout: in.DropTimeout, Corrupt: in.Corrupt}, RingBehind: in.RingDepth})
	}
	for _, p := range s.Pools {
		b.Pools = append(b.Pools, Pool{Class: p.Class, Size: p.Size, Buffers: p.Capacity, InUse: p.InUse,
			LowWater: p.LowWater, AllocFailures: p.AllocFails})
	}
	return b
}

// Rates are per-second rates between two reports, keyed like the rows they belong to. A
// row missing from the earlier report, or whose counters went backwards (a new subscription
// in the slot, a re-created bus), has no rate.
type Rates struct {
	topicMsgs, topicBytes       map[string]float64 // bus + "\x00" + topic
	inboxIn, inboxOut, inboxDrp map[string]float64 // bus + "\x00" + inbox ID
}

func topicKey(bus, topic string) string { return bus + "\x00" + topic }
func inboxKey(bus string, in Inbox) string {
	return bus + "\x00" + strconv.FormatUint(uint64(in.id), 10)
}

// Between returns the rates from prev to cur.
func Between(prev, cur *Report) *Rates {
	r := &Rates{topicMsgs: map[string]float64{}, topicBytes: map[string]float64{},
		inboxIn: map[string]float64{}, inboxOut: map[string]float64{}, inboxDrp: map[string]float64{}}
	dt := cur.Time.Sub(prev.Time).Seconds()
	if dt <= 0 {
		return r
	}
	per := func(now, before uint64) (float64, bool) {
		if now < before {
			return 0, false
		}
		return float64(now-before) / dt, true
	}
	set := func(m map[string]float64, k string, now, before uint64) {
		if v, ok := per(now, before); ok {
			m[k] = v
		}
	}
	old := map[string]*Bus{}
	for i := range prev.Buses {
		b := &prev.Buses[i]
		old[b.Name] = b
	}
	for _, b := range cur.Buses {
		p := old[b.Name]
		if p == nil || !p.Created.Equal(b.Created) {
			continue
		}
		pt := map[string]Topic{}
		for _, t := range p.Topics {
			pt[t.Name] = t
		}
		for _, t := range b.Topics {
			if o, ok := pt[t.Name]; ok {
				k := topicKey(b.Name, t.Name)
				set(r.topicMsgs, k, t.Published, o.Published)
				set(r.topicBytes, k, t.Bytes, o.Bytes)
			}
		}
		pi := map[transport.InboxID]Inbox{}
		for _, in := range p.Inboxes {
			pi[in.id] = in
		}
		for _, in := range b.Inboxes {
			if o, ok := pi[in.id]; ok {
				k := inboxKey(b.Name, in)
				set(r.inboxIn, k, in.Delivered, o.Delivered)
				set(r.inboxOut, k, in.Received, o.Received)
				set(r.inboxDrp, k, in.Dropped.total(), o.Dropped.total())
			}
		}
	}
	return r
}

// Print writes the report as tables; with rates (offq top) it adds rate columns.
func (rep *Report) Print(w io.Writer, r *Rates) {
	if len(rep.Buses) == 0 {
		fmt.Fprintf(w, "no buses in %s\n", rep.Dir)
		return
	}
	for i, b := range rep.Buses {
		if i > 0 {
			fmt.Fprintln(w)
		}
		b.print(w, r)
	}
}

func (b *Bus) print(w io.Writer, r *Rates) {
	alive := 0
	for _, p := range b.Participants {
		if p.Alive {
			alive++
		}
	}
	fmt.Fprintf(w, "bus %s  %s  %s  created %s  owner %s\n", b.Name, safe(b.Path), binaryBytes(float64(b.SizeBytes)), b.Created.Format(time.RFC3339), OwnerText(b.OwnerUID))
	sweep := fmt.Sprintf("swept %d", b.Swept)
	if b.SweepReqs > 0 {
		sweep += fmt.Sprintf(" in %d requested sweeps (%d passes)", b.SweepReqs, b.SweepPasses)
	}
	if b.SweepPending {
		sweep += " (a sweep under way)"
	}
	if b.SweepOff {
		sweep += " (sweep off: unrecorded takes)"
	}
	fmt.Fprintf(w, "participants %d alive, %d dead   reclaims %d   %s   corrupt words %d\n", alive, len(b.Participants)-alive, b.Reclaims, sweep, b.CorruptWords)
	if len(b.Participants) > 0 {
		var ps []string
		for _, p := range b.Participants {
			s := fmt.Sprintf("%s[%d]", safe(p.Name), p.PID)
			if !p.Alive {
				s += " (dead)"
			}
			ps = append(ps, s)
		}
		fmt.Fprintf(w, "  %s\n", strings.Join(ps, ", "))
		for _, p := range b.Participants {
			if br := p.Bridge; br != nil {
				state := "connected"
				if !br.Connected {
					state = "DISCONNECTED"
				}
				fmt.Fprintf(w, "  bridge %s (%s[%d]): %s, forwarded %d, imported %d, dropped %d, pending %d, gaps %d, mismatched %d, looped %d, disconnects %d, reconnects %d\n",
					safe(br.ID), safe(p.Name), p.PID, state, br.Forwarded, br.Imported, br.Dropped, br.Pending, br.Gaps,
					br.Mismatched, br.Looped, br.Disconnects, br.Reconnects)
			}
		}
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	rate := func(m map[string]float64, k string) string {
		if v, ok := m[k]; ok {
			return human(v)
		}
		return "-"
	}
	fmt.Fprintln(tw)
	if len(b.Topics) == 0 {
		fmt.Fprintln(tw, "no topics")
	} else {
		head := "TOPIC\tPUBLISHED\tBYTES\tPUBS\tSUBSCRIBERS\tHISTORY\tTYPE"
		if r != nil {
			head += "\tMSGS/S\tBYTES/S"
		}
		fmt.Fprintln(tw, head)
		for _, t := range b.Topics {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%s", safe(t.Name), t.Published, Bytes(int64(min(t.Bytes, math.MaxInt64))), t.Publishers, t.Subscribers,
				t.HistoryDepth, t.typeColumn())
			if r != nil {
				k := topicKey(b.Name, t.Name)
				fmt.Fprintf(tw, "\t%s\t%s", rate(r.topicMsgs, k), rate(r.topicBytes, k))
			}
			fmt.Fprintln(tw)
		}
	}
	fmt.Fprintln(tw)
	if len(b.Inboxes) == 0 {
		fmt.Fprintln(tw, "no inboxes")
	} else {
		head := "INBOX\tSUBSCRIBER\tPATTERN\tOVERFLOW\tDEPTH\tCAPACITY\tDELIVERED\tRECEIVED\tDROPPED\tOLDEST\tNEWEST\tTIMEOUT\tCORRUPT"
		if r != nil {
			head += "\tIN/S\tOUT/S\tDROPS/S"
		}
		fmt.Fprintln(tw, head)
		for _, in := range b.Inboxes {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d", in.Inbox, safe(in.Subscriber), in.patternColumn(), in.Overflow,
				in.Depth, in.Capacity, in.Delivered, in.Received, in.Dropped.total(),
				in.Dropped.Oldest, in.Dropped.Newest, in.Dropped.Timeout, in.Dropped.Corrupt)
			if r != nil {
				k := inboxKey(b.Name, in)
				fmt.Fprintf(tw, "\t%s\t%s\t%s", rate(r.inboxIn, k), rate(r.inboxOut, k), rate(r.inboxDrp, k))
			}
			fmt.Fprintln(tw)
		}
	}
	rings := false
	for _, t := range b.Topics {
		rings = rings || t.Ring != nil
	}
	if rings {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "SLOT RING\tSLOTS\tSLOT ROOM\tPUBLISHED\tWRITER\tREADERS (PARTICIPANT/INBOX: BEHIND)")
		for _, t := range b.Topics {
			rg := t.Ring
			if rg == nil {
				continue
			}
			var rd []string
			for _, x := range rg.Readers {
				rd = append(rd, fmt.Sprintf("%d/%d: %d", x.Participant, x.Inbox, x.Behind))
			}
			w := strconv.Itoa(rg.Writer)
			if rg.Closed {
				w += " (closed)"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", safe(t.Name), rg.Slots, rg.SlotBytes, rg.Published, w, strings.Join(rd, ", "))
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "POOL\tSIZE\tBUFFERS\tIN USE\tLOW WATER\tALLOC FAILURES")
	for _, p := range b.Pools {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\n", p.Class, transport.Size(p.Size), p.Buffers, p.InUse, p.LowWater, p.AllocFailures)
	}
	tw.Flush()
}

// safe makes a name read from shared memory safe to print on a terminal: any process
// that can write the region could plant escape sequences in it.
func safe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}

// human formats a rate: 0, 0.5, 950, 12.3k, 4.56M.
func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v >= 10 || v == 0:
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// binaryBytes formats a byte count with a binary unit.
func binaryBytes(n float64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", n/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", n/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", n/(1<<10))
	}
	return fmt.Sprintf("%.0f B", n)
}

// Bytes formats n bytes as 512 B, 9.3 KiB, 64.0 MiB.
func Bytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// UserName returns the name of user uid, or "" if it has none.
func UserName(uid uint32) string {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return ""
	}
	return u.Username
}

// OwnerText says who uid is: "uid 1000 (alice)", or "uid 1000" for a user without a name.
func OwnerText(uid uint32) string {
	if n := UserName(uid); n != "" {
		return fmt.Sprintf("uid %d (%s)", uid, n)
	}
	return fmt.Sprintf("uid %d", uid)
}
