package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

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
