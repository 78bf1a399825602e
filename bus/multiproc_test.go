package bus

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/internal/shm"
)

// Test payload: publisher id (4) | sequence (8) | fill length (4) | fill | CRC32 of all before.
func fillPayload(b []byte, pub uint32, seq uint64) {
	binary.LittleEndian.PutUint32(b[0:], pub)
	binary.LittleEndian.PutUint64(b[4:], seq)
	n := len(b) - 20
	binary.LittleEndian.PutUint32(b[12:], uint32(n))
	x := uint32(seq)*2654435761 + pub
	for i := 16; i < 16+n; i++ {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	binary.LittleEndian.PutUint32(b[16+n:], crc32.ChecksumIEEE(b[:16+n]))
}

func checkPayload(b []byte) (pub uint32, seq uint64, err error) {
	if len(b) < 20 {
		return 0, 0, fmt.Errorf("payload of %d bytes", len(b))
	}
	n := int(binary.LittleEndian.Uint32(b[12:]))
	if n != len(b)-20 {
		return 0, 0, fmt.Errorf("fill length %d in a %d-byte payload", n, len(b))
	}
	if crc32.ChecksumIEEE(b[:16+n]) != binary.LittleEndian.Uint32(b[16+n:]) {
		return 0, 0, errors.New("checksum mismatch")
	}
	return binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint64(b[4:]), nil
}

// rolePublisher: OFFQ_DIR, OFFQ_TOPIC, OFFQ_PUB (id), OFFQ_COUNT, OFFQ_SIZE, OFFQ_HISTORY.
// Prints "ready", waits for "go", publishes, prints "done".
func rolePublisher(c *peer.Child) error {
	env := func(k string) int { n, _ := strconv.Atoi(os.Getenv(k)); return n }
	b, err := Open("mp", WithDir(os.Getenv("OFFQ_DIR")), WithName("publisher"))
	if err != nil {
		return err
	}
	defer b.Close()
	pub, err := b.Publisher(os.Getenv("OFFQ_TOPIC"), WithHistory(env("OFFQ_HISTORY")))
	if err != nil {
		return err
	}
	c.Send("ready")
	if l, err := c.Recv(); err != nil || l != "go" {
		return fmt.Errorf("waiting for go: %q %v", l, err)
	}
	id, size := uint32(env("OFFQ_PUB")), env("OFFQ_SIZE")
	for seq := 1; seq <= env("OFFQ_COUNT"); seq++ {
		l, err := pub.Loan(size)
		if err != nil {
			return err
		}
		fillPayload(l.Bytes(), id, uint64(seq))
		if err := pub.Send(c.Context(), l); err != nil {
			return err
		}
	}
	c.Send("done")
	return nil
}

type subResult struct {
	Received int               `json:"received"`
	Last     map[string]uint64 `json:"last"` // publisher id -> last sequence
	Errors   []string          `json:"errors"`
}

// roleSubscriber: OFFQ_DIR, OFFQ_PATTERN, OFFQ_EXPECT (messages). Prints "ready" once
// subscribed, receives OFFQ_EXPECT messages checking payloads and per-publisher order, prints
// "result JSON".
func roleSubscriber(c *peer.Child) error {
	b, err := Open("mp", WithDir(os.Getenv("OFFQ_DIR")), WithName("subscriber"))
	if err != nil {
		return err
	}
	defer b.Close()
	// Block, so that nothing is dropped; a queue shorter than the smallest pool, so that a
	// stalled subscriber makes publishers wait rather than exhaust the buffers.
	s, err := b.Subscribe(os.Getenv("OFFQ_PATTERN"), WithOverflow(Block), WithQueueDepth(64))
	if err != nil {
		return err
	}
	c.Send("ready")
	want, _ := strconv.Atoi(os.Getenv("OFFQ_EXPECT"))
	res := subResult{Last: map[string]uint64{}}
	last := map[uint32]uint64{}
	for res.Received < want {
		m, err := s.Receive(c.Context())
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
			break
		}
		pub, seq, err := checkPayload(m.Data())
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
		} else if seq != last[pub]+1 {
			res.Errors = append(res.Errors, fmt.Sprintf("publisher %d: seq %d after %d", pub, seq, last[pub]))
		}
		last[pub] = seq
		res.Received++
		if err := m.Release(); err != nil {
			res.Errors = append(res.Errors, err.Error())
		}
	}
	for p, s := range last {
		res.Last[strconv.Itoa(int(p))] = s
	}
	j, _ := json.Marshal(res)
	c.Send("result %s", j)
	return nil
}

func startPub(t *testing.T, dir, topic string, id, count, size, history int) *peer.Proc {
	p := peer.Start(t, "publisher", "OFFQ_DIR="+dir, "OFFQ_TOPIC="+topic, "OFFQ_PUB="+strconv.Itoa(id),
		"OFFQ_COUNT="+strconv.Itoa(count), "OFFQ_SIZE="+strconv.Itoa(size), "OFFQ_HISTORY="+strconv.Itoa(history))
	if _, err := p.Expect("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	return p
}

func startSub(t *testing.T, dir, pattern string, expect int) *peer.Proc {
	p := peer.Start(t, "subscriber", "OFFQ_DIR="+dir, "OFFQ_PATTERN="+pattern, "OFFQ_EXPECT="+strconv.Itoa(expect))
	if _, err := p.Expect("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	return p
}

func readResult(t *testing.T, p *peer.Proc) subResult {
	t.Helper()
	line, err := p.Expect("result ", 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var r subResult
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	if err := p.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	return r
}

// assertClean opens the region after every process has closed and checks that no buffer is
// in use and no participant or inbox is left.
func assertClean(t *testing.T, dir string) {
	t.Helper()
	r, err := shm.Open("mp", shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, n := range must(r.CountAllocated()) {
		if n != 0 {
			t.Errorf("class %d: %d buffers allocated after every process closed", i, n)
		}
	}
	for _, ps := range must(r.PoolStats()) {
		if ps.InUse != 0 {
			t.Errorf("class %d: in-use counter %d after every process closed", ps.Class, ps.InUse)
		}
	}
	if p := must(r.Participants()); len(p) != 0 {
		t.Errorf("participants left: %+v", p)
	}
	if in := must(r.InboxStats()); len(in) != 0 {
		t.Errorf("inboxes left: %+v", in)
	}
}

func TestMultiProcessFanOut(t *testing.T) {
	dir := t.TempDir()
	const n = 20000
	subs := []*peer.Proc{
		startSub(t, dir, "fan.a", n),
		startSub(t, dir, "fan.a", n),
		startSub(t, dir, "fan.*", n),
		startSub(t, dir, ">", n),
	}
	pub := startPub(t, dir, "fan.a", 7, n, 100, 0)
	pub.Send("go")
	if _, err := pub.Expect("done", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	for i, s := range subs {
		r := readResult(t, s)
		if r.Received != n || r.Last["7"] != n || len(r.Errors) != 0 {
			t.Errorf("subscriber %d: received %d, last %v, errors %v", i, r.Received, r.Last, r.Errors)
		}
	}
	pub.CloseStdin()
	if err := pub.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	assertClean(t, dir)
}

func TestMultiProcessThreePublishersOneSubscriber(t *testing.T) {
	dir := t.TempDir()
	const n = 10000
	sub := startSub(t, dir, "many.*", 3*n)
	var pubs []*peer.Proc
	for i := 1; i <= 3; i++ {
		pubs = append(pubs, startPub(t, dir, "many.p"+strconv.Itoa(i), i, n, 64+i*1000, 0))
	}
	for _, p := range pubs {
		p.Send("go")
	}
	r := readResult(t, sub)
	if r.Received != 3*n || len(r.Errors) != 0 {
		t.Errorf("received %d, errors %v", r.Received, r.Errors)
	}
	for i := 1; i <= 3; i++ {
		if r.Last[strconv.Itoa(i)] != n {
			t.Errorf("publisher %d: last seq %d, want %d", i, r.Last[strconv.Itoa(i)], n)
		}
	}
	for _, p := range pubs {
		p.CloseStdin()
		if err := p.Wait(time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	assertClean(t, dir)
}

func TestMultiProcessLateJoinerGetsHistory(t *testing.T) {
	dir := t.TempDir()
	pub := startPub(t, dir, "late.x", 1, 10, 64, 3)
	pub.Send("go")
	if _, err := pub.Expect("done", time.Minute); err != nil {
		t.Fatal(err)
	}
	pub.CloseStdin()
	if err := pub.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	// The publisher is gone; its topic keeps the last three messages.
	b, err := Open("mp", WithDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s, err := b.Subscribe("late.>")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var seqs []string
	for range 3 {
		m, err := s.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, seq, err := checkPayload(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, strconv.FormatUint(seq, 10))
		m.Release()
	}
	if got := strings.Join(seqs, ","); got != "8,9,10" {
		t.Fatalf("late joiner got %s, want 8,9,10", got)
	}
	if s.Len() != 0 {
		t.Fatalf("%d more messages queued", s.Len())
	}
}

func TestMultiProcessSlowSubscriberDropsOnlyCounted(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("mp", WithDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.Subscribe("slow", WithQueueDepth(8)) // DropOldest; not read while publishing
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000
	pub := startPub(t, dir, "slow", 1, n, 200, 0)
	pub.Send("go")
	// The publisher finishes although nobody reads: drop-oldest never blocks it.
	if _, err := pub.Expect("done", time.Minute); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []uint64
	for s.Len() > 0 {
		m, err := s.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, seq, err := checkPayload(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, seq)
		m.Release()
	}
	st := must(b.Region().InboxStats())
	if len(st) != 1 {
		t.Fatalf("inbox stats %+v", st)
	}
	if uint64(len(got))+st[0].DropOldest != n {
		t.Fatalf("received %d + dropped %d != published %d", len(got), st[0].DropOldest, n)
	}
	for i, seq := range got {
		if seq != uint64(n-len(got)+1+i) {
			t.Fatalf("received %v, want the newest %d in order", got, len(got))
		}
	}
	pub.CloseStdin()
	if err := pub.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	b.Close()
	assertClean(t, dir)
}
