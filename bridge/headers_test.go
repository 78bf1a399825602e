package bridge

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/codec"
	"github.com/offq/offq/transport"
)

// TestHeadersOnEveryMessage: the exporter sends the codec (CodecNone for an untyped topic)
// and the origin publish time on every message.
func TestHeadersOnEveryMessage(t *testing.T) {
	s := runServer(t, 0, 0)
	busA := openBus(t, "a")
	newBridge(t, busA, clientURL(s), WithID("A"), WithExport("out.>"))
	nc, err := nats.Connect(clientURL(s))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	got := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe("out.>", got)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	nc.Flush()
	ctx := ctxT(t)
	raw, err := busA.Publisher("out.raw")
	if err != nil {
		t.Fatal(err)
	}
	mp, err := bus.NewTypedPublisher(busA, "out.mp", codec.NewMsgpack[map[string]any]())
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := raw.Publish(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := mp.Publish(ctx, &map[string]any{"a": 1}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"out.raw": CodecNone, "out.mp": "msgpack"}
	for range 2 {
		select {
		case m := <-got:
			if c := m.Header.Get(HeaderCodec); c != want[m.Subject] {
				t.Errorf("%s: %s %q, want %q", m.Subject, HeaderCodec, c, want[m.Subject])
			}
			ns, err := strconv.ParseInt(m.Header.Get(HeaderTime), 10, 64)
			if at := time.Unix(0, ns); err != nil || at.Before(before.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
				t.Errorf("%s: %s %q, want the publish time (about %v)", m.Subject, HeaderTime, m.Header.Get(HeaderTime), before)
			}
		case <-ctx.Done():
			t.Fatal("no message on NATS")
		}
	}
}

// TestImportRefusesUntypedOnTypedTopic: a NATS message without offq's headers ("hello" from
// any client) is refused by a typed topic and counted, and imported on an untyped one; the
// importer counts gaps in an origin's sequence numbers, less those the exporter skipped.
func TestImportRefusesUntypedOnTypedTopic(t *testing.T) {
	s := runServer(t, 0, 0)
	busB := openBus(t, "b")
	brB := newBridge(t, busB, clientURL(s), WithID("B"), WithImport("in.>"))
	interest(t, s, "in.typed")
	typed, err := bus.NewTypedPublisher(busB, "in.typed", codec.NewStruct[order]())
	if err != nil {
		t.Fatal(err)
	}
	defer typed.Close()
	nc, err := nats.Connect(clientURL(s))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Publish("in.typed", []byte("hello"))
	nc.Publish("in.plain", []byte("hello"))
	waitFor(t, "both NATS messages handled", func() bool { st := brB.Stats(); return st.Mismatched+st.Imported == 2 })
	if st := brB.Stats(); st.Mismatched != 1 || st.Imported != 1 {
		t.Fatalf("want 1 refused (typed topic) and 1 imported: %+v", st)
	}

	// Gaps: origin X sends 1, 2, 5 (3 and 4 lost), then 7 saying it skipped 6 on purpose.
	for _, h := range []struct{ seq, skipped string }{{"1", ""}, {"2", ""}, {"5", ""}, {"7", "1"}} {
		m := &nats.Msg{Subject: "in.plain", Data: []byte("g"), Header: nats.Header{}}
		m.Header.Set(HeaderOrigin, "X")
		m.Header.Set(HeaderCodec, CodecNone)
		m.Header.Set(HeaderSeq, h.seq)
		if h.skipped != "" {
			m.Header.Set(HeaderSkipped, h.skipped)
		}
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the sequence imported", func() bool { return brB.Stats().Imported == 5 })
	if st := brB.Stats(); st.Gaps != 2 {
		t.Fatalf("gaps %d, want 2: %+v", st.Gaps, st)
	}

	// The counters reach the bus's region, under the bridge's id.
	brB.publishStats()
	r, err := transport.Open("b", transport.Options{Dir: busDir(busB), ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, p := range st.Participants {
		if b := p.Bridge; b != nil {
			found = true
			if b.ID != "B" || b.Mismatched != 1 || b.Gaps != 2 || b.Imported != 5 || !b.Connected {
				t.Errorf("bridge counters in the region: %+v", *b)
			}
		}
	}
	if !found {
		t.Fatal("no bridge in the region's participants")
	}
}

// TestPendingWhileDisconnected: what is exported while NATS is down waits in nats.go's
// reconnect buffer: pending, not forwarded; at Close it is counted dropped. A clean Close logs
// no warning; the disconnect before it does.
func TestPendingWhileDisconnected(t *testing.T) {
	s := runServer(t, 0, 0)
	b := openBus(t, "a")
	core, logs := observer.New(zapcore.InfoLevel)
	br, err := New(b, clientURL(s), WithID("A"), WithExport("logs.>"), WithLogger(zap.New(core)),
		WithNATSOptions(nats.ReconnectWait(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	s.Shutdown()
	s.WaitForShutdown()
	waitFor(t, "the disconnect", func() bool { return br.Stats().Disconnects > 0 })
	pub, err := b.Publisher("logs.app")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	for i := range n {
		if err := pub.Publish(ctx, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the messages pending", func() bool { return br.Stats().Pending == n })
	if st := br.Stats(); st.Forwarded != 0 || st.Connected {
		t.Fatalf("forwarded while disconnected: %+v", st)
	}
	warns := logs.FilterLevelExact(zapcore.WarnLevel).Len()
	br.Close()
	if st := br.Stats(); st.Dropped != n || st.Pending != 0 || st.Forwarded != 0 {
		t.Fatalf("after Close: %+v", st)
	}
	if after := logs.FilterLevelExact(zapcore.WarnLevel).Len(); after != warns {
		t.Errorf("Close logged %d warnings: %v", after-warns, logs.All()[warns:])
	}
}

// TestCleanCloseNoWarning: closing a connected bridge logs no warning.
func TestCleanCloseNoWarning(t *testing.T) {
	s := runServer(t, 0, 0)
	b := openBus(t, "a")
	core, logs := observer.New(zapcore.InfoLevel)
	closed := make(chan struct{})
	// nats.go runs its handlers in order on a goroutine of its own: the disconnect handler
	// has run when the closed handler does.
	br, err := New(b, clientURL(s), WithExport("x.>"), WithLogger(zap.New(core)),
		WithNATSOptions(nats.ClosedHandler(func(*nats.Conn) { close(closed) })))
	if err != nil {
		t.Fatal(err)
	}
	br.Close()
	select {
	case <-closed:
	case <-ctxT(t).Done():
		t.Fatal("the NATS connection did not report its close")
	}
	if w := logs.FilterLevelExact(zapcore.WarnLevel); w.Len() != 0 {
		t.Fatalf("a clean Close logged warnings: %v", w.All())
	}
}

func busDir(b *bus.Bus) string { return filepath.Dir(b.Path()) }

// TestNoFalseGapsFromLoops: two bridges that both export and import a topic skip each other's
// messages on the way back (loop prevention); Offq-Skipped keeps those skips from counting as
// gaps at the other end.
func TestNoFalseGapsFromLoops(t *testing.T) {
	s := runServer(t, 0, 0)
	busA, busB := openBus(t, "a"), openBus(t, "b")
	brA := newBridge(t, busA, clientURL(s), WithID("A"), WithExport("loop.>"), WithImport("loop.>"))
	brB := newBridge(t, busB, clientURL(s), WithID("B"), WithExport("loop.>"), WithImport("loop.>"))
	ctx := ctxT(t)
	pubA, err := busA.Publisher("loop.t")
	if err != nil {
		t.Fatal(err)
	}
	pubB, err := busB.Publisher("loop.t")
	if err != nil {
		t.Fatal(err)
	}
	if err := pubB.Publish(ctx, []byte("b1")); err != nil { // B's seq 1
		t.Fatal(err)
	}
	waitFor(t, "A to import B's first", func() bool { return brA.Stats().Imported == 1 && brA.Stats().Looped == 1 })
	for _, m := range []string{"a1", "a2", "a3"} { // A's seqs 2 to 4, after skipping 1
		if err := pubA.Publish(ctx, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "B to import A's three", func() bool { return brB.Stats().Imported == 3 && brB.Stats().Looped == 3 })
	if err := pubB.Publish(ctx, []byte("b2")); err != nil { // B's seq 5, after skipping 2 to 4
		t.Fatal(err)
	}
	waitFor(t, "A to import B's second", func() bool { return brA.Stats().Imported == 2 })
	if a, b := brA.Stats(), brB.Stats(); a.Gaps != 0 || b.Gaps != 0 || a.Dropped != 0 || b.Dropped != 0 {
		t.Fatalf("gaps from skipped loops:\nA %+v\nB %+v", a, b)
	}
}
