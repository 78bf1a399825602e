package bus

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
)

var chaosDuration = flag.Duration("offq.chaos", 20*time.Second, "how long TestChaos kills and restarts processes")

// Chaos payload: instance (8) | sequence (8) | CRC32 of both (4), then filler to 64 bytes.
func chaosPayload(b []byte, inst, seq uint64) {
	binary.LittleEndian.PutUint64(b[0:], inst)
	binary.LittleEndian.PutUint64(b[8:], seq)
	binary.LittleEndian.PutUint32(b[16:], crc32.ChecksumIEEE(b[:16]))
}

// roleChaosPub publishes on OFFQ_TOPIC as fast as a few thousand a second until stdin closes.
// With OFFQ_SCRIBBLED set (the corruption test), a send that fails because its region was
// scribbled on (an error wrapping ErrCorrupt) is not fatal.
// Each process start is a new instance with its own sequence.
func roleChaosPub(c *peer.Child) error {
	b, err := Open("chaos", WithDir(os.Getenv("OFFQ_DIR")), WithName("chaos-pub"), WithReapInterval(20*time.Millisecond))
	if err != nil {
		return err
	}
	defer b.Close()
	var opts []PublisherOption
	if os.Getenv("OFFQ_HISTORY") != "" {
		opts = append(opts, WithHistory(1)) // one retained message, under kills too
	}
	if os.Getenv("OFFQ_RING") != "" {
		opts = append(opts, WithSlotRing(64, 64)) // a slot ring: its writer killed too
	}
	pub, err := b.Publisher(os.Getenv("OFFQ_TOPIC"), opts...)
	if err != nil {
		return err
	}
	inst := rand.Uint64()
	tolerate := os.Getenv("OFFQ_SCRIBBLED") != ""
	c.Send("ready")
	if os.Getenv("OFFQ_BATCH") != "" {
		return chaosPubBatches(c, pub, inst, tolerate)
	}
	for seq := uint64(1); c.Context().Err() == nil; seq++ {
		l, err := pub.Loan(64)
		if err != nil {
			if errors.Is(err, ErrPoolExhausted) {
				seq--
				time.Sleep(time.Millisecond) // back off while a dead process's buffers are reclaimed
				continue
			}
			if errors.Is(err, ErrCorrupt) && tolerate {
				seq--
				continue
			}
			return err
		}
		chaosPayload(l.Bytes(), inst, seq)
		if err := pub.Send(c.Context(), l); err != nil {
			if errors.Is(err, ErrCorrupt) && tolerate {
				continue // the corruption test scribbled on our buffer: reported, not fatal
			}
			return err
		}
		if seq%64 == 0 {
			time.Sleep(200 * time.Microsecond) // pace: the machine has two cores for everyone
		}
	}
	return nil
}

// chaosPubBatches is roleChaosPub with the batched forms: batches of 8 (LoanBatch, SendBatch),
// so that kills land in the middle of batches too.
func chaosPubBatches(c *peer.Child, pub *Publisher, inst uint64, tolerate bool) error {
	var loans [8]Loan
	seq := uint64(0)
	for n := 0; c.Context().Err() == nil; n++ {
		ls, err := pub.LoanBatch(loans[:], 64)
		if err != nil {
			if errors.Is(err, ErrPoolExhausted) {
				time.Sleep(time.Millisecond) // back off while a dead process's buffers are reclaimed
				continue
			}
			if errors.Is(err, ErrCorrupt) && tolerate {
				continue
			}
			return err
		}
		for i := range ls {
			seq++
			chaosPayload(ls[i].Bytes(), inst, seq)
		}
		if err := pub.SendBatch(c.Context(), ls); err != nil {
			if errors.Is(err, ErrCorrupt) && tolerate {
				continue
			}
			if c.Context().Err() != nil {
				return nil
			}
			return err
		}
		if n%8 == 0 {
			time.Sleep(200 * time.Microsecond) // pace: the machine has two cores for everyone
		}
	}
	return nil
}

type chaosReport struct {
	Received  int    `json:"received"`
	Instances int    `json:"instances"`
	Missing   uint64 `json:"missing"` // gaps inside each publisher instance's sequence
	Dropped   uint64 `json:"dropped"` // what the subscriber's inbox counted as dropped
	Corrupt   int    `json:"corrupt"`
	Disorder  int    `json:"disorder"`
}

// roleChaosSub receives on OFFQ_PATTERN until stdin closes, then drains and reports.
func roleChaosSub(c *peer.Child) error {
	b, err := Open("chaos", WithDir(os.Getenv("OFFQ_DIR")), WithName("chaos-sub"), WithReapInterval(20*time.Millisecond))
	if err != nil {
		return err
	}
	defer b.Close()
	depth := 256
	if os.Getenv("OFFQ_DEPTH") != "" {
		depth, _ = strconv.Atoi(os.Getenv("OFFQ_DEPTH")) // shorter than a slot ring: reads it
	}
	s, err := b.Subscribe(os.Getenv("OFFQ_PATTERN"), WithQueueDepth(depth), WithoutHistory())
	if err != nil {
		return err
	}
	c.Send("ready")
	var rep chaosReport
	last := map[uint64]uint64{}
	handle := func(m Message) {
		d := m.Data()
		if len(d) < 20 || crc32.ChecksumIEEE(d[:16]) != binary.LittleEndian.Uint32(d[16:]) {
			rep.Corrupt++
			return
		}
		inst, seq := binary.LittleEndian.Uint64(d[0:]), binary.LittleEndian.Uint64(d[8:])
		prev, seen := last[inst]
		switch {
		case !seen:
			rep.Instances++
		case seq <= prev:
			rep.Disorder++
			return
		default:
			rep.Missing += seq - prev - 1
		}
		last[inst] = seq
		rep.Received++
	}
	if os.Getenv("OFFQ_BATCH") != "" {
		var buf [16]Message
		for {
			ms, err := s.ReceiveBatch(c.Context(), buf[:])
			if err != nil {
				break
			}
			for _, m := range ms {
				handle(m)
			}
			ReleaseBatch(ms)
		}
	}
	for c.Context().Err() == nil {
		m, err := s.Receive(c.Context())
		if err != nil {
			break
		}
		handle(m)
		m.Release()
	}
	// Stopped: take what is still queued (bounded: a scribbled ring may claim more than it
	// holds), then read the inbox's drop counters.
	for range 1024 {
		if s.Len() == 0 {
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		m, err := s.Receive(ctx)
		cancel()
		if err != nil {
			break
		}
		handle(m)
		m.Release()
	}
	for _, st := range b.r.InboxStats() {
		if st.ID == s.in.ID() {
			rep.Dropped = st.DropOldest + st.DropNewest + st.DropTimeout
		}
	}
	j, _ := json.Marshal(rep)
	c.Send("report %s", j)
	return nil
}

// TestChaos runs publishers and subscribers on several topics as separate processes, kills
// random ones with SIGKILL at random moments and starts them again, for -offq.chaos (20s by
// default). Every subscriber that is still running at the end must have received, from every
// publisher instance, an intact sequence in order whose gaps are all messages its own inbox
// counted as dropped; nobody may stall. An observer stays attached throughout, so reaping can
// never audit: once the others have closed, reaping (with its sweep for references lost by a
// kill in the middle of a move) must leave the pools holding exactly what is still held: one
// message retained by chaos.b's history. The audit that follows, when the observer too has
// closed, must leave the same single buffer.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, duration %v", seed, *chaosDuration)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	type member struct {
		role string
		env  []string
		proc *peer.Proc
	}
	members := []*member{
		{role: "chaos-pub", env: []string{"OFFQ_TOPIC=chaos.a", "OFFQ_BATCH=1"}}, // batched forms
		{role: "chaos-pub", env: []string{"OFFQ_TOPIC=chaos.b", "OFFQ_HISTORY=1"}},
		{role: "chaos-sub", env: []string{"OFFQ_PATTERN=chaos.a"}},
		{role: "chaos-sub", env: []string{"OFFQ_PATTERN=chaos.*", "OFFQ_BATCH=1"}},
		{role: "chaos-sub", env: []string{"OFFQ_PATTERN=chaos.>"}},
		// One subscriber each: the publishers hand their loans' references to the cells
		// (the hand-off), single and batched.
		{role: "chaos-pub", env: []string{"OFFQ_TOPIC=solo.a"}},
		{role: "chaos-pub", env: []string{"OFFQ_TOPIC=solo.b", "OFFQ_BATCH=1"}},
		{role: "chaos-sub", env: []string{"OFFQ_PATTERN=solo.a"}},
		{role: "chaos-sub", env: []string{"OFFQ_PATTERN=solo.b", "OFFQ_BATCH=1"}},
		// A slot ring (WithSlotRing): two subscribers read it (one in batches), a wildcard one
		// is sent copies through its queue; the writer and the readers are killed too.
		{role: "chaos-pub", env: []string{"OFFQ_TOPIC=ring.a", "OFFQ_RING=1"}},
		{role: "chaos-sub", env: []string{"OFFQ_PATTERN=ring.a", "OFFQ_DEPTH=16"}},
		{role: "chaos-sub", env: []string{"OFFQ_PATTERN=ring.a", "OFFQ_DEPTH=16", "OFFQ_BATCH=1"}},
		{role: "chaos-sub", env: []string{"OFFQ_PATTERN=ring.*"}},
	}
	// The observer stays attached throughout, so no reap while the test runs can audit: what
	// the pools hold at the end, once it has reaped, is what reaping alone left.
	obs, err := Open("chaos", WithDir(dir), WithName("observer"), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	start := func(m *member) {
		m.proc = peer.Start(t, m.role, append([]string{"OFFQ_DIR=" + dir}, m.env...)...)
		if _, err := m.proc.Expect("ready", time.Minute); err != nil {
			t.Fatalf("%s: %v", m.role, err)
		}
	}
	for _, m := range members {
		start(m)
	}
	kills := 0
	end := time.Now().Add(*chaosDuration)
	for time.Now().Before(end) {
		<-time.After(time.Duration(50+rng.IntN(250)) * time.Millisecond) // the load pattern, not synchronisation
		m := members[rng.IntN(len(members))]
		m.proc.Kill()
		m.proc.Wait(time.Minute)
		kills++
		start(m)
	}
	// Stop everyone: publishers first, then subscribers, which drain and report.
	for _, m := range members {
		if m.role == "chaos-pub" {
			m.proc.CloseStdin()
			if err := m.proc.Wait(time.Minute); err != nil {
				t.Errorf("publisher: %v", err)
			}
		}
	}
	received := 0
	for _, m := range members {
		if m.role != "chaos-sub" {
			continue
		}
		m.proc.CloseStdin()
		line, err := m.proc.Expect("report ", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		var rep chaosReport
		json.Unmarshal([]byte(line), &rep)
		// Every gap in a sequence is a drop the inbox counted. (Drops can exceed the gaps: a
		// message dropped before the first one received from an instance, or after the last
		// one of an instance that was killed, leaves no gap.)
		if rep.Corrupt != 0 || rep.Disorder != 0 || rep.Missing > rep.Dropped {
			t.Errorf("subscriber %v: %+v: want no corrupt or reordered messages, and no more gaps than the inbox counted drops", m.env, rep)
		}
		received += rep.Received
		if err := m.proc.Wait(time.Minute); err != nil {
			t.Error(err)
		}
	}
	// Everyone but the observer has closed. Reaping (which cannot audit: the observer is
	// attached) must leave the pools holding exactly what is still held: chaos.b's one retained
	// message. The second reap's sweep frees any buffer the first saw held by nobody (a
	// reference lost by a kill between the two atomic operations of one move).
	var swept int
	for range 2 {
		rep, err := obs.r.Reap()
		if err != nil {
			t.Fatal(err)
		}
		swept += rep.Swept
	}
	st := obs.r.Stats()
	live := inUse(obs)
	obs.Close()
	// Now nobody is attached: the next open audits the region, and nothing but the retained
	// message may be left.
	b, err := Open("chaos", WithDir(dir), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	allocated := inUse(b)
	fmt.Fprintf(os.Stderr, "chaos: %d kills, %d reclaimed participants, %d messages received by the last subscribers, "+
		"%d buffers swept in all (%d by the observer's final reaps), %d buffers in use after reaping with the observer attached (want 1, the retained message), %d after the audit (want 1)\n",
		kills, st.Reclaims, received, st.Swept, swept, live, allocated)
	if received == 0 {
		t.Fatal("no traffic reached the subscribers")
	}
	if live != 1 {
		t.Errorf("%d buffers in use after reaping, want 1 (chaos.b's retained message)", live)
	}
	if allocated != 1 {
		t.Fatalf("%d buffers allocated after every process closed, want 1 (the retained message)", allocated)
	}
	if kills > 0 && st.Reclaims == 0 {
		t.Fatalf("%d kills but no reclaim counted", kills)
	}
}
