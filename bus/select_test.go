package bus

import (
	"context"
	"errors"
	"runtime"
	"testing"
)

// Select returns the next message from any of several subscriptions and says which; it
// sleeps until one of them has a message, returns ctx's error when ctx ends and ErrClosed
// when one of them is closed, and refuses subscriptions of different buses. With messages
// queued it allocates nothing.
func TestSelect(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir)
	ctx := ctxT(t)
	names := []string{"sel.a", "sel.b", "sel.c"}
	subs := make([]*Subscription, len(names))
	pubs := make([]*Publisher, len(names))
	for i, n := range names {
		var err error
		if subs[i], err = b.Subscribe(n, WithWait(Sleep)); err != nil {
			t.Fatal(err)
		}
		if pubs[i], err = b.Publisher(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := pubs[1].Publish(ctx, []byte("b")); err != nil {
		t.Fatal(err)
	}
	m, err := Select(ctx, subs...)
	if err != nil || m.Subscription() != subs[1] || string(m.Data()) != "b" || m.Topic() != "sel.b" {
		t.Fatalf("Select = %q on %q from %v, %v; want \"b\" from the second subscription", m.Data(), m.Topic(), m.Subscription(), err)
	}
	m.Release()

	// Asleep in Select, woken by a message on any of them.
	for round := range 30 {
		k := round % len(subs)
		done := make(chan error, 1)
		go func() {
			for _, s := range subs {
				for {
					st, err := s.Stats()
					if err != nil {
						done <- err
						return
					}
					if st.Sleeping {
						break
					}
					runtime.Gosched()
				}
			}
			done <- pubs[k].Publish(ctx, []byte(names[k]))
		}()
		m, err := Select(ctx, subs...)
		if err != nil || m.Subscription() != subs[k] || string(m.Data()) != names[k] {
			t.Fatalf("round %d: Select = %q from %v, %v; want %q", round, m.Data(), m.Subscription(), err, names[k])
		}
		m.Release()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}

	// No allocation while messages are queued; every subscription served in turn.
	var from [3]int
	sel := func() {
		for _, p := range pubs {
			p.Publish(ctx, []byte("x"))
		}
		for range pubs {
			m, err := Select(ctx, subs...)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range subs {
				if m.Subscription() == s {
					from[i]++
				}
			}
			m.Release()
		}
	}
	sel()
	if n := testing.AllocsPerRun(200, sel); n != 0 && !raceEnabled {
		t.Errorf("3 x (Publish, Select, Release): %v allocations per run, want 0", n)
	}
	if from[0] != from[1] || from[1] != from[2] || from[0] != 202 { // sel, then AllocsPerRun: once to warm up and 200 times
		t.Errorf("messages taken per subscription %v, want 202 each", from)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Select(cctx, subs...); !errors.Is(err, context.Canceled) {
		t.Errorf("Select with ctx cancelled: %v, want context.Canceled", err)
	}
	if _, err := Select(ctx); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("Select of nothing: %v, want ErrInvalidOption", err)
	}
	other := openTest(t, dir, WithName("other"))
	os, err := other.Subscribe("sel.a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Select(ctx, subs[0], os); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("Select across two buses: %v, want ErrInvalidOption", err)
	}
	subs[2].Close()
	if _, err := Select(ctx, subs...); !errors.Is(err, ErrClosed) {
		t.Errorf("Select with a closed subscription: %v, want ErrClosed", err)
	}
	for _, p := range pubs {
		p.Close()
	}
	for _, s := range subs {
		s.Close()
	}
	os.Close()
	if n := inUse(b); n != 0 {
		t.Errorf("%d buffers in use at the end", n)
	}
}
