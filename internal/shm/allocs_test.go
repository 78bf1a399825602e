package shm

import (
	"context"
	"errors"
	"runtime"
	"testing"
)

// The data path allocates nothing: publish (Alloc, AddRefs, Push, Unloan), receive (Pop,
// TryPop, Buffer) and release, including the wake-up of a sleeping consumer and the error
// paths a busy bus takes (full inbox, exhausted pool, bad handle).

func checkNoAllocs(t *testing.T, what string, f func()) {
	t.Helper()
	f() // warm up: first-use costs are not the data path's
	if n := testing.AllocsPerRun(1000, f); n != 0 {
		t.Errorf("%s: %v allocations per run, want 0", what, n)
	}
}

func TestNoAllocsPool(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	var b Buffer
	var err error
	checkNoAllocs(t, "Alloc+Unloan", func() {
		if b, err = p.alloc(64); err != nil {
			panic(err)
		}
		if err = p.unloan(b.Handle()); err != nil {
			panic(err)
		}
	})
	b, _ = p.alloc(64)
	h := b.Handle()
	defer p.unloan(h)
	checkNoAllocs(t, "AddRefs+Release", func() {
		if err := r.addRefsHandle(h, 3); err != nil {
			panic(err)
		}
		for range 3 {
			if err := r.release(h); err != nil {
				panic(err)
			}
		}
	})
	var sink int
	checkNoAllocs(t, "Buffer lookup", func() {
		bb, err := r.buffer(h)
		if err != nil {
			panic(err)
		}
		bb.SetMeta(Meta{Len: 8, Seq: 1})
		sink += len(bb.Data()) + bb.Len() + bb.Cap() + int(bb.Meta().Seq)
	})
	bad := makeHandle(h.class(), h.index()+1<<19, h.gen())
	checkNoAllocs(t, "rejected handles", func() {
		if _, err := r.buffer(bad); err == nil {
			panic("accepted")
		}
		if err := r.release(h + 1<<40); !errors.Is(err, ErrBadHandle) {
			panic(err)
		}
	})
	_ = sink
}

func TestNoAllocsInbox(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	in, err := p.OpenInbox(InboxConfig{Capacity: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	out, _ := r.inbox(in.ID())
	bg := context.Background()
	publish := func(out *Inbox) {
		b, err := p.alloc(64)
		if err != nil {
			panic(err)
		}
		h := b.Handle()
		b.SetMeta(Meta{Len: 8})
		if err := r.addRefsHandle(h, 1); err != nil {
			panic(err)
		}
		if err := out.pushHandle(bg, h); err != nil {
			panic(err)
		}
		if err := p.unloan(h); err != nil {
			panic(err)
		}
	}
	checkNoAllocs(t, "Push+TryPop+Release", func() {
		publish(&out)
		h, ok, err := in.tryPop()
		if err != nil || !ok {
			panic("empty")
		}
		if err := r.release(h); err != nil {
			panic(err)
		}
	})
	checkNoAllocs(t, "Pop(context.Background) of a waiting message", func() {
		publish(&out)
		h, err := in.pop(bg, Waiter{Strategy: Sleep})
		if err != nil {
			panic(err)
		}
		if err := r.release(h); err != nil {
			panic(err)
		}
	})
	checkNoAllocs(t, "Region.Inbox", func() {
		if _, err := r.inbox(in.ID()); err != nil {
			panic(err)
		}
	})

	// A full ring: DropOldest evicts and DropNewest refuses without allocating.
	for range in.Capacity() {
		publish(&out)
	}
	checkNoAllocs(t, "Push into a full DropOldest inbox", func() { publish(&out) })
	newest, err := p.OpenInbox(InboxConfig{Capacity: 2, Overflow: DropNewest})
	if err != nil {
		t.Fatal(err)
	}
	defer newest.close()
	publish(&newest)
	publish(&newest)
	b, _ := p.alloc(64)
	defer p.unloan(b.Handle())
	checkNoAllocs(t, "Push into a full DropNewest inbox", func() {
		if err := newest.pushHandle(bg, b.Handle()); !errors.Is(err, ErrFull) {
			panic(err)
		}
	})
}

// TestNoAllocsWake measures a producer's Push while the consumer sleeps (the path that bumps
// the wake word and calls FUTEX_WAKE). AllocsPerRun counts the whole process, so the sleeping
// consumer, which waits with context.Background and releases what it takes, must not allocate
// either.
func TestNoAllocsWake(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	in, err := p.OpenInbox(InboxConfig{Capacity: 8})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := r.inbox(in.ID())
	stopped := make(chan error, 1)
	go func() {
		for {
			h, err := in.pop(context.Background(), Waiter{Strategy: Sleep})
			if err != nil {
				stopped <- err
				return
			}
			if err := r.release(h); err != nil {
				stopped <- err
				return
			}
		}
	}()
	defer func() {
		in.close() // wakes the consumer with ErrClosed
		if err := <-stopped; !errors.Is(err, ErrClosed) {
			t.Errorf("consumer ended with %v", err)
		}
	}()
	hd := in.v.hdr
	b, _ := p.alloc(64)
	h := b.Handle()
	defer p.unloan(h)
	bg := context.Background()
	wakes := 0
	push := func() {
		// The consumer is announced asleep on the inbox's wake word before each push.
		for waiters(hd.sleepers.Load()) == 0 || hd.wake.Load() != bellAsleep {
			runtime.Gosched()
		}
		wake := bellWakes.Load()
		if err := r.addRefsHandle(h, 1); err != nil {
			panic(err)
		}
		if err := out.pushHandle(bg, h); err != nil {
			panic(err)
		}
		if bellWakes.Load() != wake {
			wakes++
		}
	}
	push()
	if n := testing.AllocsPerRun(200, push); n != 0 {
		t.Errorf("Push waking a sleeping consumer: %v allocations per run, want 0", n)
	}
	if wakes < 200 {
		t.Errorf("only %d of %d pushes took the wake-up path", wakes, 201)
	}
}
