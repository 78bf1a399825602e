package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offq/offq/codec"
	"github.com/offq/offq/internal/shm"
)

// respond answers every request on s with "re:" + the request, until s closes.
func respond(t *testing.T, s *Subscription) {
	t.Helper()
	if err := s.Handle(func(m Message) {
		r, err := m.ReplyLoan(len(m.Data()) + 3)
		if err != nil {
			t.Error(err)
			return
		}
		copy(r.Bytes(), "re:")
		copy(r.Bytes()[3:], m.Data())
		if err := r.Send(context.Background()); err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); s.wait() }) // before the Bus closes (cleanups run last first)
}

func TestRequestReply(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	s, err := b.Subscribe("svc.*")
	if err != nil {
		t.Fatal(err)
	}
	respond(t, s)
	pub, _ := b.Publisher("svc.echo")
	m, err := pub.Request(ctx, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data()) != "re:hello" || m.Topic() != "svc.echo" || m.IsRequest() {
		t.Fatalf("reply %q on %q (request %v)", m.Data(), m.Topic(), m.IsRequest())
	}
	m.Release()
	// Many in flight from one process, each matched to its own reply.
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				want := fmt.Sprintf("g%d-%d", g, i)
				m, err := pub.Request(ctx, []byte(want))
				if err != nil {
					t.Error(err)
					return
				}
				if got := string(m.Data()); got != "re:"+want {
					t.Errorf("reply %q to %q", got, want)
				}
				m.Release()
			}
		}()
	}
	wg.Wait()
	s.Close()
	s.wait() // the responder counts a reply after delivering it
	st := topicStat(t, b, "svc.echo")
	if st.Requests.Requests != 1+16*200 || st.Requests.Replies != st.Requests.Requests {
		t.Fatalf("counters %+v", st.Requests)
	}
}

func TestRequestNoResponders(t *testing.T) {
	b := openTest(t, t.TempDir())
	pub, _ := b.Publisher("nobody.home")
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	_, err := pub.Request(ctx, []byte("x"))
	if !errors.Is(err, ErrNoResponders) {
		t.Fatalf("err %v, want ErrNoResponders", err)
	}
	if inUse(b) != 0 {
		t.Fatalf("%d buffers in use", inUse(b))
	}
	if st := topicStat(t, b, "nobody.home"); st.Requests.NoResponders != 1 {
		t.Fatalf("counters %+v", st.Requests)
	}
}

func TestRequestTimeoutAndLateReply(t *testing.T) {
	b := openTest(t, t.TempDir())
	s, _ := b.Subscribe("slow")
	pub, _ := b.Publisher("slow")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := pub.Request(ctx, []byte("first"))
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
	// The responder answers late: the reply lands in the reply inbox and is dropped by the
	// next request, which gets its own.
	late, err := s.Receive(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := late.Respond(ctxT(t), []byte("late")); err != nil {
		t.Fatal(err)
	}
	late.Release()
	respond(t, s)
	m, err := pub.Request(ctxT(t), []byte("second"))
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data()) != "re:second" {
		t.Fatalf("reply %q", m.Data())
	}
	m.Release()
	if st := topicStat(t, b, "slow"); st.Requests.TimedOut != 1 {
		t.Fatalf("counters %+v", st.Requests)
	}
}

func TestRespondToPlainMessage(t *testing.T) {
	b := openTest(t, t.TempDir())
	s, _ := b.Subscribe("plain")
	pub, _ := b.Publisher("plain")
	// A buffer that carried a request is reused for a plain message: it must not look like one.
	respond(t, s)
	m, err := pub.Request(ctxT(t), []byte("q"))
	if err != nil {
		t.Fatal(err)
	}
	m.Release()
	s.Close()
	s2, _ := b.Subscribe("plain")
	if err := pub.Publish(ctxT(t), []byte("p")); err != nil {
		t.Fatal(err)
	}
	got, err := s2.Receive(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	if got.IsRequest() {
		t.Fatal("a plain message looks like a request")
	}
	if err := got.Respond(ctxT(t), []byte("x")); !errors.Is(err, ErrNotRequest) {
		t.Fatalf("Respond to a plain message: %v", err)
	}
}

func TestRequestCloseWakesRequester(t *testing.T) {
	b, done := requestNobodyAnswers(t)
	b.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("request ended with %v, want ErrClosed", err)
	}
}

// TestRequestCloseWakesRequesterWhoseResponderItClosed: a request whose only responder is a
// subscription of the same Bus fails with ErrClosed when the Bus closes, even if the requester
// looks at its responder after Close closed that subscription and before Close woke it. It
// reported ErrResponderDied then (and counted a death on the topic): CI's race run met that
// window once in TestRequestCloseWakesRequester. The hook holds Close in the window until the
// requester has answered.
func TestRequestCloseWakesRequesterWhoseResponderItClosed(t *testing.T) {
	b, done := requestNobodyAnswers(t)
	ctx := ctxT(t)
	var got error
	answered := false
	testHookSubsClosed = func() {
		// The requester looks at its responder every few milliseconds: it answers here.
		select {
		case got = <-done:
			answered = true
		case <-ctx.Done():
		}
	}
	t.Cleanup(func() { testHookSubsClosed = nil })
	b.Close()
	if !answered {
		got = <-done // woken by Close after the window
	}
	if !errors.Is(got, ErrClosed) {
		t.Fatalf("request ended with %v, want ErrClosed (answered in the window: %v)", got, answered)
	}
	if !answered {
		t.Fatal("the requester did not answer while its responder was closed and Close had not yet woken it")
	}
}

// requestNobodyAnswers opens a Bus with a subscription to "never", which never answers, and
// sends it a request from another goroutine: once the request is queued (the requester then
// waits), it returns the Bus and the channel on which the request's error will come.
func requestNobodyAnswers(t *testing.T) (*Bus, chan error) {
	t.Helper()
	b, err := Open("test", WithDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.Subscribe("never")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := b.Publisher("never")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := pub.Request(context.Background(), []byte("x"))
		done <- err
	}()
	ctx := ctxT(t)
	for s.Len() == 0 { // polling until the request is queued, bounded by ctx
		if ctx.Err() != nil {
			t.Fatal("the request never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	return b, done
}

// The request round trip allocates nothing: loan, send, the responder's take, reply loan and
// send, the requester's take and release.
func TestRequestZeroAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	// Both sides busy-spin, so that neither sleeps (a sleep, not on the hot path, makes a
	// closure) on a loaded machine.
	b := openTest(t, t.TempDir(), WithRequestWait(BusySpin))
	ctx := context.Background()
	s, _ := b.Subscribe("za", WithWait(BusySpin))
	pub, _ := b.Publisher("za")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := s.Receive(ctx)
			if err != nil {
				return
			}
			r, err := m.ReplyLoan(8)
			if err == nil {
				r.Send(ctx)
			}
			m.Release()
		}
	}()
	defer wg.Wait()
	defer s.Close()
	round := func() {
		l, err := pub.Loan(64)
		if err != nil {
			t.Fatal(err)
		}
		m, err := pub.RequestLoan(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		m.Release()
	}
	round()
	if n := testing.AllocsPerRun(500, round); n != 0 {
		t.Fatalf("request round trip: %v allocations per run, want 0", n)
	}
}

func topicStat(t *testing.T, b *Bus, name string) shm.TopicStats {
	t.Helper()
	for _, ts := range b.r.TopicStats() {
		if ts.Name == name {
			return ts
		}
	}
	t.Fatalf("no topic %q", name)
	return shm.TopicStats{}
}

type sqReq struct{ N int64 }
type sqResp struct{ N, Square int64 }

// TestTypedRequest: a typed request (codec.Struct, loaned in place) and a typed reply
// (codec.Msgpack, encoded into the reply's buffer).
func TestTypedRequest(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	sub, err := NewTypedSubscription(b, "math.square", codec.NewStruct[sqReq]())
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Handle(func(m TypedMessage[sqReq]) {
		v, err := m.View()
		if err != nil {
			t.Error(err)
			return
		}
		if err := Respond(ctx, m.Message, codec.NewMsgpack[sqResp](), &sqResp{N: v.N, Square: v.N * v.N}); err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close(); sub.s.wait() })
	pub, err := NewTypedPublisher(b, "math.square", codec.NewStruct[sqReq]())
	if err != nil {
		t.Fatal(err)
	}
	for n := int64(1); n <= 20; n++ {
		l, err := pub.Loan()
		if err != nil {
			t.Fatal(err)
		}
		l.Value().N = n
		m, err := pub.RequestLoan(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		var r sqResp
		if err := DecodeReply(m, codec.NewMsgpack[sqResp](), &r); err != nil {
			t.Fatal(err)
		}
		m.Release()
		if r.N != n || r.Square != n*n {
			t.Fatalf("reply %+v to %d", r, n)
		}
	}
	m, err := pub.Request(ctx, &sqReq{N: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release()
	var r sqResp
	if err := DecodeReply(m, codec.NewMsgpack[sqResp](), &r); err != nil || r.Square != 49 {
		t.Fatalf("%+v %v", r, err)
	}
}

// TestQueueGroupInProcess: three members of a group and one plain subscriber on the same
// pattern. The plain one gets every message; each message goes to exactly one member, and
// the members share them evenly. A member that closes with messages queued has them counted
// as queue-group drops, and the others take what follows.
func TestQueueGroupInProcess(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	var members []*Subscription
	for range 3 {
		s, err := b.Subscribe("work.*", WithQueueGroup("w"))
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, s)
	}
	plain, _ := b.Subscribe("work.*")
	pub, _ := b.Publisher("work.items")
	if _, err := b.Subscribe("work.*", WithQueueGroup("has space")); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("a group name with a space: %v", err)
	}
	const n = 300
	for i := range n {
		if err := pub.Publish(ctx, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if pub.FanOut() != 2 || plain.Len() != n {
		t.Fatalf("fan-out %d, plain subscriber has %d", pub.FanOut(), plain.Len())
	}
	for i, s := range members {
		if s.Len() != n/3 {
			t.Errorf("member %d has %d queued, want %d", i, s.Len(), n/3)
		}
	}
	// The first member leaves with its 100 queued: counted as group drops.
	members[0].Close()
	for i := range 30 {
		if err := pub.Publish(ctx, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := members[1].Len() + members[2].Len(); got != 2*n/3+30 {
		t.Fatalf("the remaining members have %d queued, want %d", got, 2*n/3+30)
	}
	if st := topicStat(t, b, "work.items"); st.Requests.GroupDropped != n/3 {
		t.Fatalf("group drops %d, want %d", st.Requests.GroupDropped, n/3)
	}
}

// TestRequestsWaitWithoutHeldEntries: more requests wait at once than the process may hold
// messages (Config.Held 8, 32 requests in flight): a waiting request does not occupy a held
// entry, so all of them get their replies.
func TestRequestsWaitWithoutHeldEntries(t *testing.T) {
	c := shm.DefaultConfig()
	c.Held = 8
	dir := t.TempDir()
	requester := openTest(t, dir, WithConfig(c))
	responder, err := Open("test", WithDir(dir), WithConfig(c))
	if err != nil {
		t.Fatal(err)
	}
	defer responder.Close()
	ctx := ctxT(t)
	const n = 32
	s, _ := responder.Subscribe("many", WithQueueDepth(64))
	pub, _ := requester.Publisher("many")
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := pub.Request(ctx, []byte{byte(i)})
			if err != nil {
				t.Error(err)
				return
			}
			if m.Data()[0] != byte(i) {
				t.Errorf("reply %d to %d", m.Data()[0], i)
			}
			m.Release()
		}()
	}
	// Answer only once all n are waiting, copying each request out to hold nothing.
	for s.Len() < n {
		if ctx.Err() != nil {
			t.Fatalf("%d requests queued", s.Len())
		}
		time.Sleep(time.Millisecond) // polling the queue, bounded by ctx
	}
	for range n {
		m, err := s.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		a, err := m.ReplyAddress()
		data := m.Clone()
		m.Release()
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Respond(ctx, data); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}

// TestStaleWaitRacesNewRequest: a PendingRequest waited for once is stale; Waiting on it again
// while new requests reuse its reply slot fails with ErrClosed and disturbs nothing. It used
// to read the slot's correlation id while SendRequest wrote it (the race detector flags it),
// and in the window between a new request's claim of the slot and its new id a stale Wait
// passed the check, took the new request's reply and freed the slot under it.
func TestStaleWaitRacesNewRequest(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	s, err := b.Subscribe("stale.*")
	if err != nil {
		t.Fatal(err)
	}
	respond(t, s)
	pub, _ := b.Publisher("stale.echo")
	send := func() PendingRequest {
		l, err := pub.Loan(8)
		if err != nil {
			t.Fatal(err)
		}
		pr, err := pub.SendRequest(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		return pr
	}
	stale := send()
	m, err := stale.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m.Release()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if m, err := stale.Wait(ctx); !errors.Is(err, ErrClosed) {
				if err == nil {
					m.Release()
				}
				t.Errorf("a stale Wait: %v, want ErrClosed", err)
				return
			}
		}
	}()
	for range 300 {
		m, err := send().Wait(ctx)
		if err != nil {
			t.Fatalf("a request whose slot a stale Wait raced: %v", err)
		}
		m.Release()
	}
	close(stop)
	<-done
}

// A responder that cannot send its reply answers with RespondError, and the requester fails
// at once with a *ResponderError naming the reason, printable characters only, cut to
// MaxErrorReason bytes and to the bus's largest buffer at a character boundary; the error
// reply's buffer goes back to its pool. An ordinary reply that merely contains the marker's
// text is a reply. Before, bus.Request returned an error reply as an ordinary reply, and only
// offq req knew to read it.
func TestRespondError(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Classes = []Class{{Size: 64, Count: 64}, {Size: 128, Count: 16}} // a 128-byte largest buffer
	b := openTest(t, t.TempDir(), WithConfig(cfg))
	ctx := ctxT(t)
	s, err := b.Subscribe("svc.err")
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("é", MaxErrorReason)
	if err := s.Handle(func(m Message) {
		var err error
		switch string(m.Data()) {
		case "long":
			err = m.RespondError(ctx, long)
		case "escapes":
			err = m.RespondError(ctx, "a\x1b[2Jb\nc")
		case "plain":
			err = m.Respond(ctx, []byte("offq-error, but not an error reply"))
		}
		if err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); s.wait() })
	pub, err := b.Publisher("svc.err")
	if err != nil {
		t.Fatal(err)
	}
	for q, want := range map[string]string{
		"long":    strings.Repeat("é", (128-len(ErrorReplyPrefix))/2),
		"escapes": "a?[2Jb?c",
	} {
		_, err := pub.Request(ctx, []byte(q))
		var re *ResponderError
		if !errors.As(err, &re) || re.Reason != want {
			t.Errorf("request %q: %v; want a *ResponderError with reason %q", q, err, want)
		}
	}
	m, err := pub.Request(ctx, []byte("plain"))
	if err != nil || string(m.Data()) != "offq-error, but not an error reply" {
		t.Fatalf("plain reply: %q, %v", m.Data(), err)
	}
	m.Release()
	if r := ErrorReply(long, 1<<20); len(r) != len(ErrorReplyPrefix)+MaxErrorReason {
		t.Errorf("ErrorReply of %d bytes: %d bytes; want %d", len(long), len(r), len(ErrorReplyPrefix)+MaxErrorReason)
	}
	s.Close()
	s.wait() // the handler has released every request
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use after the requests: an error reply was not released", n)
	}
}
