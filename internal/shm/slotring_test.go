package shm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/offq/offq/internal/peer"
)

var testRing = RingShape{Slots: 8, Payload: 40, Readers: 4}

func ringTopic(t *testing.T, p *Participant, name string) Topic {
	t.Helper()
	tp, err := p.LookupTopic(name, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

// ringPair makes a ring of testRing's shape on tp and a reader of it from its next message,
// both closed when the test ends.
func ringPair(t *testing.T, me *Participant, tp Topic) (*SlotRing, *RingReader) {
	t.Helper()
	w, err := me.CreateSlotRing(tp, testRing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(context.Background()) })
	rr, err := me.OpenSlotRing(tp, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rr.Close)
	return w, rr
}

// ringWriter makes topic tp's slot ring, of testRing's shape, closed when the test ends,
// within a second (a reader may be behind when the test fails).
func ringWriter(t *testing.T, me *Participant, tp Topic) *SlotRing {
	t.Helper()
	w, err := me.CreateSlotRing(tp, testRing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		w.Close(ctx)
	})
	return w
}

// ringInbox opens an inbox that reads topic ring.a's slot ring and makes that ring (of
// testRing's shape); the ring is closed when the test ends, within a second (the inbox's
// reader may be behind when the test fails).
func ringInbox(t *testing.T, me *Participant) (Inbox, *SlotRing) {
	t.Helper()
	tp := ringTopic(t, me, "ring.a")
	in, err := me.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropOldest, Pattern: "ring.a", RingOf: &tp})
	if err != nil {
		t.Fatal(err)
	}
	w := ringWriter(t, me, tp)
	return in, w
}

// putRing writes message s (the sequence, then bytes derived from it) into w.
func putRing(t testing.TB, w *SlotRing, s uint64, n int) {
	t.Helper()
	if err := putRingErr(w, s, n); err != nil {
		t.Fatal(err)
	}
}

func putRingErr(w *SlotRing, s uint64, n int) error {
	b, err := w.Next(n)
	if err != nil {
		return err
	}
	binary.NativeEndian.PutUint64(b, s)
	for i := 8; i < n; i++ {
		b[i] = byte(s) + byte(i)
	}
	_, err = w.Commit(n, 0)
	return err
}

// checkRingMessage returns the message's sequence if its bytes are those putRing wrote.
func checkRingMessage(b []byte) (uint64, error) {
	if len(b) < 8 {
		return 0, fmt.Errorf("message of %d bytes", len(b))
	}
	s := binary.NativeEndian.Uint64(b)
	for i := 8; i < len(b); i++ {
		if b[i] != byte(s)+byte(i) {
			return s, fmt.Errorf("message %d: byte %d is %d", s, i, b[i])
		}
	}
	return s, nil
}

// pollRing polls rr until a message arrives (or the ring ends, or 10 s pass).
func pollRing(t testing.TB, rr *RingReader, dst []byte) (Meta, error) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for {
		m, ok, err := rr.Poll(dst)
		if ok || err != nil {
			return m, err
		}
		if time.Now().After(end) {
			t.Fatal("no message in 10 s")
		}
	}
}

func TestSlotRingDelivers(t *testing.T) {
	r, me, _ := newTestRegion(t, "ring-delivers")
	tp := ringTopic(t, me, "ring.a")
	w, err := me.CreateSlotRing(tp, testRing)
	if err != nil {
		t.Fatal(err)
	}
	rr, err := me.OpenSlotRing(tp, false)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, w.Payload())
	if _, ok, err := rr.Poll(dst); ok || err != nil {
		t.Fatalf("empty ring: ok %v, err %v", ok, err)
	}
	before := Now()
	for s := uint64(1); s <= 20; s++ {
		putRing(t, w, s, 8+int(s%30))
		m, err := pollRing(t, rr, dst)
		if err != nil {
			t.Fatal(err)
		}
		got, err := checkRingMessage(dst[:m.Len])
		if err != nil || got != s {
			t.Fatalf("message %d: got %d, %v", s, got, err)
		}
		if m.Seq != s || m.Topic != uint32(tp.Index()) || m.Stamp < before || m.Len != uint32(8+s%30) {
			t.Fatalf("message %d: header %+v", s, m)
		}
	}
	if rr.Lost() != 0 {
		t.Fatalf("lost %d", rr.Lost())
	}
	if _, err := w.Next(w.Payload() + 1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
	if _, err := me.CreateSlotRing(tp, testRing); !errors.Is(err, ErrRingTaken) {
		t.Fatalf("second ring: %v", err)
	}
	rr.Close()
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := me.OpenSlotRing(tp, false); !errors.Is(err, ErrNoRing) {
		t.Fatalf("after close: %v", err)
	}
	checkNoLeaks(t, r)
}

// A reader that falls a lap behind counts what it missed and reads the rest in order; so does
// one that opens from the start of a ring that has lapped it.
func TestSlotRingLapped(t *testing.T) {
	_, me, _ := newTestRegion(t, "ring-lapped")
	tp := ringTopic(t, me, "ring.a")
	w, rr := ringPair(t, me, tp)
	const n = 30
	for s := uint64(1); s <= n; s++ {
		putRing(t, w, s, 16)
	}
	late, err := me.OpenSlotRing(tp, true)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	dst := make([]byte, w.Payload())
	var got []uint64
	for {
		m, ok, err := rr.Poll(dst)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		s, err := checkRingMessage(dst[:m.Len])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	// The ring holds the last slots messages (23..30); a lapped reader reads on from the
	// oldest it can trust: all of them or all but the oldest, in order, and counts the rest.
	ok := len(got) >= testRing.Slots-1 && len(got) <= testRing.Slots && rr.Lost() == n-uint64(len(got))
	for i, s := range got {
		ok = ok && s == n-uint64(len(got)-1-i)
	}
	if !ok {
		t.Fatalf("lapped reader got %v, lost %d", got, rr.Lost())
	}
	var lateGot uint64
	for {
		m, ok, err := late.Poll(dst)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		s, err := checkRingMessage(dst[:m.Len])
		if err != nil || s != n-uint64(len(got))+1+lateGot {
			t.Fatalf("late reader: %d, %v after %d", s, err, lateGot)
		}
		lateGot++
	}
	if lateGot != uint64(len(got)) || late.Lost() != rr.Lost() {
		t.Fatalf("late reader: %d messages, %d lost; the lapped one %d, %d", lateGot, late.Lost(), len(got), rr.Lost())
	}
	// A reader of the start of a ring that has not lapped reads all of it.
	w2tp := ringTopic(t, me, "ring.b")
	w2, err := me.CreateSlotRing(w2tp, testRing)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close(context.Background())
	putRing(t, w2, 1, 8)
	putRing(t, w2, 2, 8)
	first, err := me.OpenSlotRing(w2tp, true)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	for want := uint64(1); want <= 2; want++ {
		m, err := pollRing(t, first, dst)
		if s, cerr := checkRingMessage(dst[:m.Len]); err != nil || cerr != nil || s != want {
			t.Fatalf("from the start: %d, %v, %v, want %d", s, err, cerr, want)
		}
	}
}

// Close waits for a live reader to read everything published, then the reader sees the end.
func TestSlotRingCloseDrains(t *testing.T) {
	r, me, _ := newTestRegion(t, "ring-drain")
	tp := ringTopic(t, me, "ring.a")
	w, err := me.CreateSlotRing(tp, testRing)
	if err != nil {
		t.Fatal(err)
	}
	rr, err := me.OpenSlotRing(tp, false)
	if err != nil {
		t.Fatal(err)
	}
	for s := uint64(1); s <= 5; s++ {
		putRing(t, w, s, 8)
	}
	closed := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() { closed <- w.Close(ctx) }()
	dst := make([]byte, testRing.Payload)
	for want := uint64(1); want <= 5; want++ {
		m, err := pollRing(t, rr, dst)
		if err != nil {
			t.Fatalf("message %d: %v", want, err)
		}
		if s, err := checkRingMessage(dst[:m.Len]); err != nil || s != want {
			t.Fatalf("got %d, %v, want %d", s, err, want)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, _, err := rr.Poll(dst); !errors.Is(err, ErrRingEnded) {
		t.Fatalf("after the writer closed: %v", err)
	}
	checkNoLeaks(t, r)

	// A reader that never reads holds Close up until its context ends, no longer.
	w, err = me.CreateSlotRing(tp, testRing)
	if err != nil {
		t.Fatal(err)
	}
	rr, err = me.OpenSlotRing(tp, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Close()
	putRing(t, w, 1, 8)
	short, cancelShort := context.WithCancel(context.Background())
	cancelShort()
	if err := w.Close(short); !errors.Is(err, context.Canceled) {
		t.Fatalf("close with a reader behind: %v", err)
	}
	if _, _, err := rr.Poll(dst); !errors.Is(err, ErrRingEnded) {
		t.Fatalf("ring freed: %v", err)
	}
	checkNoLeaks(t, r)
}

// Words another process wrote over the ring never come out as messages, and never move a
// reader by themselves.
func TestSlotRingScribbles(t *testing.T) {
	r, me, _ := newTestRegion(t, "ring-scribble")
	tp := ringTopic(t, me, "ring.a")
	w, rr := ringPair(t, me, tp)
	dst := make([]byte, testRing.Payload)

	// A length that does not fit the slot: skipped and counted.
	putRing(t, w, 1, 8)
	w.g.slot(1).length = 1 << 20
	corrupt := r.hdr.corrupt.Load()
	if _, ok, err := rr.Poll(dst); ok || err != nil {
		t.Fatalf("scribbled length: ok %v, err %v", ok, err)
	}
	if rr.Damaged() != 1 || rr.Lost() != 0 || r.hdr.corrupt.Load() != corrupt+1 {
		t.Fatalf("scribbled length: damaged %d, lost %d, corrupt %d", rr.Damaged(), rr.Lost(), r.hdr.corrupt.Load()-corrupt)
	}
	// A sequence word a lap ahead, while the writer's count says otherwise: not a lap.
	w.g.slot(2).seq.Store(2 + uint64(testRing.Slots))
	if _, ok, err := rr.Poll(dst); ok || err != nil || rr.Damaged() != 1 || rr.Lost() != 0 {
		t.Fatalf("scribbled sequence: ok %v, err %v, damaged %d, lost %d", ok, err, rr.Damaged(), rr.Lost())
	}
	putRing(t, w, 2, 8)
	m, err := pollRing(t, rr, dst)
	if s, cerr := checkRingMessage(dst[:m.Len]); err != nil || cerr != nil || s != 2 {
		t.Fatalf("after the scribble: %d, %v, %v", s, err, cerr)
	}
	// A short buffer is the caller's error, and loses nothing.
	putRing(t, w, 3, 30)
	if _, _, err := rr.Poll(dst[:10]); err == nil {
		t.Fatal("a short buffer: no error")
	}
	if m, err := pollRing(t, rr, dst); err != nil || m.Len != 30 {
		t.Fatalf("after a short buffer: %+v, %v", m, err)
	}

	// The topic's word naming something else: no ring, or a corrupt one, never a crash.
	saved := tp.e.ring.Load()
	for _, v := range []uint64{1, 1 << 62, saved + 1} {
		tp.e.ring.Store(v)
		if _, err := me.OpenSlotRing(tp, false); !errors.Is(err, ErrNoRing) {
			t.Errorf("topic word %#x: %v", v, err)
		}
	}
	tp.e.ring.Store(saved)
	hd := (*ringHeader)(w.g.base)
	hd.slots = 1 << 30
	if _, err := me.OpenSlotRing(tp, false); !errors.Is(err, ErrCorrupt) {
		t.Errorf("scribbled header: %v", err)
	}
	hd.slots = uint32(testRing.Slots)
	hd.slotSize = 1 << 20
	if _, err := me.OpenSlotRing(tp, false); !errors.Is(err, ErrCorrupt) {
		t.Errorf("slots past the buffer: %v", err)
	}
	hd.slotSize = uint32(testRing.slotSize())
}

func TestSlotRingShapes(t *testing.T) {
	_, me, _ := newTestRegion(t, "ring-shapes")
	tp := ringTopic(t, me, "ring.a")
	for _, sh := range []RingShape{{3, 8, 1}, {1, 8, 1}, {8, 0, 1}, {8, 8, 0}, {8, 8, MaxRingReaders + 1}, {1 << 20, 8, 1}} {
		if _, err := me.CreateSlotRing(tp, sh); err == nil {
			t.Errorf("shape %+v: no error", sh)
		}
	}
	// Larger than the largest class (4 KiB in mpConfig).
	if _, err := me.CreateSlotRing(tp, RingShape{Slots: 64, Payload: 256, Readers: 1}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("a ring larger than a buffer: %v", err)
	}
	readers := RingShape{Slots: 4, Payload: 8, Readers: 2}
	w, err := me.CreateSlotRing(tp, readers)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	for i := 0; i < 2; i++ {
		rr, err := me.OpenSlotRing(tp, false)
		if err != nil {
			t.Fatal(err)
		}
		defer rr.Close()
	}
	if _, err := me.OpenSlotRing(tp, false); !errors.Is(err, ErrRingReaders) {
		t.Fatalf("a third reader of two entries: %v", err)
	}
}

func TestSlotRingAllocs(t *testing.T) {
	_, me, _ := newTestRegion(t, "ring-allocs")
	tp := ringTopic(t, me, "ring.a")
	w, rr := ringPair(t, me, tp)
	dst := make([]byte, testRing.Payload)
	msg := make([]byte, 32)
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := w.Publish(msg); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := rr.Poll(dst); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations a message", n)
	}
}

// roleRingWriter creates the slot ring of topic "ring.mp" and publishes envCount messages as
// fast as it can, then closes the ring (waiting for its readers); with envID 1 it says
// "published N" every 1,000 messages and never closes, for the parent to kill it.
func roleRingWriter(c *peer.Child) error {
	n, err := envUint(envCount)
	if err != nil {
		return err
	}
	kill, err := envUint(envID)
	if err != nil {
		return err
	}
	r, p, err := attachFromEnv("ring-writer")
	if err != nil {
		return err
	}
	tp, err := p.LookupTopic("ring.mp", true, 0)
	if err != nil {
		return err
	}
	w, err := p.CreateSlotRing(tp, RingShape{Slots: 16, Payload: 48, Readers: 2})
	if err != nil {
		return err
	}
	c.Send("ready")
	if l, err := c.Recv(); err != nil || l != "go" {
		return fmt.Errorf("waiting for go: %q, %v", l, err)
	}
	for s := uint64(1); s <= n; s++ {
		if err := putRingErr(w, s, 8+int(s%40)); err != nil {
			return err
		}
		if kill == 1 && s%1000 == 0 {
			c.Send("published %d", s)
		}
	}
	if kill == 1 {
		<-c.Context().Done()
		return nil
	}
	if err := w.Close(c.Context()); err != nil {
		return err
	}
	c.Send("closed")
	if err := p.Detach(); err != nil {
		return err
	}
	return r.Close()
}

// Another process writes 200,000 messages through a ring of 16 slots: this one receives them
// in order and intact, counts every one it missed, and sees the end; every buffer is back.
func TestMultiprocSlotRing(t *testing.T) {
	r, me, dir := newTestRegion(t, "ring-mp")
	const n = 200000
	w := peer.Start(t, "ring-writer", envs(envDir, dir, envRegion, "ring-mp", envCount, n, envID, 0)...)
	if _, err := w.Expect("ready", procTimeout); err != nil {
		t.Fatal(err)
	}
	tp := ringTopic(t, me, "ring.mp")
	rr, err := me.OpenSlotRing(tp, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Send("go"); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, 48)
	var got, last uint64
	for {
		m, err := pollRing(t, rr, dst)
		if errors.Is(err, ErrRingEnded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		s, err := checkRingMessage(dst[:m.Len])
		if err != nil {
			t.Fatal(err)
		}
		if s <= last || m.Seq != s || m.Len != uint32(8+s%40) {
			t.Fatalf("message %d (header %+v) after %d", s, m, last)
		}
		last = s
		got++
	}
	if last != n || got+rr.Lost() != n || rr.Damaged() != 0 {
		t.Fatalf("received %d, lost %d, damaged %d, last %d of %d", got, rr.Lost(), rr.Damaged(), last, n)
	}
	t.Logf("received %d, lost %d (lapped)", got, rr.Lost())
	if _, err := w.Expect("closed", procTimeout); err != nil {
		t.Fatal(err)
	}
	waitAll(t, w)
	checkNoLeaks(t, r)
}

// A writer killed mid-stream: once a reaper has ended its loan the reader sees the ring end,
// and a new writer can take the topic.
func TestMultiprocSlotRingWriterDies(t *testing.T) {
	r, me, dir := newTestRegion(t, "ring-die")
	// A count the writer never reaches before it is killed (1<<30: an int on 32-bit platforms too).
	w := peer.Start(t, "ring-writer", envs(envDir, dir, envRegion, "ring-die", envCount, 1<<30, envID, 1)...)
	if _, err := w.Expect("ready", procTimeout); err != nil {
		t.Fatal(err)
	}
	tp := ringTopic(t, me, "ring.mp")
	rr, err := me.OpenSlotRing(tp, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Send("go"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Expect("published", procTimeout); err != nil {
		t.Fatal(err)
	}
	w.Kill()
	select {
	case <-w.Exited():
	case <-time.After(procTimeout):
		t.Fatal("the killed writer did not exit")
	}
	if _, err := me.CreateSlotRing(tp, testRing); !errors.Is(err, ErrRingTaken) {
		t.Fatalf("a ring whose writer is dead but not reaped: %v", err)
	}
	if _, err := r.Reap(); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, 48)
	for end := time.Now().Add(procTimeout); ; {
		_, _, err := rr.Poll(dst)
		if errors.Is(err, ErrRingEnded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(end) {
			t.Fatal("the reader did not see the ring end")
		}
	}
	nw, err := me.CreateSlotRing(tp, testRing)
	if err != nil {
		t.Fatalf("after the reap: %v", err)
	}
	if err := nw.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkNoLeaks(t, r)
}

// FuzzSlotRing writes arbitrary bytes over a live ring (its header, the writer's line, the
// reader entries, the slots: everything after the pool's own slot header) and then reads it:
// opening a reader and polling never panics or hangs, and never returns a message longer than
// a slot holds; a reader that does come back with messages gets them in increasing sequence.
func FuzzSlotRing(f *testing.F) {
	r, err := Create("ring-fuzz", Options{Dir: f.TempDir(), Config: mpConfig()})
	if err != nil {
		f.Fatal(err)
	}
	defer r.Close()
	me, err := r.Attach("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	defer me.Detach()
	tp, err := me.LookupTopic("ring.fuzz", true, 0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{}, uint16(0))
	f.Add([]byte{0x4f, 0x46, 0x51, 0x52, 8, 0, 0, 0, 128, 0, 0, 0, 4}, uint16(0))
	f.Add(make([]byte, 512), uint16(200))
	f.Fuzz(func(t *testing.T, junk []byte, at uint16) {
		w, err := me.CreateSlotRing(tp, testRing)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			// Junk over the reader entries may name this live process as a reader that
			// never reads: Close waits for it only as long as its context lets it.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			defer cancel()
			w.Close(ctx)
		}()
		for s := uint64(1); s <= 5; s++ {
			putRing(t, w, s, 16)
		}
		b := unsafe.Slice((*byte)(w.g.base), testRing.Bytes())
		off := int(at) % len(b)
		copy(b[off:], junk)
		rr, err := me.OpenSlotRing(tp, true)
		if err != nil {
			return // the header does not describe a ring: refused
		}
		defer rr.Close()
		dst := make([]byte, rr.Payload())
		var last uint64
		for range 64 {
			m, ok, err := rr.Poll(dst)
			if err != nil {
				return
			}
			if !ok {
				continue
			}
			if int(m.Len) > rr.Payload() {
				t.Fatalf("a message of %d bytes from slots of %d", m.Len, rr.Payload())
			}
			if m.Seq <= last {
				t.Fatalf("message %d after %d", m.Seq, last)
			}
			last = m.Seq
		}
	})
}

// A retired ring that knows its subscribers' inboxes (FreeFor with targets) waits only for
// their entries: an entry another process wrote over, naming a live participant far behind,
// does not keep it (Close, which knows no targets, would wait for it until its context ends).
func TestSlotRingJunkEntry(t *testing.T) {
	r, me, _ := newTestRegion(t, "ring-junk")
	tp := ringTopic(t, me, "ring.a")
	w, err := me.CreateSlotRing(tp, testRing)
	if err != nil {
		t.Fatal(err)
	}
	putRing(t, w, 1, 8)
	e := w.g.reader(2)
	e.owner.Store(uint64(me.owner)) // junk: this live process, reading nothing
	e.cursor.Store(1)
	w.Retire()
	if w.Free(false) {
		t.Fatal("Free without targets passed a live reader entry that is behind")
	}
	if !w.FreeFor([]Inbox{}, false) {
		t.Fatal("FreeFor waited for an entry no subscriber of the ring owns")
	}
	checkNoLeaks(t, r)
}

// A topic sequence number written over in a slot's header is the reader's to pass on as it
// finds it (it cannot tell), and costs nothing after: the messages that follow are delivered.
// (A reader that refused messages numbered below the last one it read took one such word as
// the new floor and refused every message after it; TestCorruptionWhileRunning counted
// 129,244 damaged messages in one run.)
func TestSlotRingScribbledTopicSeq(t *testing.T) {
	_, me, _ := newTestRegion(t, "ring-topicseq")
	tp := ringTopic(t, me, "ring.a")
	w, rr := ringPair(t, me, tp)
	dst := make([]byte, rr.Payload())
	putRing(t, w, 1, 8)
	w.g.slot(1).topicSeq = 1 << 60
	if m, err := pollRing(t, rr, dst); err != nil || m.Seq != 1<<60 {
		t.Fatalf("the scribbled message: %+v, %v", m, err)
	}
	for s := uint64(2); s <= 20; s++ {
		putRing(t, w, s, 8)
		m, err := pollRing(t, rr, dst)
		if got, cerr := checkRingMessage(dst[:m.Len]); err != nil || cerr != nil || got != s {
			t.Fatalf("message %d after the scribble: %d, %v, %v", s, got, err, cerr)
		}
	}
	if rr.Damaged() != 0 || rr.Lost() != 0 {
		t.Fatalf("damaged %d, lost %d", rr.Damaged(), rr.Lost())
	}
}

// The topic's word naming the ring, written over: a subscriber that looks for the ring then
// finds nothing, while the writer goes on. RepairWord (the Bus's timer) puts it back, counted,
// and a reader opened after that reads the ring.
func TestSlotRingRepairWord(t *testing.T) {
	r, me, _ := newTestRegion(t, "ring-word")
	tp := ringTopic(t, me, "ring.a")
	w, err := me.CreateSlotRing(tp, testRing)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	if w.RepairWord() {
		t.Fatal("repaired a word that was right")
	}
	tp.e.ring.Store(0x1234)
	if _, err := me.OpenSlotRing(tp, false); !errors.Is(err, ErrNoRing) {
		t.Fatalf("a junk word: %v", err)
	}
	corrupt := r.hdr.corrupt.Load()
	if !w.RepairWord() || r.hdr.corrupt.Load() != corrupt+1 {
		t.Fatal("the junk word was not repaired and counted")
	}
	rr, err := me.OpenSlotRing(tp, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Close()
	putRing(t, w, 1, 8)
	if _, err := pollRing(t, rr, make([]byte, rr.Payload())); err != nil {
		t.Fatal(err)
	}
}

// A ring's writer skips only inboxes whose topic field and pattern both name its topic: the
// topic field of a wildcard subscription's inbox written over with the topic does not make the
// writer skip it (it would then lose every message: it reads no ring).
func TestSlotRingTargetsNeedThePattern(t *testing.T) {
	r, me, _ := newTestRegion(t, "ring-targets")
	tp := ringTopic(t, me, "ring.a")
	exact, err := me.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropOldest, Pattern: "ring.a", RingOf: &tp})
	if err != nil {
		t.Fatal(err)
	}
	wild, err := me.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropOldest, Pattern: "ring.*"})
	if err != nil {
		t.Fatal(err)
	}
	wild.v.hdr.topic = uint32(tp.Index()) + 1 // written over
	targets, err := r.Targets(nil, func(string) bool { return true })
	if err != nil || len(targets) != 2 {
		t.Fatalf("targets %v, %v", targets, err)
	}
	if n := tp.RingTargets(targets, 8); n != 1 || targets[1].ID() != exact.ID() {
		t.Fatalf("%d ring targets, last %v; want 1, the exact subscription %v", n, targets[len(targets)-1].ID(), exact.ID())
	}
	if n := tp.RingTargets(targets, 4); n != 0 {
		t.Fatalf("a queue as long as the ring: %d ring targets", n)
	}
}

// Len counts a message whose sequence word is stored but whose writer has not yet stored its
// count (the two stores a moment apart, or a writer killed between them): the message is
// readable. (Counted from the count alone, Len said 0 and a Receive then returned a message.)
func TestSlotRingLenCountsCommitted(t *testing.T) {
	_, me, _ := newTestRegion(t, "ring-len")
	in, w := ringInbox(t, me)
	putRing(t, w, 1, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var h Held
	if err := me.TakeInto(ctx, &in, Waiter{Strategy: BusySpin}, &h); err != nil {
		t.Fatal(err)
	}
	h.Release()
	if n := in.Len(); n != 0 {
		t.Fatalf("Len %d with everything read", n)
	}
	putRing(t, w, 2, 8)
	w.g.w.published.Store(1) // as if the writer had not stored its count yet
	if n := in.Len(); n != 1 {
		t.Fatalf("Len %d with message 2 committed, want 1", n)
	}
	if err := me.TakeInto(ctx, &in, Waiter{Strategy: BusySpin}, &h); err != nil {
		t.Fatal(err)
	}
	if s, err := checkRingMessage(h.Data()); err != nil || s != 2 {
		t.Fatalf("got %d, %v", s, err)
	}
	h.Release()
}

// TestGuardTruncatedSlotRing: a ring's exported calls, on both sides, return errors wrapping
// ErrCorrupt once the region's file is cut under the ring (the guard keeps this process alive:
// without it Next, Commit and Publish died of SIGBUS).
func TestGuardTruncatedSlotRing(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Classes = []Class{{Size: 4096, Count: 4}}
	r, err := Create("cut-ring", Options{Dir: t.TempDir(), Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	me, err := r.Attach("test")
	if err != nil {
		t.Fatal(err)
	}
	tp, err := me.LookupTopic("t", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	w, err := me.CreateSlotRing(tp, testRing)
	if err != nil {
		t.Fatal(err)
	}
	rr, err := me.OpenSlotRing(tp, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(r.Path(), 4096); err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "memory fault") {
			t.Errorf("%s after the cut: %v, want a memory fault wrapping ErrCorrupt", what, err)
		}
	}
	_, err = w.Next(8)
	check("Next", err)
	w.cur = w.g.slot(w.next) // as if Next had got that far
	_, err = w.Commit(8, 0)
	check("Commit", err)
	_, err = w.Publish(make([]byte, 8))
	check("Publish", err)
	l, err := w.Loan(8)
	if err != nil {
		t.Fatal(err) // the staging buffer is the process's: no fault
	}
	_, err = w.CommitLoan(l, 8)
	check("CommitLoan", err)
	_, _, err = rr.Poll(make([]byte, rr.Payload()))
	check("Poll", err)
	w.RepairWord()
	w.FlushBytes()
	w.Retire()
	w.Free(true)
	rr.Close()
	me.Detach()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSlotRingLoanIntoRetiring: a loan that takes the token of a ring retired meanwhile
// (Retire found the token taken and left the finish to its holder, which gave the token back
// unfinished, as a LoanInto between its token and its check of the closed flag would) touches
// no shared memory: LoanInto returns ErrRingRetiring with the token held, and EndLoan
// finishes the retirement. The bus lends without its use gate, so a LoanInto that finished it
// could write into a ring Bus.Close had freed and unmapped.
func TestSlotRingLoanIntoRetiring(t *testing.T) {
	_, me, _ := newTestRegion(t, "ring-retiring")
	tp := ringTopic(t, me, "ring.r")
	w, err := me.CreateSlotRing(tp, testRing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Free(true) })
	if _, err := w.Loan(8); err != nil {
		t.Fatal(err)
	}
	w.Retire()        // the token is out: the finish is left to its holder
	w.loaned.Store(0) // the state a racing LoanInto's token meets
	var l Loan
	if err := w.LoanInto(8, &l); err != ErrRingRetiring {
		t.Fatalf("LoanInto of a ring retired under it: %v, want ErrRingRetiring", err)
	}
	if w.retired.Load() || w.g.hd.closed.Load() != 0 {
		t.Fatal("LoanInto finished the retirement itself, in shared memory")
	}
	if w.loaned.Load() != 1 {
		t.Fatal("LoanInto gave the token back")
	}
	w.EndLoan()
	if !w.retired.Load() || w.g.hd.closed.Load() == 0 {
		t.Fatal("EndLoan did not finish the retirement")
	}
	if _, err := w.Loan(8); !errors.Is(err, ErrClosed) {
		t.Fatalf("Loan of a retired ring: %v, want ErrClosed", err)
	}
}

// A take that polled the ring and found nothing watches the slot for a change of its sequence
// word (InboxRing.takeSpin, RingReader.await). A message committed between the poll and the
// watch's first look is a change the watch never sees: it watched all its turns (about 3 µs)
// before the take looked again, which put a 3.2 µs step into offq-ring's p99.9 where round
// trips are fast (issue 15, thirteenth round). The watch must report such a message at once.
func TestRingAwaitSeesCommitBeforeWatch(t *testing.T) {
	_, me, _ := newTestRegion(t, "ring-await")
	tp := ringTopic(t, me, "ring.a")
	in, err := me.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropOldest, Pattern: "ring.b"})
	if err != nil {
		t.Fatal(err)
	}
	w, rr := ringPair(t, me, tp)
	dst := make([]byte, rr.Payload())
	if _, ok, err := rr.Poll(dst); ok || err != nil {
		t.Fatalf("poll of an empty ring: %v, %v", ok, err)
	}
	putRing(t, w, 1, 8) // lands after the poll, before the watch looks
	turns := ringSpin
	if !rr.await(&turns, &in) {
		t.Fatalf("the watch missed message 1, committed before it looked (%d of %d turns left)", turns, ringSpin)
	}
	if turns < ringSpin-1 {
		t.Fatalf("the watch took %d turns to see a message already there", ringSpin-turns)
	}
	m, ok, err := rr.Poll(dst)
	if !ok || err != nil {
		t.Fatalf("poll after the watch: %v, %v", ok, err)
	}
	if s, err := checkRingMessage(dst[:m.Len]); err != nil || s != 1 {
		t.Fatalf("got %d, %v", s, err)
	}
	// Nothing more: the watch gives up after its turns, reporting no message.
	turns = 64
	if rr.await(&turns, &in) {
		t.Fatal("the watch reported a message on a ring with none")
	}
}

// A Receive on a ring whose next slot another process forged (its sequence word written with
// the cursor's value over the last lap's header, while the writer has not come to it) gives up
// when its context is done, with either wait strategy, and takes the writer's real message
// once it comes. It did not: the poll, rightly, waits for the writer, but the inbox's wait
// called the forged word ready and returned at once, so the take spun without end, deaf to
// its context (holding the ring's lock, with the watch's first look), until the writer
// published again.
func TestRingForgedWordHonoursContext(t *testing.T) {
	for _, st := range []WaitStrategy{BusySpin, Sleep} {
		t.Run(st.String(), func(t *testing.T) {
			_, me, _ := newTestRegion(t, "ring-forged")
			in, w := ringInbox(t, me)
			take := func(d time.Duration) (uint64, error) {
				ctx, cancel := context.WithTimeout(context.Background(), d)
				defer cancel()
				done := make(chan error, 1)
				var h Held
				go func() { done <- me.TakeInto(ctx, &in, Waiter{Strategy: st}, &h) }()
				select {
				case err := <-done:
					if err != nil {
						return 0, err
					}
					defer h.Release()
					return checkRingMessage(h.Data())
				case <-time.After(d + 5*time.Second):
					t.Fatalf("the take ignored its context (%v) for 5 s", d)
					return 0, nil
				}
			}
			putRing(t, w, 1, 8)
			if s, err := take(10 * time.Second); err != nil || s != 1 {
				t.Fatalf("first message: %d, %v", s, err)
			}
			w.g.slot(2).seq.Store(2) // forged: the slot still holds no message 2
			if _, err := take(100 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("take on a forged word: %v, want the context's deadline", err)
			}
			putRing(t, w, 2, 8)
			if s, err := take(10 * time.Second); err != nil || s != 2 {
				t.Fatalf("the writer's message 2 after the forgery: %d, %v", s, err)
			}
		})
	}
}

// TestRingReaderEntryOfDeadConsumer: a consumer that reads a slot ring dies, and a new one
// gets its participant slot and its inbox slot. Its reader entry, left with its cursor where
// it died, must not be shown as anyone's: not while it is unreaped (its participant is dead),
// not after the reap (which clears it), and not even if no reaper cleared it (an entry with
// the live consumer's own owner word and an older cursor), so that InboxStats' RingDepth
// (offq_inbox_ring_behind) and TopicStats' ring readers are the live consumer's.
func TestRingReaderEntryOfDeadConsumer(t *testing.T) {
	r, me, _ := newTestRegion(t, "ring-dead-reader")
	tp := ringTopic(t, me, "ring.a")
	w := ringWriter(t, me, tp)
	ringReaders := func() []RingReaderStats {
		for _, ts := range r.TopicStats() {
			if ts.Ring != nil {
				return ts.Ring.Readers
			}
		}
		t.Fatal("the topic's ring is not shown")
		return nil
	}
	inUse := func() (n int) {
		for k := range w.g.readers {
			if w.g.reader(k).owner.Load() != 0 {
				n++
			}
		}
		return n
	}

	sub1, err := r.Attach("sub1")
	if err != nil {
		t.Fatal(err)
	}
	in1, err := sub1.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropOldest, Pattern: "ring.a", RingOf: &tp})
	if err != nil {
		t.Fatal(err)
	}
	if inUse() != 1 {
		t.Fatalf("%d reader entries in use after the first consumer opened its inbox, want 1", inUse())
	}
	die(sub1)
	for s := uint64(1); s <= 20; s++ {
		putRing(t, w, s, 8)
	}
	if rs := ringReaders(); len(rs) != 0 {
		t.Errorf("ring readers %+v while the only reader is dead and unreaped: want none", rs)
	}
	if rep, err := r.Reap(); err != nil || rep.Participants != 1 {
		t.Fatalf("reap: %+v, %v", rep, err)
	}
	if n := inUse(); n != 0 {
		t.Errorf("%d reader entries in use after the dead reader was reaped, want 0", n)
	}

	sub2 := attachUnit(t, r, "sub2")
	in2, err := sub2.OpenInbox(InboxConfig{Capacity: 4, Overflow: DropOldest, Pattern: "ring.a", RingOf: &tp})
	if err != nil {
		t.Fatal(err)
	}
	if sub2.Index() != sub1.Index() || in2.v.index != in1.v.index {
		t.Fatalf("the new consumer got participant %d, inbox %d; want the dead one's slots %d, %d",
			sub2.Index(), in2.v.index, sub1.Index(), in1.v.index)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for s := uint64(21); s <= 40; s++ {
		putRing(t, w, s, 8)
		var h Held
		if err := sub2.TakeInto(ctx, &in2, Waiter{Strategy: BusySpin}, &h); err != nil {
			t.Fatal(err)
		}
		h.Release()
	}
	check := func(when string) {
		t.Helper()
		for _, st := range r.InboxStats() {
			if st.ID.Index() == int(in2.v.index) && (!st.Ring || st.RingDepth != 0) {
				t.Errorf("%s: the consumer read the ring to the end: Ring %v, RingDepth %d, want true, 0", when, st.Ring, st.RingDepth)
			}
		}
		if rs := ringReaders(); len(rs) != 1 || rs[0].Participant != sub2.Index() || rs[0].Inbox != int(in2.v.index) || rs[0].Behind != 0 {
			t.Errorf("%s: ring readers %+v, want only the live consumer's (participant %d, inbox %d, 0 behind)", when, rs, sub2.Index(), in2.v.index)
		}
	}
	check("after the reap")

	// The entry a reaper that does not clear entries would leave: the live consumer's owner
	// word, with the dead one's cursor.
	tag := (uint64(in2.v.index)+1)<<32 | uint64(sub2.owner)
	for k := range w.g.readers {
		if e := w.g.reader(k); e.owner.Load() == 0 {
			e.cursor.Store(1)
			e.owner.Store(tag)
			break
		}
	}
	check("with a stale entry of the same owner word")
}
