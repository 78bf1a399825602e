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

// A NATS reply larger than any buffer of the bus cannot be delivered to the local requester,
// which times out: the bridge counts it as dropped and says why, naming the topic and the
// sizes. Before, it logged the loss at debug level only and counted nothing.
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
	// The bridge's subscription may not be in place for the first request: repeat until the
	// responder has answered one (the reply is lost either way: the requester times out).
	base := br.Stats().Dropped
	waitFor(t, "an oversize reply counted", func() bool {
		rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if _, err := pub.Request(rctx, []byte("q")); !errors.Is(err, bus.ErrTimeout) && !errors.Is(err, bus.ErrNoResponders) {
			t.Fatalf("request answered by a reply too large for the bus: %v", err)
		}
		return logs.FilterMessageSnippet("too large for the bus").Len() > 0
	})
	if br.Stats().Dropped == base {
		t.Fatal("the oversize reply was not counted as dropped")
	}
	e := logs.FilterMessageSnippet("too large for the bus").All()[0]
	if f := e.ContextMap(); f["topic"] != "svc.big" || f["bytes"] != int64(len(big)) || f["max"] != int64(b.MaxMessageSize()) {
		t.Fatalf("log fields %v", f)
	}
}
