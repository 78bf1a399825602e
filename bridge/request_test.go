package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/offq/offq/bus"
)

// TestRequestAcrossHosts: a requester on host A, the responder on host B, each bus bridged
// both ways through its own routed NATS server. Requests cross to B as NATS requests and the
// replies come back to the requester on A; concurrent requests each get their own reply.
// A NATS client's request reaches B's responder too.
func TestRequestAcrossHosts(t *testing.T) {
	s1, s2 := cluster(t)
	busA, busB := openBus(t, "a"), openBus(t, "b")
	newBridge(t, busA, clientURL(s1), WithID("A"), WithExport("svc.>"), WithImport("svc.>"))
	newBridge(t, busB, clientURL(s2), WithID("B"), WithExport("svc.>"), WithImport("svc.>"))
	interest(t, s1, "svc.upper")
	interest(t, s2, "svc.upper")
	ctx := ctxT(t)

	resp, err := busB.Subscribe("svc.upper")
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Handle(func(m bus.Message) {
		if !m.IsRequest() {
			return
		}
		out := []byte("B:" + string(m.Data()))
		if err := m.Respond(ctx, out); err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	defer resp.Close()

	pub, err := busA.Publisher("svc.upper")
	if err != nil {
		t.Fatal(err)
	}
	// Interest crosses the routes asynchronously: the first requests may find nobody on the
	// other side (the NATS request fails and A's requester times out); retry until one is
	// answered.
	warm := 0
	for {
		rctx, cancel := context.WithTimeout(ctx, 200e6)
		m, err := pub.Request(rctx, []byte("probe"))
		cancel()
		if err == nil {
			m.Release()
			break
		}
		if !errors.Is(err, bus.ErrTimeout) || ctx.Err() != nil {
			t.Fatalf("probe: %v", err)
		}
		warm++
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				q := fmt.Sprintf("q%d-%d", g, i)
				m, err := pub.Request(ctx, []byte(q))
				if err != nil {
					t.Error(err)
					return
				}
				if string(m.Data()) != "B:"+q {
					t.Errorf("reply %q to %q", m.Data(), q)
				}
				m.Release()
			}
		}()
	}
	wg.Wait()

	// A plain NATS client asks B's responder (through A's server and B's bridge).
	nc, err := nats.Connect(clientURL(s1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r, err := nc.RequestWithContext(ctx, "svc.upper", []byte("nats"))
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Data) != "B:nats" {
		t.Fatalf("NATS reply %q", r.Data)
	}
}

// A NATS reply larger than any buffer of the bus cannot be delivered to the local requester:
// the bridge counts it as dropped, says why (topic and sizes), and answers the requester with
// an error reply, which fails its request at once with a *bus.ResponderError. Before, the
// bridge logged the loss at debug level only, counted nothing, and the requester waited for
// its whole timeout.
func TestOversizeReplyCounted(t *testing.T) {
	s := runServer(t, 0, 0)
	cfg := bus.DefaultConfig()
	cfg.Classes = []bus.Class{{Size: 256, Count: 64}, {Size: 4 << 10, Count: 16}} // replies of up to 4 KiB
	b, err := bus.Open("a", bus.WithDir(t.TempDir()), bus.WithConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() }) // after the bridge's Close (cleanups run last first)
	core, logs := observer.New(zapcore.InfoLevel)
	br := newBridge(t, b, clientURL(s), WithID("A"), WithExport("svc.>"), WithLogger(zap.New(core)))
	ctx := ctxT(t)
	nc, err := nats.Connect(clientURL(s))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	big := make([]byte, b.MaxMessageSize()+1)
	sub, err := nc.Subscribe("svc.big", func(m *nats.Msg) { m.Respond(big) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pub, err := b.Publisher("svc.big")
	if err != nil {
		t.Fatal(err)
	}
	// The bridge's subscription may not be in place for the first requests: they time out.
	base := br.Stats().Dropped
	var re *bus.ResponderError
	waitFor(t, "an error reply", func() bool {
		rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err := pub.Request(rctx, []byte("q"))
		if errors.As(err, &re) {
			return true
		}
		if !errors.Is(err, bus.ErrTimeout) && !errors.Is(err, bus.ErrNoResponders) {
			t.Fatalf("request answered by a reply too large for the bus: %v", err)
		}
		return false
	})
	if want := "reply too large: 4097 bytes from NATS, largest buffer 4KiB"; re.Reason != want {
		t.Fatalf("responder error %q, want %q", re.Reason, want)
	}
	if br.Stats().Dropped == base {
		t.Fatal("the oversize reply was not counted as dropped")
	}
	e := logs.FilterMessageSnippet("too large for the bus").All()[0]
	if f := e.ContextMap(); f["topic"] != "svc.big" || f["bytes"] != int64(len(big)) || f["max"] != int64(b.MaxMessageSize()) {
		t.Fatalf("log fields %v", f)
	}
}

// An error reply from a local responder crosses to a NATS requester as the same bytes (so a
// bus requester behind another bridge fails with it too). Before, the bridge's wait failed on
// it and the NATS requester timed out.
func TestErrorReplyCrossesToNATS(t *testing.T) {
	s := runServer(t, 0, 0)
	b := openBus(t, "a")
	newBridge(t, b, clientURL(s), WithID("A"), WithImport("svc.>"))
	ctx := ctxT(t)
	resp, err := b.Subscribe("svc.fail")
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Handle(func(m bus.Message) {
		if err := m.RespondError(ctx, "no such account"); err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	defer resp.Close()
	nc, err := nats.Connect(clientURL(s))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	interest(t, s, "svc.fail")
	var reply *nats.Msg
	waitFor(t, "the error reply over NATS", func() bool {
		reply, err = nc.Request("svc.fail", []byte("q"), 200*time.Millisecond)
		return err == nil
	})
	if want := bus.ErrorReplyPrefix + "no such account"; string(reply.Data) != want {
		t.Fatalf("reply over NATS %q, want %q", reply.Data, want)
	}
}
