package main

// offq stat: a table of the topics, inboxes and pools of every bus in --dir (or of --bus), as
// read from the regions' counters without joining the buses; --json for scripts. offq top
// (top.go) refreshes the same tables with rates.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/offq/offq/topics"
	"github.com/offq/offq/transport"
)

func newStatCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stat",
		Short: "print the topics, inboxes and pools of the buses in --dir",
		Long: `stat prints, for every bus in --dir (or only the one --bus names), its participants and
three tables read from the bus's counters in shared memory:

  topics   messages and bytes published, subscriptions matching the topic
  inboxes  one per subscription: subscriber, pattern, overflow policy, queue depth and
           capacity, messages delivered into it and received from it, drops by reason
  pools    per size class: buffers, in use, low-water mark (fewest ever free),
           allocation failures

It maps each region read-only and never attaches to a bus, so it changes nothing and works
on a bus whose processes are stuck; it reads buses of other users too, and shows their owner. The numbers are those offq exporter serves to Prometheus
(docs/metrics.md). --json prints them as one JSON object instead. offq top refreshes the
tables with rates.`,
		Example: "  offq stat\n  offq stat --bus plant --json",
		Args:    noArgs,
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			st, err := a.readStats(cmd, "stat")
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			st.print(cmd.OutOrStdout(), nil)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of tables")
	return cmd
}

// statReport is what offq stat prints, and its JSON form.
type statReport struct {
	Dir   string    `json:"dir"`
	Time  time.Time `json:"time"`
	Buses []statBus `json:"buses"`
}

type statBus struct {
	Name         string            `json:"name"`
	Path         string            `json:"path"`
	OwnerUID     uint32            `json:"owner_uid"`
	Owner        string            `json:"owner,omitempty"` // the user's name, if it has one
	SizeBytes    int               `json:"size_bytes"`
	Created      time.Time         `json:"created"`
	Reclaims     uint64            `json:"reclaims"`
	CorruptWords uint64            `json:"corrupt_words"`
	Swept        uint64            `json:"swept"`     // orphaned buffers freed by reapers' sweeps
	SweepOff     bool              `json:"sweep_off"` // a process took messages unrecorded: no sweeping until an audit
	Participants []statParticipant `json:"participants"`
	Topics       []statTopic       `json:"topics"`
	Inboxes      []statInbox       `json:"inboxes"`
	Pools        []statPool        `json:"pools"`
}

type statParticipant struct {
	Index    int         `json:"index"`
	Name     string      `json:"name"`
	PID      int         `json:"pid"`
	Attached time.Time   `json:"attached"`
	Alive    bool        `json:"alive"`
	Bridge   *statBridge `json:"bridge,omitempty"` // set for a NATS bridge
}

// statBridge is a NATS bridge's counters, as it keeps them in its participant slot.
type statBridge struct {
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

type statTopic struct {
	Name         string `json:"name"`
	Published    uint64 `json:"published"`
	Bytes        uint64 `json:"bytes"`
	Subscribers  int    `json:"subscribers"`
	HistoryDepth int    `json:"history_depth"`
}

type statInbox struct {
	id         transport.InboxID // index and generation: a new subscription in the slot has another
	Inbox      int               `json:"inbox"`
	Subscriber string            `json:"subscriber"`
	Pattern    string            `json:"pattern"`
	Overflow   string            `json:"overflow"`
	Depth      int               `json:"depth"`
	Capacity   int               `json:"capacity"`
	Delivered  uint64            `json:"delivered"`
	Received   uint64            `json:"received"`
	Dropped    statDrops         `json:"dropped"`
}

type statDrops struct {
	Oldest  uint64 `json:"oldest"`
	Newest  uint64 `json:"newest"`
	Timeout uint64 `json:"timeout"`
	Corrupt uint64 `json:"corrupt"`
}

func (d statDrops) total() uint64 { return d.Oldest + d.Newest + d.Timeout + d.Corrupt }

type statPool struct {
	Class         int    `json:"class"`
	Size          int    `json:"size"`
	Buffers       int    `json:"buffers"`
	InUse         int64  `json:"in_use"`
	LowWater      int64  `json:"low_water"`
	AllocFailures uint64 `json:"alloc_failures"`
}

// readStats reads every bus in --dir, or the one --bus names. A bus that vanishes while it
// is read is left out; one that cannot be opened is an error when named, a warning otherwise.
func (a *app) readStats(cmd *cobra.Command, what string) (*statReport, error) {
	named := cmd.Flags().Changed("bus")
	var names []string
	if named {
		names = []string{a.busName}
	} else {
		var err error
		if names, err = transport.List(a.dir); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	rep := &statReport{Dir: a.dir, Time: time.Now(), Buses: []statBus{}}
	for _, name := range names {
		r, err := a.openReadOnly(name)
		switch {
		case err == nil:
		case named && errors.Is(err, transport.ErrNotFound):
			return nil, fmt.Errorf("%s: no bus %q in %s", what, name, a.dir)
		case named:
			return nil, fmt.Errorf("%s: %w", what, err)
		case errors.Is(err, transport.ErrNotFound):
			continue
		default:
			a.log.Warn(what+": skipping a region that cannot be opened", zap.String("bus", name), zap.Error(err))
			continue
		}
		st, err := r.Stats()
		if err != nil {
			r.Close()
			if named {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			a.log.Warn(what+": skipping a region that cannot be read", zap.String("bus", name), zap.Error(err))
			continue
		}
		sb := newStatBus(st)
		if uid, err := r.Owner(); err == nil {
			sb.OwnerUID, sb.Owner = uid, userName(uid)
		}
		rep.Buses = append(rep.Buses, sb)
		r.Close()
	}
	return rep, nil
}

func newStatBus(s transport.Stats) statBus {
	b := statBus{Name: s.Name, Path: s.Path, SizeBytes: s.Size, Created: s.Created, Reclaims: s.Reclaims,
		CorruptWords: s.Corrupt, Swept: s.Swept, SweepOff: s.SweepOff, Participants: []statParticipant{}, Topics: []statTopic{}, Inboxes: []statInbox{}, Pools: []statPool{}}
	for _, p := range s.Participants {
		sp := statParticipant{Index: p.Index, Name: p.Name, PID: p.PID, Attached: p.Attached, Alive: p.Alive}
		if br := p.Bridge; br != nil {
			sp.Bridge = &statBridge{ID: br.ID, Connected: br.Connected, Forwarded: br.Forwarded, Imported: br.Imported,
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
		b.Topics = append(b.Topics, statTopic{Name: t.Name, Published: t.Published, Bytes: t.Bytes, Subscribers: n, HistoryDepth: t.HistoryDepth})
	}
	for _, in := range s.Inboxes {
		b.Inboxes = append(b.Inboxes, statInbox{id: in.ID, Inbox: in.ID.Index(), Subscriber: in.OwnerName, Pattern: in.Pattern,
			Overflow: in.Overflow.String(), Depth: in.Depth, Capacity: in.Capacity, Delivered: in.Pushed, Received: in.Popped,
			Dropped: statDrops{Oldest: in.DropOldest, Newest: in.DropNewest, Timeout: in.DropTimeout, Corrupt: in.Corrupt}})
	}
	for _, p := range s.Pools {
		b.Pools = append(b.Pools, statPool{Class: p.Class, Size: p.Size, Buffers: p.Capacity, InUse: p.InUse,
			LowWater: p.LowWater, AllocFailures: p.AllocFails})
	}
	return b
}

// statRates are per-second rates between two reports, keyed like the rows they belong to. A
// row missing from the earlier report, or whose counters went backwards (a new subscription
// in the slot, a re-created bus), has no rate.
type statRates struct {
	topicMsgs, topicBytes       map[string]float64 // bus + "\x00" + topic
	inboxIn, inboxOut, inboxDrp map[string]float64 // bus + "\x00" + inbox ID
}

func statTopicKey(bus, topic string) string { return bus + "\x00" + topic }
func statInboxKey(bus string, in statInbox) string {
	return bus + "\x00" + strconv.FormatUint(uint64(in.id), 10)
}

// statRatesBetween returns the rates from prev to cur.
func statRatesBetween(prev, cur *statReport) *statRates {
	r := &statRates{topicMsgs: map[string]float64{}, topicBytes: map[string]float64{},
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
	old := map[string]*statBus{}
	for i := range prev.Buses {
		b := &prev.Buses[i]
		old[b.Name] = b
	}
	for _, b := range cur.Buses {
		p := old[b.Name]
		if p == nil || !p.Created.Equal(b.Created) {
			continue
		}
		pt := map[string]statTopic{}
		for _, t := range p.Topics {
			pt[t.Name] = t
		}
		for _, t := range b.Topics {
			if o, ok := pt[t.Name]; ok {
				k := statTopicKey(b.Name, t.Name)
				set(r.topicMsgs, k, t.Published, o.Published)
				set(r.topicBytes, k, t.Bytes, o.Bytes)
			}
		}
		pi := map[transport.InboxID]statInbox{}
		for _, in := range p.Inboxes {
			pi[in.id] = in
		}
		for _, in := range b.Inboxes {
			if o, ok := pi[in.id]; ok {
				k := statInboxKey(b.Name, in)
				set(r.inboxIn, k, in.Delivered, o.Delivered)
				set(r.inboxOut, k, in.Received, o.Received)
				set(r.inboxDrp, k, in.Dropped.total(), o.Dropped.total())
			}
		}
	}
	return r
}

// print writes the report as tables; with rates (offq top) it adds rate columns.
func (rep *statReport) print(w io.Writer, r *statRates) {
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

func (b *statBus) print(w io.Writer, r *statRates) {
	alive := 0
	for _, p := range b.Participants {
		if p.Alive {
			alive++
		}
	}
	fmt.Fprintf(w, "bus %s  %s  %s  created %s  owner %s\n", b.Name, statSafe(b.Path), statBytes(float64(b.SizeBytes)), b.Created.Format(time.RFC3339), ownerText(b.OwnerUID))
	sweep := fmt.Sprintf("swept %d", b.Swept)
	if b.SweepOff {
		sweep += " (sweep off: unrecorded takes)"
	}
	fmt.Fprintf(w, "participants %d alive, %d dead   reclaims %d   %s   corrupt words %d\n", alive, len(b.Participants)-alive, b.Reclaims, sweep, b.CorruptWords)
	if len(b.Participants) > 0 {
		var ps []string
		for _, p := range b.Participants {
			s := fmt.Sprintf("%s[%d]", statSafe(p.Name), p.PID)
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
					statSafe(br.ID), statSafe(p.Name), p.PID, state, br.Forwarded, br.Imported, br.Dropped, br.Pending, br.Gaps,
					br.Mismatched, br.Looped, br.Disconnects, br.Reconnects)
			}
		}
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	rate := func(m map[string]float64, k string) string {
		if v, ok := m[k]; ok {
			return statHuman(v)
		}
		return "-"
	}
	fmt.Fprintln(tw)
	if len(b.Topics) == 0 {
		fmt.Fprintln(tw, "no topics")
	} else {
		head := "TOPIC\tPUBLISHED\tBYTES\tSUBSCRIBERS"
		if r != nil {
			head += "\tMSGS/S\tBYTES/S"
		}
		fmt.Fprintln(tw, head)
		for _, t := range b.Topics {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d", statSafe(t.Name), t.Published, bytesHuman(int64(min(t.Bytes, math.MaxInt64))), t.Subscribers)
			if r != nil {
				k := statTopicKey(b.Name, t.Name)
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
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d", in.Inbox, statSafe(in.Subscriber), statSafe(in.Pattern), in.Overflow,
				in.Depth, in.Capacity, in.Delivered, in.Received, in.Dropped.total(),
				in.Dropped.Oldest, in.Dropped.Newest, in.Dropped.Timeout, in.Dropped.Corrupt)
			if r != nil {
				k := statInboxKey(b.Name, in)
				fmt.Fprintf(tw, "\t%s\t%s\t%s", rate(r.inboxIn, k), rate(r.inboxOut, k), rate(r.inboxDrp, k))
			}
			fmt.Fprintln(tw)
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "POOL\tSIZE\tBUFFERS\tIN USE\tLOW WATER\tALLOC FAILURES")
	for _, p := range b.Pools {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\n", p.Class, transport.Size(p.Size), p.Buffers, p.InUse, p.LowWater, p.AllocFailures)
	}
	tw.Flush()
}

// statSafe makes a name read from shared memory safe to print on a terminal: any process
// that can write the region could plant escape sequences in it.
func statSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}

// statHuman formats a rate: 0, 0.5, 950, 12.3k, 4.56M.
func statHuman(v float64) string {
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

// statBytes formats a byte count with a binary unit.
func statBytes(n float64) string {
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
