package bus

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/offq/offq/internal/shm"
)

// TestPublisherCloseDoesNotWaitForBlockedLoanSend is TestPublisherCloseDoesNotWaitForBlockedSend
// for a Loan and Send (a Send holds the publisher's send lock, not its gate): Close returns
// while the Send is blocked on a full Block subscription, the topic stays pinned until the
// Send has returned and is let go then, and a Send after Close fails with ErrClosed.
func TestPublisherCloseDoesNotWaitForBlockedLoanSend(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	sub, err := b.Subscribe("close.loan", WithQueueDepth(2), WithOverflow(Block))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	pub, err := b.Publisher("close.loan")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := pub.Publish(ctx, []byte("fill")); err != nil {
			t.Fatal(err)
		}
	}
	blocked, err := pub.Loan(8)
	if err != nil {
		t.Fatal(err)
	}
	late, err := pub.Loan(8) // sent after Close
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() { sent <- pub.Send(context.Background(), blocked) }()
	for blockedOn(b, sub) == 0 {
		if ctx.Err() != nil {
			t.Fatal("the Send never blocked on the full subscription")
		}
		time.Sleep(100 * time.Microsecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- pub.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Publisher.Close waited for a Send blocked on a full subscription")
	}
	if n := publishersOf(b, "close.loan"); n != 1 {
		t.Fatalf("%d publishers pin the topic while the Send is under way, want 1", n)
	}
	m, err := sub.Receive(ctx) // room: the Send goes on
	if err != nil {
		t.Fatal(err)
	}
	m.Release()
	if err := <-sent; err != nil {
		t.Fatalf("the Send that took the lock before Close: %v", err)
	}
	if n := publishersOf(b, "close.loan"); n != 0 {
		t.Fatalf("%d publishers pin the topic after the last Send returned, want 0", n)
	}
	if err := pub.Send(ctx, late); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v, want ErrClosed", err)
	}
	var inUse int64
	for _, ps := range b.r.PoolStats() {
		inUse += ps.InUse
	}
	if inUse != 2 { // the two messages still queued
		t.Fatalf("%d buffers in use after the late Send, want 2 (its loan given back)", inUse)
	}
	if got := pub.gate.inflight.Load(); got != gateShut {
		t.Fatalf("gate count %#x after every call returned, want %#x (shut, none under way)", got, int64(gateShut))
	}
}

// TestPublisherCloseUnderConcurrentSends: sends from several goroutines race Publisher.Close.
// Each send succeeds or fails with ErrClosed, no loan is left behind, the gate's reference
// for the send lock is given back exactly once, and the topic is let go.
func TestPublisherCloseUnderConcurrentSends(t *testing.T) {
	for round := range 20 {
		b := openTest(t, t.TempDir())
		ctx := ctxT(t)
		sub, err := b.Subscribe("close.race", WithQueueDepth(1024))
		if err != nil {
			t.Fatal(err)
		}
		pub, err := b.Publisher("close.race")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := range 4 {
			wg.Go(func() {
				<-start
				for i := range 50 {
					var err error
					switch (g + i) % 3 {
					case 0:
						err = pub.Publish(ctx, []byte("x"))
					case 1:
						var l Loan
						if l, err = pub.Loan(8); err == nil {
							err = pub.Send(ctx, l)
						}
					default:
						var ls [4]Loan
						var got []Loan
						if got, err = pub.LoanBatch(ls[:], 8); err == nil {
							err = pub.SendBatch(ctx, got)
						}
					}
					if err != nil && !errors.Is(err, ErrClosed) {
						t.Errorf("round %d: send: %v", round, err)
						return
					}
				}
			})
		}
		close(start)
		if err := pub.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if n := publishersOf(b, "close.race"); n != 0 {
			t.Fatalf("round %d: %d publishers pin the topic after every send returned, want 0", round, n)
		}
		if got := pub.gate.inflight.Load(); got != gateShut {
			t.Fatalf("round %d: gate count %#x, want %#x", round, got, int64(gateShut))
		}
		if pub.lockOwed.Load() {
			t.Fatalf("round %d: the send lock's reference was never given back", round)
		}
		for sub.Len() > 0 {
			m, err := sub.Receive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m.Release()
		}
		var inUse int64
		for _, ps := range b.r.PoolStats() {
			inUse += ps.InUse
		}
		if inUse != 0 {
			t.Fatalf("round %d: %d buffers in use after everything was received and released: loans left behind", round, inUse)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBusCloseWaitsForSend: Bus.Close does not unmap the region while a Send is under way (a
// Send holds the publisher's send lock, not its gate): with the Send stopped in the middle of
// its fan-out, Close does not return; once the Send goes on, both return.
func TestBusCloseWaitsForSend(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	for range 2 {
		if _, err := b.Subscribe("close.bus"); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := b.Publisher("close.bus")
	if err != nil {
		t.Fatal(err)
	}
	l, err := pub.Loan(8)
	if err != nil {
		t.Fatal(err)
	}
	stopped, goOn := holdSecondTarget(t)
	sent := make(chan error, 1)
	go func() { sent <- pub.Send(ctx, l) }()
	<-stopped
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	for !b.closed.Load() {
		time.Sleep(100 * time.Microsecond)
	}
	select {
	case <-closed:
		t.Fatal("Bus.Close returned while a Send was under way")
	case <-time.After(100 * time.Millisecond): // a Close that does not wait returns in microseconds
	}
	close(goOn)
	if err := <-sent; err != nil {
		t.Fatalf("the Send under way at Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	// A Send after Close fails without touching the region.
	if err := pub.Send(ctx, Loan{p: pub}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Bus.Close: %v, want ErrClosed", err)
	}
}

// TestSendErrorsAfterBusClose: the sends fail as they did when they entered the gate: with
// ErrClosed, also for a batch that holds a loan of another publisher, and Publish's error
// names the loan.
func TestSendErrorsAfterBusClose(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	pub, _ := b.Publisher("closed.errs")
	other, _ := b.Publisher("closed.other")
	l, _ := pub.Loan(8)
	ol, _ := other.Loan(8)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Send(ctx, l); !errors.Is(err, ErrClosed) || errors.Is(err, ErrLoanEnded) {
		t.Fatalf("Send: %v, want ErrClosed", err)
	}
	if err := pub.SendBatch(ctx, []Loan{l, ol}); !errors.Is(err, ErrClosed) || errors.Is(err, ErrLoanEnded) {
		t.Fatalf("SendBatch with a foreign loan: %v, want ErrClosed", err)
	}
	var e *Error
	if err := pub.Publish(ctx, []byte("x")); !errors.As(err, &e) || e.Op != "publish" || !errors.As(e.Err, &e) || e.Op != "loan" || !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish: %v, want publish: loan: ErrClosed", err)
	}
}

// TestBusCloseWaitsForSendOfClosedPublisher: Bus.Close waits for a Send under way also when
// its Publisher was closed meanwhile (Publisher.Close does not wait for it, and the publisher
// used to leave the Bus's list at once, so Bus.Close did not wait either).
func TestBusCloseWaitsForSendOfClosedPublisher(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	for range 2 {
		if _, err := b.Subscribe("close.pub"); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := b.Publisher("close.pub")
	if err != nil {
		t.Fatal(err)
	}
	stopped, goOn := holdSecondTarget(t)
	sent := make(chan error, 1)
	go func() { sent <- pub.Publish(ctx, []byte("x")) }()
	<-stopped
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	for !b.closed.Load() {
		time.Sleep(100 * time.Microsecond)
	}
	select {
	case <-closed:
		t.Fatal("Bus.Close returned while a Send of a closed publisher was under way")
	case <-time.After(100 * time.Millisecond):
	}
	close(goOn)
	if err := <-sent; err != nil {
		t.Fatalf("the Send under way at Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

// holdSecondTarget makes the next send stop before its second target: stopped is closed when
// it gets there, and it goes on when the test closes goOn.
func holdSecondTarget(t *testing.T) (stopped, goOn chan struct{}) {
	stopped, goOn = make(chan struct{}), make(chan struct{})
	shm.SetTestHookFanOut(func(i int) {
		if i == 1 {
			close(stopped)
			<-goOn
		}
	})
	t.Cleanup(func() { shm.SetTestHookFanOut(nil) })
	return stopped, goOn
}
