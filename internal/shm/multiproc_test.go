package shm

// Tests with several real processes sharing one region. The test binary re-executes itself
// (internal/peer); the roles below run in the children. Processes synchronise only through
// lines on their stdin and stdout and through the region itself, and every wait is bounded.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
)

// Environment of the test roles.
const (
	envDir    = "OFFQ_TEST_DIR"    // region directory
	envRegion = "OFFQ_TEST_REGION" // region name
	envInbox  = "OFFQ_TEST_INBOX"  // an InboxID to push to
	envID     = "OFFQ_TEST_ID"     // the child's number
	envCount  = "OFFQ_TEST_COUNT"  // messages to send
)

// procTimeout bounds each wait for a child: a line, an exit.
const procTimeout = 60 * time.Second

// mpConfig is the small region the multi-process tests share.
func mpConfig() Config {
	c := DefaultConfig()
	c.Classes = []Class{{Size: 256, Count: 256}, {Size: 4 << 10, Count: 8}}
	c.Inboxes = 8
	c.InboxCapacity = 64
	c.Topics = 4
	c.Participants = 8
	c.HistoryDepth = 2
	c.Held = 16
	return c
}

func envs(kv ...any) []string {
	var out []string
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, fmt.Sprintf("%s=%v", kv[i], kv[i+1]))
	}
	return out
}

func envUint(key string) (uint64, error) {
	v, err := strconv.ParseUint(os.Getenv(key), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: %w", key, os.Getenv(key), err)
	}
	return v, nil
}

// attachFromEnv opens the region envDir/envRegion and attaches to it as name.
func attachFromEnv(name string) (*Region, *Participant, error) {
	r, err := Open(os.Getenv(envRegion), Options{Dir: os.Getenv(envDir)})
	if err != nil {
		return nil, nil, err
	}
	p, err := r.Attach(name)
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	return r, p, nil
}

// inboxFromEnv returns the inbox named by envInbox.
func inboxFromEnv(r *Region) (Inbox, error) {
	id, err := envUint(envInbox)
	if err != nil {
		return Inbox{}, err
	}
	return r.inbox(InboxID(id))
}

// A test message is msgSize bytes: producer id (4), sequence (8), filler derived from both,
// and a CRC-32 of everything before it (4).
const msgSize = 64

func putMessage(b []byte, id uint32, seq uint64) {
	binary.NativeEndian.PutUint32(b[0:], id)
	binary.NativeEndian.PutUint64(b[4:], seq)
	x := uint64(id)<<40 ^ seq*0x9e3779b97f4a7c15
	for i := 12; i < msgSize-4; i++ {
		b[i] = byte(x>>(8*(i%8))) ^ byte(i)
	}
	binary.NativeEndian.PutUint32(b[msgSize-4:], crc32.ChecksumIEEE(b[:msgSize-4]))
}

// checkMessage verifies the buffer h names and returns its producer and sequence.
func checkMessage(r *Region, h Handle) (id uint32, seq uint64, err error) {
	b, err := r.buffer(h)
	if err != nil {
		return 0, 0, err
	}
	d := b.Data()
	if len(d) != msgSize {
		return 0, 0, fmt.Errorf("message of %d bytes, want %d", len(d), msgSize)
	}
	if sum := crc32.ChecksumIEEE(d[:msgSize-4]); sum != binary.NativeEndian.Uint32(d[msgSize-4:]) {
		return 0, 0, fmt.Errorf("payload corrupt: crc %#x, stored %#x", sum, binary.NativeEndian.Uint32(d[msgSize-4:]))
	}
	id, seq = binary.NativeEndian.Uint32(d), binary.NativeEndian.Uint64(d[4:])
	if m := b.Meta(); m.Topic != id || m.Seq != seq {
		return 0, 0, fmt.Errorf("meta says producer %d seq %d, payload says %d, %d", m.Topic, m.Seq, id, seq)
	}
	return id, seq, nil
}

// pushMessage allocates, fills and pushes one message: the loan is ended whatever happens, and on a
// failed push the inbox's reference is given back, so nothing leaks.
func pushMessage(ctx context.Context, p *Participant, in *Inbox, id uint32, seq uint64) error {
	r := p.region()
	b, err := p.alloc(msgSize)
	if err != nil {
		return err
	}
	h := b.Handle()
	putMessage(b.Bytes(), id, seq)
	b.SetMeta(Meta{Len: msgSize, Topic: id, Seq: seq})
	err = r.addRefsHandle(h, 1)
	if err == nil {
		if err = in.pushHandle(ctx, h); err != nil {
			r.release(h)
		}
	}
	if uerr := p.unloan(h); err == nil {
		err = uerr
	}
	return err
}

// checkNoLeaks fails t unless every buffer of r is free, by the slots and by the counters.
func checkNoLeaks(t *testing.T, r *Region) {
	t.Helper()
	for i, n := range r.CountAllocated() {
		if n != 0 {
			t.Errorf("class %d: %d buffers still allocated", i, n)
		}
	}
	for _, s := range r.PoolStats() {
		if s.InUse != 0 {
			t.Errorf("class %d: in-use counter is %d", s.Class, s.InUse)
		}
	}
}

func inboxStats(t *testing.T, r *Region, id InboxID) InboxStats {
	t.Helper()
	for _, s := range r.InboxStats() {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("inbox %d not open", id)
	return InboxStats{}
}

func waitAll(t *testing.T, ps ...*peer.Proc) {
	t.Helper()
	for _, p := range ps {
		if err := p.Wait(procTimeout); err != nil {
			t.Error(err)
		}
	}
}

// roleOpenOrCreate calls OpenOrCreate on every region name the parent sends ("go NAME") and
// answers "ok CREATED SIZE CONFIG-JSON" or "error MESSAGE".
func roleOpenOrCreate(c *peer.Child) error {
	opts := Options{Dir: os.Getenv(envDir), Config: mpConfig()}
	c.Send("ready")
	for {
		line, err := c.Recv()
		if err != nil {
			return nil // stdin closed: done
		}
		name, ok := strings.CutPrefix(line, "go ")
		if !ok {
			return fmt.Errorf("unexpected line %q", line)
		}
		r, created, err := OpenOrCreate(name, opts)
		if err != nil {
			c.Send("error %v", err)
			continue
		}
		js, err := json.Marshal(r.Config())
		if err != nil {
			return err
		}
		c.Send("ok %t %d %s", created, r.Size(), js)
		if err := r.Close(); err != nil {
			return err
		}
	}
}

func TestMultiprocOpenOrCreate(t *testing.T) {
	const procs = 4
	rounds := 25
	if testing.Short() {
		rounds = 5
	}
	dir := t.TempDir()
	want := mpConfig()
	ps := make([]*peer.Proc, procs)
	for i := range ps {
		ps[i] = peer.Start(t, "open-or-create", envs(envDir, dir)...)
	}
	for _, p := range ps {
		if _, err := p.Expect("ready", procTimeout); err != nil {
			t.Fatal(err)
		}
	}
	for round := range rounds {
		name := fmt.Sprintf("race-%d", round)
		for _, p := range ps {
			if err := p.Send("go %s", name); err != nil {
				t.Fatal(err)
			}
		}
		creators, size := 0, -1
		for _, p := range ps {
			rest, err := p.Expect("ok ", procTimeout)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			var created bool
			var n int
			var js string
			if _, err := fmt.Sscanf(rest, "%t %d %s", &created, &n, &js); err != nil {
				t.Fatalf("round %d: %v: bad answer %q: %v", round, p, rest, err)
			}
			var got Config
			if err := json.Unmarshal([]byte(js), &got); err != nil {
				t.Fatalf("round %d: %v: config %s: %v", round, p, js, err)
			}
			if d := want.diff(got); d != "" {
				t.Errorf("round %d: %v sees a config whose %s", round, p, d)
			}
			if size >= 0 && n != size {
				t.Errorf("round %d: %v sees a region of %d bytes, another saw %d", round, p, n, size)
			}
			size = n
			if created {
				creators++
			}
		}
		if creators != 1 {
			t.Errorf("round %d: %d processes report created=true, want exactly 1", round, creators)
		}
		r, err := Open(name, Options{Dir: dir, Config: want})
		if err != nil {
			t.Fatalf("round %d: parent: %v", round, err)
		}
		r.Close()
	}
	for _, p := range ps {
		p.CloseStdin()
	}
	waitAll(t, ps...)
	// Only the regions themselves are left: no temporary files of losing creators.
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "race-") {
			t.Errorf("stray file %s", e.Name())
		}
	}
	if len(ents) != rounds {
		t.Errorf("%d files in the directory, want %d", len(ents), rounds)
	}
}

// roleProducer pushes envCount messages of producer envID into inbox envInbox, after
// "ready" and the parent's "go"; it then says "done N".
func roleProducer(c *peer.Child) error {
	id, err := envUint(envID)
	if err != nil {
		return err
	}
	n, err := envUint(envCount)
	if err != nil {
		return err
	}
	r, p, err := attachFromEnv(fmt.Sprintf("producer-%d", id))
	if err != nil {
		return err
	}
	in, err := inboxFromEnv(r)
	if err != nil {
		return err
	}
	c.Send("ready")
	if l, err := c.Recv(); err != nil || l != "go" {
		return fmt.Errorf("waiting for go: %q, %v", l, err)
	}
	for seq := range n {
		if err := pushMessage(c.Context(), p, &in, uint32(id), seq); err != nil {
			return fmt.Errorf("message %d: %w", seq, err)
		}
	}
	c.Send("done %d", n)
	if err := p.Detach(); err != nil {
		return err
	}
	return r.Close()
}

// startProducers starts n producer processes of count messages each into in and waits until
// all are attached and ready.
func startProducers(t *testing.T, dir, region string, in InboxID, n int, count uint64) []*peer.Proc {
	t.Helper()
	ps := make([]*peer.Proc, n)
	for i := range ps {
		ps[i] = peer.Start(t, "producer", envs(envDir, dir, envRegion, region, envInbox, uint64(in), envID, i, envCount, count)...)
	}
	for _, p := range ps {
		if _, err := p.Expect("ready", procTimeout); err != nil {
			t.Fatal(err)
		}
	}
	return ps
}

func newTestRegion(t testing.TB, name string) (*Region, *Participant, string) {
	t.Helper()
	dir := t.TempDir()
	r, err := Create(name, Options{Dir: dir, Config: mpConfig()})
	if err != nil {
		t.Fatal(err)
	}
	me, err := r.Attach("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		me.Detach()
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r, me, dir
}

// Three producer processes push into one Block inbox of 64 while this process consumes:
// every message arrives exactly once, each producer's in order and intact, and afterwards
// every buffer is back in its pool.
func TestMultiprocProducers(t *testing.T) {
	const producers = 3
	n := uint64(20000)
	if testing.Short() {
		n = 2000
	}
	r, me, dir := newTestRegion(t, "producers")
	in, err := me.OpenInbox(InboxConfig{Capacity: 64, Overflow: Block})
	if err != nil {
		t.Fatal(err)
	}
	ps := startProducers(t, dir, "producers", in.ID(), producers, n)
	for _, p := range ps {
		if err := p.Send("go"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	next := make([]uint64, producers)
	for got := uint64(0); got < producers*n; got++ {
		h, err := in.pop(ctx, Waiter{})
		if err != nil {
			t.Fatalf("after %d of %d messages (next per producer %v): %v", got, producers*n, next, err)
		}
		id, seq, err := checkMessage(r, h)
		if err != nil {
			t.Fatalf("message %d: %v", got, err)
		}
		if id >= producers || seq != next[id] {
			t.Fatalf("message %d: producer %d seq %d; next expected per producer %v", got, id, seq, next)
		}
		next[id]++
		if err := r.release(h); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range ps {
		if _, err := p.Expect("done", procTimeout); err != nil {
			t.Error(err)
		}
	}
	waitAll(t, ps...)
	if h, ok, err := in.tryPop(); ok || err != nil {
		t.Errorf("inbox not empty after all messages: %v, %v", h, err)
	}
	s := inboxStats(t, r, in.ID())
	if s.Pushed != producers*n || s.Popped != producers*n || s.DropOldest+s.DropNewest+s.DropTimeout+s.Corrupt != 0 {
		t.Errorf("inbox stats %+v: want %d pushed and popped, no drops", s, producers*n)
	}
	t.Logf("pool stats %+v", r.PoolStats()[0])
	if err := in.close(); err != nil {
		t.Fatal(err)
	}
	if ps := r.Participants(); len(ps) != 1 {
		t.Errorf("participants %+v: want only this process", ps)
	}
	checkNoLeaks(t, r)
}

// A producer process overflows a small DropOldest inbox: every message is either received
// or counted as dropped, those received are in order and end with the newest, and every
// buffer goes back to its pool.
func TestMultiprocDropOldest(t *testing.T) {
	const capacity = 16
	n := uint64(5000)
	if testing.Short() {
		n = 1000
	}
	// The consumer starts only after the producer has finished: exactly the newest
	// capacity messages are left, and every other one was evicted by the producer.
	t.Run("stalled", func(t *testing.T) {
		r, me, dir := newTestRegion(t, "oldest")
		in, err := me.OpenInbox(InboxConfig{Capacity: capacity, Overflow: DropOldest})
		if err != nil {
			t.Fatal(err)
		}
		p := startProducers(t, dir, "oldest", in.ID(), 1, n)[0]
		if err := p.Send("go"); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Expect("done", procTimeout); err != nil {
			t.Fatal(err)
		}
		waitAll(t, p)
		var got []uint64
		for {
			h, ok, err := in.tryPop()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			_, seq, err := checkMessage(r, h)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, seq)
			r.release(h)
		}
		s := inboxStats(t, r, in.ID())
		if uint64(len(got))+s.DropOldest != n {
			t.Errorf("%d received + %d dropped != %d sent", len(got), s.DropOldest, n)
		}
		if len(got) != capacity {
			t.Fatalf("received %d messages, want the last %d", len(got), capacity)
		}
		for i, seq := range got {
			if want := n - capacity + uint64(i); seq != want {
				t.Fatalf("received %v, want %d..%d", got, n-capacity, n-1)
			}
		}
		in.close()
		checkNoLeaks(t, r)
	})
	// The consumer takes while the producer evicts: they race for the head of the ring.
	t.Run("concurrent", func(t *testing.T) {
		r, me, dir := newTestRegion(t, "oldest")
		in, err := me.OpenInbox(InboxConfig{Capacity: capacity, Overflow: DropOldest})
		if err != nil {
			t.Fatal(err)
		}
		p := startProducers(t, dir, "oldest", in.ID(), 1, n)[0]
		if err := p.Send("go"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(procTimeout)
		var received, last uint64
		done := false
		for {
			h, ok, err := in.tryPop()
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				_, seq, err := checkMessage(r, h)
				if err != nil {
					t.Fatal(err)
				}
				if received > 0 && seq <= last {
					t.Fatalf("received seq %d after %d", seq, last)
				}
				last = seq
				received++
				r.release(h)
				continue
			}
			if done { // the producer had finished before this TryPop found the ring empty
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("producer not done after %v", procTimeout)
			}
			if l, err := p.ReadLine(0); err == nil {
				if !strings.HasPrefix(l, "done") {
					t.Fatalf("producer wrote %q", l)
				}
				done = true
			}
		}
		waitAll(t, p)
		s := inboxStats(t, r, in.ID())
		t.Logf("received %d, dropped %d of %d", received, s.DropOldest, n)
		if received+s.DropOldest != n || s.Corrupt != 0 {
			t.Errorf("%d received + %d dropped != %d sent (stats %+v)", received, s.DropOldest, n, s)
		}
		if last != n-1 {
			t.Errorf("last message received is %d, want the newest, %d", last, n-1)
		}
		in.close()
		checkNoLeaks(t, r)
	})
}

// roleSleepPong opens an inbox, says "inbox ID", and sends back every message it receives
// to envInbox with its counter incremented, sleeping (Waiter Sleep) between messages, until
// the parent closes its stdin.
func roleSleepPong(c *peer.Child) error {
	r, p, err := attachFromEnv("sleep-pong")
	if err != nil {
		return err
	}
	back, err := inboxFromEnv(r)
	if err != nil {
		return err
	}
	mine, err := p.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropNewest})
	if err != nil {
		return err
	}
	ctx := c.Context()
	stop := func() {}
	if os.Getenv(envPark) != "" {
		if stop, err = holdDirectPlace(ctx, p); err != nil {
			return err
		}
	}
	c.Send("inbox %d", mine.ID())
	for {
		h, err := mine.pop(ctx, Waiter{Strategy: Sleep})
		if err != nil {
			if c.Stopped() {
				break
			}
			return err
		}
		b, err := r.buffer(h)
		if err != nil {
			return err
		}
		v := binary.NativeEndian.Uint64(b.Bytes())
		if v%2 != 0 {
			return fmt.Errorf("received counter %d, want an even one", v)
		}
		binary.NativeEndian.PutUint64(b.Bytes(), v+1)
		if err := back.pushHandle(ctx, h); err != nil {
			return err
		}
	}
	stop()
	mine.close()
	if err := p.Detach(); err != nil {
		return err
	}
	return r.Close()
}

// Ping-pong of one buffer between two processes that both sleep on the futex before every
// message: a lost wake-up would leave a side asleep until its periodic re-check (longSleep),
// so any round that long fails the test, and a hang fails it at the context's deadline.
// With park, each side first puts another consumer to sleep in the kernel (holdDirectPlace),
// so that its ping-pong consumer parks and is woken through its process's doorbell.
func TestMultiprocSleepWakeups(t *testing.T) {
	t.Run("direct", func(t *testing.T) { multiprocSleepWakeups(t, false) })
	t.Run("parked", func(t *testing.T) { multiprocSleepWakeups(t, true) })
}

// envPark asks roleSleepPong to park (see holdDirectPlace).
const envPark = "OFFQ_PARK"

// holdDirectPlace opens an inbox of p and puts a consumer to sleep on it in the kernel, the
// one consumer of p that does so: every other consumer of p parks. stop closes the inbox and
// waits for the consumer.
func holdDirectPlace(ctx context.Context, p *Participant) (stop func(), err error) {
	in, err := p.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropNewest})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		in.pop(ctx, Waiter{Strategy: Sleep})
	}()
	for waiters(in.v.hdr.sleepers.Load()) == 0 {
		if err := ctx.Err(); err != nil {
			in.close()
			<-done
			return nil, err
		}
		runtime.Gosched()
	}
	return func() { in.close(); <-done }, nil
}

func multiprocSleepWakeups(t *testing.T, park bool) {
	rounds := 2000
	if testing.Short() {
		rounds = 300
	}
	r, me, dir := newTestRegion(t, "wakeups")
	mine, err := me.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	env := envs(envDir, dir, envRegion, "wakeups", envInbox, uint64(mine.ID()))
	if park {
		env = append(env, envPark+"=1")
	}
	p := peer.Start(t, "sleep-pong", env...)
	rest, err := p.Expect("inbox ", procTimeout)
	if err != nil {
		t.Fatal(err)
	}
	id, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := r.inbox(InboxID(id))
	if err != nil {
		t.Fatal(err)
	}
	b, err := me.alloc(msgSize)
	if err != nil {
		t.Fatal(err)
	}
	h := b.Handle()
	// Turn the loan into a plain reference, which travels with the handle.
	if err := r.addRefsHandle(h, 1); err != nil {
		t.Fatal(err)
	}
	if err := me.unloan(h); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	if park {
		stop, err := holdDirectPlace(ctx, me)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
	}
	lost := longSleep * 9 / 10
	var slow, sawParked int
	var worst, total time.Duration
	for i := range uint64(rounds) {
		binary.NativeEndian.PutUint64(b.Bytes(), 2*i)
		if waiters(theirs.v.hdr.parked.Load()) != 0 {
			sawParked++
		}
		start := time.Now()
		if err := theirs.pushHandle(ctx, h); err != nil {
			t.Fatalf("round %d: push: %v", i, err)
		}
		got, err := mine.pop(ctx, Waiter{Strategy: Sleep})
		if err != nil {
			t.Fatalf("round %d: no answer (lost wake-up?): %v", i, err)
		}
		d := time.Since(start)
		total += d
		worst = max(worst, d)
		if d > lost {
			slow++
		}
		if got != h {
			t.Fatalf("round %d: got handle %v back, want %v", i, got, h)
		}
		if v := binary.NativeEndian.Uint64(b.Bytes()); v != 2*i+1 {
			t.Fatalf("round %d: counter %d, want %d", i, v, 2*i+1)
		}
	}
	t.Logf("%d rounds, mean %v, worst %v; the other side seen parked before %d", rounds, total/time.Duration(rounds), worst, sawParked)
	if (sawParked > 0) != park {
		t.Errorf("the other side was seen parked before %d of %d pushes (park %v)", sawParked, rounds, park)
	}
	if slow > 0 {
		t.Errorf("%d rounds took longer than %v: a sleeper was woken only by its periodic re-check (lost wake-up)", slow, lost)
	}
	if err := r.release(h); err != nil {
		t.Fatal(err)
	}
	p.CloseStdin()
	waitAll(t, p)
	if err := mine.close(); err != nil {
		t.Fatal(err)
	}
	checkNoLeaks(t, r)
}
