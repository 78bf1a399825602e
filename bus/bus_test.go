package bus

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/offq/offq/codec"
	"github.com/offq/offq/internal/shm"
)

func openTest(t *testing.T, dir string, opts ...Option) *Bus {
	t.Helper()
	b, err := Open("test", append([]Option{WithDir(dir)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func inUse(b *Bus) int {
	n := 0
	for _, c := range b.r.CountAllocated() {
		n += c
	}
	return n
}

func TestPublishSubscribeWildcard(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir)
	ctx := ctxT(t)
	exact, err := b.Subscribe("sensors.temp")
	if err != nil {
		t.Fatal(err)
	}
	star, err := b.Subscribe("sensors.*")
	if err != nil {
		t.Fatal(err)
	}
	tail, err := b.Subscribe(">")
	if err != nil {
		t.Fatal(err)
	}
	other, err := b.Subscribe("actuators.>")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := b.Publisher("sensors.temp")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := pub.Publish(ctx, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*Subscription{exact, star, tail} {
		for i := range 10 {
			m, err := s.Receive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(m.Data()), fmt.Sprintf("m%d", i); got != want || m.Topic() != "sensors.temp" || m.Seq() != uint64(i+1) {
				t.Fatalf("%s: got %q on %q seq %d, want %q seq %d", s.Pattern(), got, m.Topic(), m.Seq(), want, i+1)
			}
			if err := m.Release(); err != nil {
				t.Fatal(err)
			}
			if err := m.Release(); !errors.Is(err, ErrReleased) {
				t.Fatalf("second release: %v", err)
			}
		}
	}
	if other.Len() != 0 {
		t.Fatalf("non-matching subscription got %d messages", other.Len())
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use after every release", n)
	}
}

func TestHistoryLateJoiner(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir)
	ctx := ctxT(t)
	pub, err := b.Publisher("state.x", WithHistory(3))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		pub.Publish(ctx, fmt.Appendf(nil, "v%d", i))
	}
	s, err := b.Subscribe("state.*")
	if err != nil {
		t.Fatal(err)
	}
	pub.Publish(ctx, []byte("v5"))
	var got []string
	for range 4 {
		m, err := s.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(m.Data()))
		m.Release()
	}
	if fmt.Sprint(got) != "[v2 v3 v4 v5]" {
		t.Fatalf("late joiner got %v", got)
	}
	if s.Len() != 0 {
		t.Fatalf("%d extra messages queued", s.Len())
	}
}

func TestSlowSubscriberDropOldest(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir)
	ctx := ctxT(t)
	s, _ := b.Subscribe("x", WithQueueDepth(4))
	pub, _ := b.Publisher("x")
	for i := range 100 {
		if err := pub.Publish(ctx, fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	st := b.r.InboxStats()
	if len(st) != 1 || st[0].DropOldest != 96 || st[0].Depth != 4 {
		t.Fatalf("stats %+v", st)
	}
	for i := 96; i < 100; i++ {
		m, _ := s.Receive(ctx)
		if string(m.Data()) != fmt.Sprint(i) {
			t.Fatalf("got %q want %d", m.Data(), i)
		}
		m.Release()
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use", n)
	}
}

func TestHandleAndClose(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("h", WithDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	hs, err := b.Subscribe("a.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := hs.Handle(func(m Message) { got <- string(m.Data()) }); err != nil {
		t.Fatal(err)
	}
	if err := hs.Handle(func(Message) {}); err == nil {
		t.Fatal("a second Handle on one subscription succeeded")
	}
	pub, _ := b.Publisher("a.b.c")
	pub.Publish(context.Background(), []byte("hi"))
	select {
	case s := <-got:
		if s != "hi" {
			t.Fatal(s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler not called")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(context.Background(), []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
	r, err := shm.Open("h", shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, n := range r.CountAllocated() {
		if n != 0 {
			t.Fatalf("buffers left allocated after Close: %v", r.CountAllocated())
		}
	}
	if len(r.InboxStats()) != 0 || len(r.Participants()) != 0 {
		t.Fatalf("inboxes %v participants %v after Close", r.InboxStats(), r.Participants())
	}
}

func TestCloseEndsLoansAndHeldMessages(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("loans", WithDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	sub, _ := b.Subscribe("l")
	pub, _ := b.Publisher("l")
	if _, err := pub.Loan(100); err != nil { // never sent
		t.Fatal(err)
	}
	pub.Publish(ctx, []byte("kept"))
	pub.Publish(ctx, []byte("queued"))
	m, err := sub.Receive(ctx) // held, never released
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(); !errors.Is(err, ErrReleased) {
		t.Fatalf("release after Close: %v", err)
	}
	r, err := shm.Open("loans", shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, n := range r.CountAllocated() {
		if n != 0 {
			t.Fatalf("allocated after Close: %v", r.CountAllocated())
		}
	}
}

func TestZeroMessage(t *testing.T) {
	var m Message
	if m.Data() != nil || m.Topic() != "" || m.Seq() != 0 || !m.Time().IsZero() || m.Age() != 0 {
		t.Fatal("zero Message not empty")
	}
	if err := m.Release(); !errors.Is(err, ErrReleased) {
		t.Fatalf("Release of zero Message: %v", err)
	}
}

// Messages ends quietly when its ctx is cancelled, as a range loop over a closed channel
// would: the loop needs no error case for its own cancellation.
func TestMessagesEndsQuietlyOnCancel(t *testing.T) {
	b, err := Open("msgcancel", WithDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sub, err := b.Subscribe("q")
	if err != nil {
		t.Fatal(err)
	}
	tsub, err := NewTypedSubscription(b, "tq", codec.Raw{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, err := range sub.Messages(ctx) {
		t.Fatalf("Messages yielded %v after cancel", err)
	}
	for _, err := range tsub.Messages(ctx) {
		t.Fatalf("typed Messages yielded %v after cancel", err)
	}
	dl, cancel2 := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel2()
	for _, err := range sub.Messages(dl) {
		t.Fatalf("Messages yielded %v after the deadline", err)
	}
}
