package bus

import (
	"errors"
	"testing"
)

// A call under way in the use gate when Close begins (a Release; the unpin of a Publisher
// closing at the same time; a Receive; a Loan; a Publish) finishes on the mapped region, and Close waits for it
// before it detaches: it neither unmaps under the call nor, for a release, releases the
// message a second time (Detach would, if the release had not finished).
func TestCloseWaitsForCallsUnderWay(t *testing.T) {
	for _, op := range []string{"release", "unpin", "receive", "loan", "publish"} {
		t.Run(op, func(t *testing.T) {
			dir := t.TempDir()
			b := openTest(t, dir)
			ctx := ctxT(t)
			sub, err := b.Subscribe("gate.under-way")
			if err != nil {
				t.Fatal(err)
			}
			pub, err := b.Publisher("gate.under-way")
			if err != nil {
				t.Fatal(err)
			}
			if err := pub.Publish(ctx, []byte("held while the bus closes")); err != nil {
				t.Fatal(err)
			}
			var m Message
			if op == "release" || op == "unpin" {
				if m, err = sub.Receive(ctx); err != nil {
					t.Fatal(err)
				}
			}
			entered, proceed, waiting := make(chan struct{}), make(chan struct{}), make(chan struct{})
			testHookInUse = func(at string) {
				if at == op {
					close(entered)
					<-proceed
				}
			}
			testHookCloseWaits = func() { close(waiting) }
			t.Cleanup(func() { testHookInUse, testHookCloseWaits = nil, nil })

			done := make(chan error, 1)
			go func() {
				switch op {
				case "release":
					done <- m.Release()
				case "unpin":
					done <- pub.Close()
				case "loan":
					// The loan is made on the mapped region; Close then ends it with the
					// others of the process, so Discard finds it gone.
					l, err := pub.Loan(8)
					if err == nil && !errors.Is(l.Discard(), ErrClosed) {
						err = errors.New("the loan outlived Close")
					}
					done <- err
				case "publish":
					// Its loan is made on the mapped region and given back when the send
					// finds the Bus closed: ErrClosed, and no buffer left on loan.
					err := pub.Publish(ctx, []byte("during the close"))
					if errors.Is(err, ErrClosed) {
						err = nil
					}
					done <- err
				default:
					// Close closes the subscription while the Receive waits in the gate: it
					// takes the message or finds the queue closed, on the mapped region.
					m, err := sub.Receive(ctx)
					if err == nil {
						err = m.Release() // refused if Close has begun; Detach releases it
					}
					if errors.Is(err, ErrClosed) {
						done <- nil
					} else {
						done <- err
					}
				}
			}()
			select { // the call is inside the gate, before it touches the region
			case <-entered:
			case <-ctx.Done():
				t.Fatalf("the %s never reached the use gate", op)
			}
			closed := make(chan error, 1)
			go func() { closed <- b.Close() }()
			select {
			case err := <-closed:
				close(proceed)
				t.Fatalf("Close returned (%v) while a %s was under way", err, op)
			case <-waiting:
			}
			close(proceed)
			if err := <-done; err != nil {
				t.Fatalf("the %s under way when Close began: %v, want nil (Close detached under it)", op, err)
			}
			if err := <-closed; err != nil {
				t.Fatal(err)
			}
			testHookInUse, testHookCloseWaits = nil, nil
			// Nothing is in use for a process that attaches now: the release counted once.
			b2, err := Open("test", WithDir(dir))
			if err != nil {
				t.Fatal(err)
			}
			defer b2.Close()
			if n := inUse(b2); n != 0 {
				t.Fatalf("%d buffers in use after the %s and the close, want 0", n, op)
			}
		})
	}
}

// After Close (which unmaps the region when nothing is held), every method of a message,
// subscription, publisher or reply loan of the Bus fails with ErrClosed or answers from the
// process's own memory: none reads or writes where the region was. Before the use gate,
// Subscription.Len read the unmapped queue and the process died of SIGSEGV, and the others
// read or wrote whatever was mapped at that address by then.
func TestCallsAfterCloseTouchNothing(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir)
	ctx := ctxT(t)
	sub, err := b.Subscribe("gate.after")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := b.Publisher("gate.after")
	if err != nil {
		t.Fatal(err)
	}
	var ms []Message
	for range 2 {
		if err := pub.Publish(ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Topic() != "gate.after" {
			t.Fatalf("topic %q", m.Topic())
		}
		ms = append(ms, m)
	}
	if err := ReleaseBatch(ms); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	closedErr := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", what, err)
		}
	}
	m := ms[0]
	for what, err := range map[string]error{"Message.Release": m.Release(), "ReleaseBatch": ReleaseBatch(ms)} {
		closedErr(what, err)
		if !errors.Is(err, ErrReleased) {
			t.Errorf("%s after Close: %v, want ErrReleased too (Close released it)", what, err)
		}
	}
	closedErr("Message.Read", m.Read(func([]byte) error { return nil }))
	if got := m.Topic(); got != "gate.after" {
		t.Errorf("Message.Topic after Close: %q, want the name cached before", got)
	}
	if got := m.TypeName(); got != "" {
		t.Errorf("Message.TypeName after Close: %q", got)
	}
	if c, fp := m.Codec(); c != "" || fp != 0 {
		t.Errorf("Message.Codec after Close: %q %#x", c, fp)
	}
	if n := sub.Len(); n != 0 {
		t.Errorf("Subscription.Len after Close: %d", n)
	}
	_, err = sub.Stats()
	closedErr("Subscription.Stats", err)
	closedErr("Subscription.Drain", sub.Drain(ctx))
	if err := sub.Close(); err != nil {
		t.Errorf("Subscription.Close after Close: %v", err)
	}
	if n := pub.Published(); n != 0 {
		t.Errorf("Publisher.Published after Close: %d, want 0", n)
	}
	if c, fp := pub.Codec(); c != "" || fp != 0 {
		t.Errorf("Publisher.Codec after Close: %q %#x", c, fp)
	}
	if got := pub.TypeName(); got != "" {
		t.Errorf("Publisher.TypeName after Close: %q", got)
	}
	closedErr("Publisher.ClaimCodec", pub.ClaimCodec("raw", 1, "T"))
	if err := pub.Close(); err != nil {
		t.Errorf("Publisher.Close after Close: %v", err)
	}
	_, err = b.Subscribers("gate.after")
	closedErr("Bus.Subscribers", err)
	_, err = b.ReclaimTopics()
	closedErr("Bus.ReclaimTopics", err)
	closedErr("Bus.RecordBridgeCounters", b.RecordBridgeCounters(BridgeCounters{}))
	_, err = b.Subscribe("gate.other")
	closedErr("Bus.Subscribe", err)
	_, err = b.Publisher("gate.other")
	closedErr("Bus.Publisher", err)
	_, err = ReplyAddress{b: b, to: 1, corr: 1}.Loan(8)
	closedErr("ReplyAddress.Loan", err)
	closedErr("ReplyLoan.Send", ReplyLoan{b: b}.Send(ctx))
	if err := (ReplyLoan{b: b}).Discard(); !errors.Is(err, ErrLoanEnded) {
		t.Errorf("ReplyLoan.Discard after Close: %v, want ErrLoanEnded", err)
	}
}
