package shm

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

var strategies = []Waiter{
	{Strategy: BusySpin},
	{Strategy: SpinThenSleep, Spin: 10 * time.Microsecond},
	{Strategy: SpinThenSleep}, // DefaultSpin
	{Strategy: Sleep},
}

func (w Waiter) name() string {
	if w.Strategy == SpinThenSleep && w.Spin == 0 {
		return "spin-then-sleep-default"
	}
	return w.Strategy.String()
}

// untilTrue polls cond (yielding, not sleeping) until it holds; it fails the test after d.
func untilTrue(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, d)
		}
		runtime.Gosched()
	}
}

// asleep waits until a consumer has announced itself asleep on in (for the strategies that
// sleep), so that what follows exercises the wake-up and not the spin.
func asleep(t *testing.T, in *Inbox, w Waiter) {
	t.Helper()
	if w.Strategy == BusySpin {
		return
	}
	untilTrue(t, 10*time.Second, "consumer asleep", func() bool { return waiters(in.v.hdr.sleepers.Load()) != 0 })
}

type popResult struct {
	h   Handle
	err error
	at  time.Time
}

func popAsync(ctx context.Context, in *Inbox, w Waiter) <-chan popResult {
	ch := make(chan popResult, 1)
	go func() {
		h, err := in.pop(ctx, w)
		ch <- popResult{h, err, time.Now()}
	}()
	return ch
}

func awaitPop(t *testing.T, r *Region, ch <-chan popResult, what string) popResult {
	t.Helper()
	select {
	case res := <-ch:
		return res
	case <-time.After(20 * time.Second):
		pinRegion(r)
		t.Fatalf("%s: Pop did not return", what)
	}
	panic("unreachable")
}

func TestPopWakesOnPush(t *testing.T) {
	for _, w := range strategies {
		t.Run(w.name(), func(t *testing.T) {
			r := newUnitRegion(t, inboxConfig())
			p := attachUnit(t, r, "p")
			in, err := p.OpenInbox(InboxConfig{Capacity: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer in.close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for round := range 3 {
				ch := popAsync(ctx, &in, w)
				asleep(t, &in, w)
				if w.Strategy != BusySpin {
					if s, _ := statsOf(r, in.ID()); !s.Sleeping {
						t.Errorf("InboxStats.Sleeping is false while the consumer sleeps")
					}
				}
				if _, err := send(context.Background(), r, p, &in, 0, uint64(round)); err != nil {
					t.Fatal(err)
				}
				res := awaitPop(t, r, ch, "after a push")
				if res.err != nil {
					t.Fatalf("Pop: %v", res.err)
				}
				if m, err := receive(r, res.h); err != nil || m.Seq != uint64(round) {
					t.Fatalf("Pop got %+v, %v", m, err)
				}
			}
			if waiters(in.v.hdr.sleepers.Load()) != 0 {
				t.Fatalf("sleepers = %#x after the consumer left", in.v.hdr.sleepers.Load())
			}
		})
	}
}

func TestPopReturnsOnCancel(t *testing.T) {
	for _, w := range strategies {
		t.Run(w.name(), func(t *testing.T) {
			r := newUnitRegion(t, inboxConfig())
			p := attachUnit(t, r, "p")
			in, err := p.OpenInbox(InboxConfig{Capacity: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer in.close()
			ctx, cancel := context.WithCancel(context.Background())
			ch := popAsync(ctx, &in, w)
			asleep(t, &in, w)
			cancelled := time.Now()
			cancel()
			res := awaitPop(t, r, ch, "after cancel")
			if !errors.Is(res.err, context.Canceled) || res.h != 0 {
				t.Fatalf("Pop after cancel = %v, %v; want context.Canceled", res.h, res.err)
			}
			// Promptly: well within the one-second bound on a single futex sleep.
			if d := res.at.Sub(cancelled); d > 900*time.Millisecond {
				t.Fatalf("Pop took %v to notice the cancellation", d)
			}
			// Already cancelled: Pop returns at once, even with nothing to take.
			if _, err := in.pop(ctx, w); !errors.Is(err, context.Canceled) {
				t.Fatalf("Pop with a cancelled context: %v", err)
			}
			// But a waiting message is delivered even so.
			if _, err := send(context.Background(), r, p, &in, 0, 1); err != nil {
				t.Fatal(err)
			}
			h, err := in.pop(ctx, w)
			if err != nil {
				t.Fatalf("Pop of a waiting message with a cancelled context: %v", err)
			}
			receive(r, h)
		})
	}
}

func TestPopReturnsAtDeadline(t *testing.T) {
	for _, w := range strategies {
		t.Run(w.name(), func(t *testing.T) {
			r := newUnitRegion(t, inboxConfig())
			p := attachUnit(t, r, "p")
			in, err := p.OpenInbox(InboxConfig{Capacity: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer in.close()
			const d = 30 * time.Millisecond
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			res := awaitPop(t, r, popAsync(ctx, &in, w), "at the deadline")
			if !errors.Is(res.err, context.DeadlineExceeded) {
				t.Fatalf("Pop = %v, want context.DeadlineExceeded", res.err)
			}
			if el := res.at.Sub(start); el < d || el > d+900*time.Millisecond {
				t.Fatalf("Pop returned after %v, deadline %v", el, d)
			}
		})
	}
}

func TestPopReturnsWhenInboxCloses(t *testing.T) {
	for _, w := range strategies {
		t.Run(w.name(), func(t *testing.T) {
			r := newUnitRegion(t, inboxConfig())
			p := attachUnit(t, r, "p")
			in, err := p.OpenInbox(InboxConfig{Capacity: 4})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ch := popAsync(ctx, &in, w)
			asleep(t, &in, w)
			closer := in // another goroutine's copy of the Inbox, as its owner would have
			if err := closer.close(); err != nil {
				t.Fatal(err)
			}
			if res := awaitPop(t, r, ch, "after Close"); !errors.Is(res.err, ErrClosed) {
				t.Fatalf("Pop on a closed inbox = %v, want ErrClosed", res.err)
			}
		})
	}
}

func TestWaitDoesNotTake(t *testing.T) {
	for _, w := range strategies {
		t.Run(w.name(), func(t *testing.T) {
			r := newUnitRegion(t, inboxConfig())
			p := attachUnit(t, r, "p")
			in, err := p.OpenInbox(InboxConfig{Capacity: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer in.close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- in.awaitMessage(ctx, w) }()
			asleep(t, &in, w)
			if _, err := send(context.Background(), r, p, &in, 0, 1); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Wait: %v", err)
				}
			case <-time.After(20 * time.Second):
				pinRegion(r)
				t.Fatal("Wait did not return after a push")
			}
			if in.Len() != 1 {
				t.Fatalf("Len after Wait = %d, want 1: Wait must not take", in.Len())
			}
			if err := in.awaitMessage(ctx, w); err != nil {
				t.Fatalf("Wait with a message waiting: %v", err)
			}
			h, ok, err := in.tryPop()
			if err != nil || !ok {
				t.Fatal(ok, err)
			}
			receive(r, h)
		})
	}
}

// TestBlockProducerWokenByPop: a producer blocked on a full Block inbox sleeps until the
// consumer makes room.
func TestBlockProducerWokenByPop(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	in, err := p.OpenInbox(InboxConfig{Capacity: 2, Overflow: Block})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	bg := context.Background()
	sendN(t, r, p, &in, 2)
	ctx, cancel := context.WithTimeout(bg, 20*time.Second)
	defer cancel()
	for round := range 3 {
		done := make(chan error, 1)
		go func() { _, err := send(ctx, r, p, &in, 0, uint64(2+round)); done <- err }()
		untilTrue(t, 10*time.Second, "producer waiting for room", func() bool { return waiters(in.v.hdr.spaceWaiters.Load()) != 0 })
		h, err := in.pop(ctx, Waiter{Strategy: Sleep})
		if err != nil {
			t.Fatal(err)
		}
		if m, err := receive(r, h); err != nil || m.Seq != uint64(round) {
			t.Fatalf("popped %+v, %v; want seq %d", m, err, round)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("blocked push: %v", err)
			}
		case <-time.After(20 * time.Second):
			pinRegion(r)
			t.Fatal("the blocked producer was not woken by the Pop")
		}
		if in.Len() != 2 {
			t.Fatalf("Len = %d after the blocked push, want 2", in.Len())
		}
	}
	if waiters(in.v.hdr.spaceWaiters.Load()) != 0 {
		t.Fatalf("spaceWaiters = %#x", in.v.hdr.spaceWaiters.Load())
	}
	s, _ := statsOf(r, in.ID())
	if s.DropTimeout != 0 || s.Pushed != 5 || s.Popped != 3 {
		t.Fatalf("stats %+v", s)
	}
}

// TestBlockProducerWokenByClose: a producer blocked on a full inbox returns when the inbox
// closes, with ErrClosed, and keeps its reference.
func TestBlockProducerWokenByClose(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	in, err := p.OpenInbox(InboxConfig{Capacity: 2, Overflow: Block})
	if err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	sendN(t, r, p, &in, 2)
	ctx, cancel := context.WithTimeout(bg, 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := send(ctx, r, p, &in, 0, 2); done <- err }()
	untilTrue(t, 10*time.Second, "producer waiting for room", func() bool { return waiters(in.v.hdr.spaceWaiters.Load()) != 0 })
	if err := in.close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("blocked push after Close: %v, want ErrClosed", err)
		}
	case <-time.After(20 * time.Second):
		pinRegion(r)
		t.Fatal("the blocked producer was not woken by Close")
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("%d buffers allocated", n)
	}
}

// TestNoLostWakeups: two goroutines play ping-pong through two inboxes with the Sleep
// strategy, so every message needs a wake-up. A lost wake-up stalls the game until the
// context's deadline.
func TestNoLostWakeups(t *testing.T) {
	rounds := 10000
	if testing.Short() {
		rounds = 1000
	}
	r := newUnitRegion(t, inboxConfig())
	a := attachUnit(t, r, "a")
	b := attachUnit(t, r, "b")
	inA, err := a.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	defer inA.close()
	inB, err := b.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	defer inB.close()
	toA, _ := r.inbox(inA.ID())
	toB, _ := r.inbox(inB.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sleep := Waiter{Strategy: Sleep}

	echo := make(chan error, 1)
	go func() { // b: returns every ball it receives
		for range rounds {
			h, err := inB.pop(ctx, sleep)
			if err != nil {
				echo <- err
				return
			}
			if err := toA.pushHandle(ctx, h); err != nil { // hands its reference on
				echo <- err
				return
			}
		}
		echo <- nil
	}()
	start := time.Now()
	for i := range rounds {
		if _, err := send(ctx, r, a, &toB, 0, uint64(i)); err != nil {
			cancel()
			<-echo
			t.Fatalf("round %d: serve: %v", i, err)
		}
		h, err := inA.pop(ctx, sleep)
		if err != nil {
			cancel()
			<-echo
			t.Fatalf("round %d: no return after %v (a lost wake-up?): %v", i, time.Since(start), err)
		}
		m, err := receive(r, h)
		if err != nil || m.Seq != uint64(i) {
			t.Fatalf("round %d: got %+v, %v", i, m, err)
		}
	}
	if err := <-echo; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d round trips with the Sleep strategy in %v (%v each)", rounds, time.Since(start), time.Since(start)/time.Duration(rounds))
	if n := allocated(r); n != 0 {
		t.Fatalf("%d buffers allocated at the end", n)
	}
}

// A SpinThenSleep wait that spins longer than spinAlone offers the CPU to other processes
// (osYield) on the way: a subscriber among several on one core held it for its whole spin
// while the others had messages (docs/performance.md, "Issue 15, seventh round"). BusySpin
// and Sleep never do: the one keeps its core by design, the other does not spin. The same
// holds for a wait on several inboxes (TakeAny) and a requester's wait for its reply.
func TestSpinOffersTheCPU(t *testing.T) {
	var yields atomic.Int64
	testHookOSYield = func() { yields.Add(1) }
	defer func() { testHookOSYield = nil }()
	_, me, _ := newTestRegion(t, "spin-yields")
	in, err := me.OpenInbox(InboxConfig{Capacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	reply, err := me.OpenReplyInbox(4)
	if err != nil {
		t.Fatal(err)
	}
	defer reply.close()
	for _, c := range []struct {
		w     Waiter
		yield bool
	}{
		{Waiter{Strategy: SpinThenSleep, Spin: 2 * time.Millisecond}, true},
		{Waiter{Strategy: BusySpin}, false},
		{Waiter{Strategy: Sleep}, false},
	} {
		for _, what := range []string{"wait", "wait-any", "await-reply"} {
			yields.Store(0)
			// Nothing arrives: the wait spins (for SpinThenSleep, 2 ms), then sleeps until
			// the context ends it.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			switch what {
			case "wait":
				err = in.wait(ctx, c.w)
			case "wait-any":
				err = waitAny(ctx, []*Inbox{&in}, c.w)
			default:
				_, err = me.AwaitReply(ctx, &reply, c.w, 1, nil, time.Second)
			}
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%s %s: %v, want the context's deadline", c.w.name(), what, err)
			}
			if n := yields.Load(); (n > 0) != c.yield {
				t.Errorf("%s %s: %d yields of the CPU; want yields: %v", c.w.name(), what, n, c.yield)
			}
		}
	}
}
