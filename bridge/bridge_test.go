package bridge

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/codec"
)

// order is the typed message of the tests: a fixed-size struct for codec.Struct.
type order struct {
	ID    uint64
	Price float64
	Qty   int32
	Side  [4]byte
}

// runServer starts a NATS server on 127.0.0.1 (port 0: a random one), in cluster "offq"
// with a route to each of routes.
func runServer(t *testing.T, port, clusterPort int, routes ...*url.URL) *server.Server {
	t.Helper()
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if clusterPort == 0 {
		clusterPort = server.RANDOM_PORT
	}
	opts := &server.Options{
		Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
		Cluster: server.ClusterOpts{Name: "offq", Host: "127.0.0.1", Port: clusterPort},
		Routes:  routes,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		s.Shutdown()
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func clientURL(s *server.Server) string { return "nats://" + s.Addr().String() }

func routeURL(s *server.Server) *url.URL {
	return &url.URL{Scheme: "nats", Host: s.ClusterAddr().String()}
}

func ports(s *server.Server) (int, int) {
	return s.Addr().(*net.TCPAddr).Port, s.ClusterAddr().Port
}

// cluster starts two routed servers, one per "host".
func cluster(t *testing.T) (*server.Server, *server.Server) {
	s1 := runServer(t, 0, 0)
	s2 := runServer(t, 0, 0, routeURL(s1))
	waitFor(t, "cluster routes", func() bool { return s1.NumRoutes() > 0 && s2.NumRoutes() > 0 })
	return s1, s2
}

// waitFor polls cond, which observes the state it waits for, until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// interest waits until s knows of a subscriber to subject (routed interest included).
func interest(t *testing.T, s *server.Server, subject string) {
	t.Helper()
	waitFor(t, "interest in "+subject, func() bool { return s.GlobalAccount().SubscriptionInterest(subject) })
}

func openBus(t *testing.T, name string) *bus.Bus {
	t.Helper()
	b, err := bus.Open(name, bus.WithDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func newBridge(t *testing.T, b *bus.Bus, url string, opts ...Option) *Bridge {
	t.Helper()
	br, err := New(b, url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close() })
	return br
}

// warmUp publishes probes with send until ready reports one arrived on the other side: NATS
// interest crosses the cluster's routes asynchronously, and messages sent before it has are
// dropped by the server (at most once). It returns how many probes were sent.
func warmUp(t *testing.T, send func(), ready func(context.Context) bool) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n := 1; ; n++ {
		send()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		ok := ready(ctx)
		cancel()
		if ok {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatal("no probe crossed the bridge")
		}
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestTypedAcrossHosts: two hosts (a bus and a NATS server each, the servers routed), bridges
// exporting and importing the same pattern on both sides. Typed messages published on A
// arrive on B intact and in order, and nothing comes back to A.
func TestTypedAcrossHosts(t *testing.T) {
	s1, s2 := cluster(t)
	busA, busB := openBus(t, "a"), openBus(t, "b")
	brA := newBridge(t, busA, clientURL(s1), WithID("A"), WithExport("orders.>"), WithImport("orders.>"))
	brB := newBridge(t, busB, clientURL(s2), WithID("B"), WithExport("orders.>"), WithImport("orders.>"))
	interest(t, s1, "orders.new")
	interest(t, s2, "orders.new")
	ctx := ctxT(t)

	c := codec.NewStruct[order]()
	subB, err := bus.NewTypedSubscription(busB, "orders.>", c)
	if err != nil {
		t.Fatal(err)
	}
	defer subB.Close()
	allA, err := busA.Subscribe("orders.>") // everything A's bus sees, local or imported
	if err != nil {
		t.Fatal(err)
	}
	defer allA.Close()

	pubA, err := bus.NewTypedPublisher(busA, "orders.new", c)
	if err != nil {
		t.Fatal(err)
	}
	probeA, err := bus.NewTypedPublisher(busA, "orders.probe", c)
	if err != nil {
		t.Fatal(err)
	}
	probes := warmUp(t, func() {
		if err := probeA.Publish(ctx, &order{}); err != nil {
			t.Fatal(err)
		}
	}, func(ctx context.Context) bool {
		m, err := subB.Receive(ctx)
		if err != nil {
			return false
		}
		m.Release()
		return true
	})
	const n = 500
	for i := range n {
		v := order{ID: uint64(i + 1), Price: float64(i) * 1.5, Qty: int32(-i), Side: [4]byte{'b', 'u', 'y', byte(i)}}
		if err := pubA.Publish(ctx, &v); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; {
		m, err := subB.Receive(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
		if m.Topic() == "orders.probe" { // a late probe
			m.Release()
			continue
		}
		var v order
		if err := m.Decode(&v); err != nil {
			t.Fatal(err)
		}
		want := order{ID: uint64(i + 1), Price: float64(i) * 1.5, Qty: int32(-i), Side: [4]byte{'b', 'u', 'y', byte(i)}}
		if m.Topic() != "orders.new" || v != want {
			t.Fatalf("message %d: %s %+v, want orders.new %+v\nA %+v\nB %+v", i+1, m.Topic(), v, want, brA.Stats(), brB.Stats())
		}
		m.Release()
		i++
	}

	// The topic on B carries A's type: a typed publisher of another type is refused there.
	// It names A's type, which travelled in Offq-Type.
	if _, err := bus.NewTypedPublisher(busB, "orders.new", codec.NewMsgpack[string]()); !errors.Is(err, bus.ErrTypeMismatch) || !strings.Contains(err.Error(), "type bridge.order,") {
		t.Fatalf("publisher of another type on B: %v, want ErrTypeMismatch naming bridge.order", err)
	}

	// A fence from B: B exports it after everything it imported, on one connection, so any
	// echo of A's messages would reach A before it.
	pubB, err := bus.NewTypedPublisher(busB, "orders.fence", c)
	if err != nil {
		t.Fatal(err)
	}
	if err := pubB.Publish(ctx, &order{ID: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		m, err := allA.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		topic := m.Topic()
		m.Release()
		if topic == "orders.probe" {
			i--
			continue
		}
		if topic == "orders.fence" {
			if i != n {
				t.Fatalf("A saw %d messages before B's fence, want its own %d (echoes?)", i, n)
			}
			break
		}
		if i >= n {
			t.Fatalf("A saw message %d on %s: an echo", i+1, topic)
		}
	}
	// Probes sent before the interest crossed the routes are lost in NATS, uncounted: B
	// imports all of A's orders and some of its probes.
	// A counts the fence after publishing it locally, and its exporter skips it after that.
	waitFor(t, "A to count B's fence", func() bool { st := brA.Stats(); return st.Imported == 1 && st.Looped == 1 })
	a, b := brA.Stats(), brB.Stats()
	if a.Forwarded != uint64(n+probes) || b.Imported < n || b.Imported > a.Forwarded || b.Looped != b.Imported || b.Forwarded != 1 || a.Imported != 1 || a.Dropped != 0 || b.Dropped != 0 {
		t.Fatalf("stats\nA %+v\nB %+v", a, b)
	}
}

// TestSurvivesServerRestart kills A's NATS server and restarts it: the bridge fails over,
// loses nothing it does not count, and forwards what is published after the restart.
func TestSurvivesServerRestart(t *testing.T) {
	s1, s2 := cluster(t)
	busA, busB := openBus(t, "a"), openBus(t, "b")
	brA := newBridge(t, busA, clientURL(s1)+","+clientURL(s2), WithID("A"), WithExport("metrics.>"),
		WithNATSOptions(nats.DontRandomize(), nats.ReconnectWait(20*time.Millisecond), nats.ReconnectJitter(0, 0)))
	newBridge(t, busB, clientURL(s2), WithID("B"), WithImport("metrics.>"))
	interest(t, s1, "metrics.x")
	ctx := ctxT(t)

	subB, err := busB.Subscribe("metrics.>")
	if err != nil {
		t.Fatal(err)
	}
	defer subB.Close()
	pub, err := busA.Publisher("metrics.x")
	if err != nil {
		t.Fatal(err)
	}
	next := uint64(0)
	publish := func(k int) {
		for range k {
			next++
			if err := pub.Publish(ctx, binary.BigEndian.AppendUint64(nil, next)); err != nil {
				t.Fatal(err)
			}
		}
	}
	last := uint64(0)
	received := 0
	// receive takes messages until it has the one numbered upTo; they must be increasing.
	receive := func(upTo uint64) {
		t.Helper()
		for last < upTo {
			m, err := subB.Receive(ctx)
			if err != nil {
				t.Fatalf("waiting for %d (last %d): %v; A %+v", upTo, last, err, brA.Stats())
			}
			if m.Topic() == "metrics.probe" { // a late probe
				m.Release()
				continue
			}
			v := binary.BigEndian.Uint64(m.Data())
			m.Release()
			if v <= last {
				t.Fatalf("received %d after %d", v, last)
			}
			last = v
			received++
		}
	}

	probe, err := busA.Publisher("metrics.probe")
	if err != nil {
		t.Fatal(err)
	}
	probes := warmUp(t, func() {
		if err := probe.Publish(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}, func(ctx context.Context) bool {
		m, err := subB.Receive(ctx)
		if err != nil {
			return false
		}
		m.Release()
		return true
	})

	publish(100)
	receive(next)

	p1, c1 := ports(s1)
	s1.Shutdown()
	s1.WaitForShutdown()
	waitFor(t, "A to see the disconnect", func() bool { return brA.Stats().Disconnects > 0 })
	publish(100) // buffered by nats.go until the failover to s2, or counted as dropped
	waitFor(t, "A to reconnect", func() bool { return brA.Stats().Reconnects > 0 })

	s1 = runServer(t, p1, c1, routeURL(s2))
	waitFor(t, "cluster routes", func() bool { return s1.NumRoutes() > 0 && s2.NumRoutes() > 0 })
	publish(100)
	receive(next)

	st := brA.Stats()
	if lost := int(next) - received; uint64(lost) != st.Dropped {
		t.Fatalf("lost %d messages, counted %d: %+v", lost, st.Dropped, st)
	}
	if st.Forwarded+st.Dropped != next+uint64(probes) {
		t.Fatalf("published %d, forwarded+dropped: %+v", next, st)
	}
}

// TestTypeMismatchRefused: two bridges on one NATS server; B's topic carries another type, so
// A's messages are refused there and counted.
func TestTypeMismatchRefused(t *testing.T) {
	s := runServer(t, 0, 0)
	busA, busB := openBus(t, "a"), openBus(t, "b")
	newBridge(t, busA, clientURL(s), WithExport("prices.>"))
	brB := newBridge(t, busB, clientURL(s), WithImport("prices.>"))
	ctx := ctxT(t)

	other, err := bus.NewTypedPublisher(busB, "prices.eur", codec.NewMsgpack[string]())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	pub, err := bus.NewTypedPublisher(busA, "prices.eur", codec.NewStruct[order]())
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := range n {
		if err := pub.Publish(ctx, &order{ID: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "B to refuse A's messages", func() bool { return brB.Stats().Mismatched == n })
	if st := brB.Stats(); st.Imported != 0 {
		t.Fatalf("B imported messages of another type: %+v", st)
	}
}

func TestOptionsValidated(t *testing.T) {
	b := openBus(t, "v")
	for _, opts := range [][]Option{
		nil,
		{WithExport("a..b")},
		{WithImport("x"), WithQueueDepth(-1)},
		{WithImport("x"), WithLogger(nil)},
	} {
		if _, err := New(b, "nats://127.0.0.1:1", opts...); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("New(%d options): %v, want ErrInvalidOption", len(opts), err)
		}
	}
}

// TestCountsWhatItCannotForward: with NATS gone and nats.go told not to buffer, local
// publishers go on unhindered and the bridge counts every message it could not forward.
func TestCountsWhatItCannotForward(t *testing.T) {
	s := runServer(t, 0, 0)
	b := openBus(t, "a")
	br := newBridge(t, b, clientURL(s), WithExport("logs.>"), WithQueueDepth(16),
		WithNATSOptions(nats.ReconnectBufSize(-1), nats.ReconnectWait(time.Hour)))
	ctx := ctxT(t)
	s.Shutdown()
	s.WaitForShutdown()
	waitFor(t, "the disconnect", func() bool { return br.Stats().Disconnects > 0 })
	pub, err := b.Publisher("logs.app")
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000 // far more than the bridge's queue holds
	for i := range n {
		if err := pub.Publish(ctx, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every message counted", func() bool { return br.Stats().Dropped == n })
	if st := br.Stats(); st.Forwarded != 0 || st.Connected {
		t.Fatalf("%+v", st)
	}
}

// TestOriginTimeAcrossHosts: a message's Time on the importing bus is its publish time on the
// origin bus (carried in Offq-Time), not the moment the importer re-published it.
func TestOriginTimeAcrossHosts(t *testing.T) {
	s1, s2 := cluster(t)
	busA, busB := openBus(t, "a"), openBus(t, "b")
	newBridge(t, busA, clientURL(s1), WithID("A"), WithExport("clock.>"))
	newBridge(t, busB, clientURL(s2), WithID("B"), WithImport("clock.>"))
	interest(t, s1, "clock.tick")
	ctx := ctxT(t)

	subA, err := busA.Subscribe("clock.>")
	if err != nil {
		t.Fatal(err)
	}
	defer subA.Close()
	subB, err := busB.Subscribe("clock.>")
	if err != nil {
		t.Fatal(err)
	}
	defer subB.Close()
	pubA, err := busA.Publisher("clock.tick")
	if err != nil {
		t.Fatal(err)
	}
	origin := map[string]time.Time{} // payload → its publish time on A
	seen := 0
	warmUp(t, func() {
		seen++
		payload := "tick " + strconv.Itoa(seen)
		if err := pubA.Publish(ctx, []byte(payload)); err != nil {
			t.Fatal(err)
		}
		m, err := subA.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		origin[string(m.Data())] = m.Time()
		m.Release()
	}, func(ctx context.Context) bool {
		m, err := subB.Receive(ctx)
		if err != nil {
			return false
		}
		defer m.Release()
		want, ok := origin[string(m.Data())]
		if !ok {
			t.Fatalf("B received %q, never published on A", m.Data())
		}
		got := m.Time()
		if d := got.Sub(want); d < -time.Microsecond || d > time.Microsecond {
			t.Fatalf("Time on B %v, on A %v: differ by %v, want the origin's time", got, want, d)
		}
		since := time.Since(want)
		if age := m.Age(); age < since-time.Millisecond {
			t.Fatalf("Age on B %v, less than the time since the origin's publish", age)
		}
		return true
	})
}
