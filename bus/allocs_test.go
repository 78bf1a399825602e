package bus

import (
	"context"
	"testing"
)

// The publish, receive and release paths allocate nothing.
func TestZeroAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	b := openTest(t, t.TempDir())
	ctx := context.Background()
	s1, _ := b.Subscribe("z.a")
	s2, _ := b.Subscribe("z.*")
	pub, _ := b.Publisher("z.a")
	payload := make([]byte, 100)
	roundTrip := func() {
		if err := pub.Publish(ctx, payload); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*Subscription{s1, s2} {
			m, err := s.Receive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_ = m.Data()
			_ = m.Topic()
			if err := m.Release(); err != nil {
				t.Fatal(err)
			}
		}
	}
	roundTrip() // warm the topic-name cache and the publisher's target list
	if n := testing.AllocsPerRun(1000, roundTrip); n != 0 {
		t.Fatalf("Publish+Receive+Release: %v allocations per run, want 0", n)
	}
	loanSend := func() {
		l, err := pub.Loan(64)
		if err != nil {
			t.Fatal(err)
		}
		l.Bytes()[0] = 1
		if err := pub.Send(ctx, l); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*Subscription{s1, s2} {
			m, _ := s.Receive(ctx)
			m.Release()
		}
	}
	if n := testing.AllocsPerRun(1000, loanSend); n != 0 {
		t.Fatalf("Loan+Send+Receive+Release: %v allocations per run, want 0", n)
	}
}
